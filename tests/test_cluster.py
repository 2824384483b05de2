"""Cross-validation and batch classification on a real Dask cluster: a scheduler and two workers started by
their command-line tools on 127.0.0.1, in a folder without the project's code, which they get from the client."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batch
import cluster
import config
import corpora
from config import EMOTIONS
from conftest import run_script

DASK = Path(sys.executable).parent / "dask"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a scheduler with two one-thread workers (each under a nanny, which restarts it if it
    dies), started as a user would, and stopped afterwards."""
    folder = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    log = open(folder / "cluster.log", "w")
    common = dict(cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                   "--no-dashboard"], **common)]
    processes += [subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}",
                                    "--local-directory", str(folder / f"w{i}")], **common) for i in range(2)]
    try:
        client = cluster.connect(address, timeout=60)
        client.wait_for_workers(2, timeout=60)
        client.close()
        yield address
    finally:
        for p in processes[::-1]:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_workers_get_the_code_and_a_share_of_the_threads(scheduler):
    def seen_by_worker():
        from threadpoolctl import threadpool_info

        import cache
        return (cache.__file__, config.extraction_threads(), os.environ["TF_NUM_INTRAOP_THREADS"],
                sorted({pool["num_threads"] for pool in threadpool_info()}))

    client = cluster.connect(scheduler)
    try:
        seen = client.run(seen_by_worker)
    finally:
        client.close()
    assert len(seen) == 2
    for module, threads, tf_threads, blas in seen.values():
        assert "speech-emotion-project.zip" in module  # shipped by the client, not found beside the worker
        assert threads == 1 and tf_threads == "1" and blas in ([], [1])


def test_cross_validation_on_a_cluster_matches_in_process(scheduler, sparse_corpus, tmp_path):
    options = ["--data-dir", sparse_corpus, "--cache-dir", tmp_path / "cache", "--epochs", "1", "--seeds", "0", "1"]
    here = run_script("evaluate_speakers.py", *options, "--out", tmp_path / "here")
    there = run_script("evaluate_speakers.py", *options, "--out", tmp_path / "there", "--scheduler", scheduler)
    assert here.returncode == 0 and there.returncode == 0, there.stderr
    assert there.stderr == ""
    a, b = (json.loads((tmp_path / side / "cv.json").read_text()) for side in ("here", "there"))
    assert a.keys() == b.keys() and a["seeds"] == b["seeds"] == [0, 1]
    identity = ["fold", "seed", "actors", "val_speakers", "n"]
    assert [{k: f[k] for k in identity} for f in a["folds"]] == [{k: f[k] for k in identity} for f in b["folds"]]
    assert len(b["folds"]) == 10 and [len(s) for s in (a["per_seed"], b["per_seed"])] == [2, 2]
    assert np.sum(b["confusion_matrix"]) == np.sum(a["confusion_matrix"]) == 2 * 20 * 6
    assert b["accuracy_mean"] == pytest.approx(np.mean([f["accuracy"] for f in b["folds"]]))


def test_batch_on_a_cluster_equals_in_process(scheduler, brief_model, datasets, tmp_path):
    model_dir = brief_model[0]
    inputs = [datasets / "tess" / "YAF_happy", datasets / "ravdess" / "Actor_05"]
    tables = {}
    for side, extra in [("here", []), ("there", ["--scheduler", scheduler])]:
        out = tmp_path / f"{side}.parquet"
        result = run_script("predict_live.py", "--model-dir", model_dir, "--file", *inputs, "--output", out, *extra)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        tables[side] = pd.read_parquet(out)
        assert not batch.parts_folder(out).exists()
    here, there = tables["here"], tables["there"]
    assert len(here) == 200 + 60
    assert here["path"].tolist() == there["path"].tolist()
    assert (here["label"] == there["label"]).all() and (here["windows"] == there["windows"]).all()
    np.testing.assert_allclose(there[list(EMOTIONS)], here[list(EMOTIONS)], atol=1e-5)


def test_a_worker_killed_mid_run_loses_no_file_and_doubles_none(scheduler, full_model, datasets, tmp_path):
    inputs = [datasets / "tess" / name for name in ("OAF_angry", "OAF_sad", "YAF_fear", "YAF_neutral")]
    expected = {str(p) for folder in inputs for p in corpora.audio_files(folder)}
    out = tmp_path / "results.csv"
    job = subprocess.Popen([sys.executable, "predict_live.py", "--model-dir", full_model[0], "--file", *inputs,
                            "--output", out, "--scheduler", scheduler], cwd=Path(__file__).parents[1],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = cluster.connect(scheduler)
    try:
        # Once a partition is saved, kill a worker in the middle of another.
        deadline = time.monotonic() + 300
        while not list(batch.parts_folder(out).glob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.2)
        busy = [w for w, tasks in client.processing().items() if tasks]
        assert busy, "no partition left running to interrupt"
        os.kill(client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
        stdout, stderr = job.communicate(timeout=600)
    finally:
        job.kill()
        client.close()
    assert job.returncode == 0, stderr
    table = pd.read_csv(out)
    assert len(table) == len(expected) == 800 and set(table["path"]) == expected


def test_a_second_run_classifies_only_what_is_missing(brief_model, datasets, tmp_path):
    model_dir = brief_model[0]
    first, second = datasets / "tess" / "OAF_sad", datasets / "tess" / "YAF_sad"
    out = tmp_path / "results.csv"
    assert run_script("predict_live.py", "--model-dir", model_dir, "--file", first, "--output", out).returncode == 0
    table = pd.read_csv(out)
    table.loc[0, "windows"] = 99  # a whole row that classification would not write for a 2 s clip
    table.to_csv(out, index=False)
    # A run stopped after one partition of the second folder: its part is kept, and counts as done.
    batch.write_part(out, table.iloc[[1]].assign(path=str(corpora.audio_files(second)[0]), windows=99))
    result = run_script("predict_live.py", "--model-dir", model_dir, "--file", first, second, "--output", out)
    assert result.returncode == 0, result.stderr
    merged = pd.read_csv(out)
    assert merged["path"].tolist() == [str(p) for p in corpora.audio_files(first) + corpora.audio_files(second)]
    assert (merged["windows"] == 99).sum() == 2  # neither done file was classified again
    assert not batch.parts_folder(out).exists()


def test_a_results_file_of_something_else_is_one_line(brief_model, datasets, tmp_path):
    out = tmp_path / "results.csv"
    out.write_text("name,score\na,1\n")
    result = run_script("predict_live.py", "--model-dir", brief_model[0], "--file", datasets / "tess" / "OAF_sad",
                        "--output", out)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {out} exists but its columns are not this model's (path, label, windows, {', '.join(EMOTIONS)}, "
        f"model); move it away or choose another --output"]
    assert out.read_text() == "name,score\na,1\n"


def test_a_scheduler_that_does_not_answer_is_one_line(brief_model, datasets, sparse_corpus, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    clips = datasets / "tess" / "OAF_sad"
    for script, options in [("predict_live.py", ["--model-dir", brief_model[0], "--file", clips]),
                            ("evaluate_speakers.py", ["--data-dir", sparse_corpus, "--out", tmp_path / "cv"])]:
        start = time.monotonic()
        result = run_script(script, *options, "--scheduler", address, "--scheduler-timeout", "2")
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            f"error: no Dask scheduler answered at {address} within 2 s (--scheduler-timeout)"]
        assert time.monotonic() - start < 60


def test_a_data_dir_the_workers_cannot_read_is_one_line(scheduler, tmp_path):
    missing = tmp_path / "not-shared"
    result = run_script("evaluate_speakers.py", "--data-dir", missing, "--out", tmp_path / "cv", "--scheduler",
                        scheduler)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: worker tcp://127.0.0.1:") and line.endswith(
        f"cannot read {missing}; the workers must see the data at the same path as this machine (shared storage)")


@pytest.mark.parametrize("text", ["local:0", "local:two", "nowhere"])
def test_a_bad_scheduler_option_is_an_argument_error(text):
    result = run_script("evaluate_speakers.py", "--scheduler", text)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --scheduler:" in result.stderr.strip().splitlines()[-1]


def test_results_files_read_back_in_every_format_whatever_the_suffix_case(tmp_path):
    labels = list(EMOTIONS)
    rows = [{"path": f"clip{i}.wav", "label": labels[i], "windows": i + 1, "model": "abc123",
             "probabilities": dict(zip(labels, np.roll(np.linspace(0.01, 0.3, 8), i), strict=True))} for i in range(3)]
    table = batch.results_table(rows, labels)
    for name, starts in [("results.CSV", b"path,label,windows,"), ("results.Json", b"["), ("results.PARQUET", b"PAR1")]:
        path = tmp_path / name
        batch.write_results(table, path, labels)
        assert path.read_bytes().startswith(starts)  # the format its suffix names, in any case
        back = batch.read_results(path, labels, "abc123")
        assert back[["path", "label", "windows", "model"]].equals(table[["path", "label", "windows", "model"]])
        assert back["windows"].dtype == np.int64
        np.testing.assert_allclose(back[labels], table[labels], atol=5e-5 if name.endswith("CSV") else 0)
    assert "\nclip0.wav,neutral,1,0." in (tmp_path / "results.CSV").read_text()  # windows: a whole number
    with pytest.raises(batch.ResultsFileError, match="columns are not this model's"):
        batch.read_results(tmp_path / "results.CSV", labels[:7], "abc123")
    with pytest.raises(batch.ResultsFileError, match=r"^results.Json was written by another model \(abc123, not "
                                                     r"def456\); pass a new --output$"):
        batch.read_results(tmp_path / "results.Json", labels, "def456")
