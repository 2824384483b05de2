"""What a hostile new user tries: files that are not files, clips too short to hear, results files that two runs,
two models or a crash share, broken model folders, two trainings into one folder, Ctrl-C. Each ends in a correct
result or a one-line error; nothing hangs, and no row, file or model is lost."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import augment
import batch
import corpora
import features
import inference
import model as models
import modeldir
import predict_live
import test_model
from config import RECIPES, FeatureConfig
from conftest import ROOT, run_script

TIMEOUT = 300  # seconds: a script that blocks on a FIFO fails the test instead of hanging the suite


def hostile_corpus(datasets, target):
    """Four RAVDESS actors, and an Actor_99 folder holding a FIFO and a one-sample clip named like RAVDESS clips."""
    (target / "Actor_99").mkdir(parents=True)
    for actor in (1, 2, 3, 4):
        (target / f"Actor_{actor:02d}").symlink_to(datasets / "ravdess" / f"Actor_{actor:02d}")
    os.mkfifo(target / "Actor_99" / "03-01-08-01-01-01-99.wav")
    sf.write(target / "Actor_99" / "03-01-02-01-01-01-99.wav", [0.5], 22050)
    return target


def test_a_fifo_is_never_opened_when_indexing(datasets, tmp_path):
    corpus = hostile_corpus(datasets, tmp_path / "corpus")
    clips, summary = corpora.index_corpus(corpus)  # would block for ever in the hash of the FIFO's bytes
    assert summary.excluded == {corpora.NOT_REGULAR: 1} and "left out 1 not a regular file" in summary.lines()
    assert "03-01-08-01-01-01-99.wav" not in " ".join(clips["relpath"])


@pytest.mark.slow
def test_training_skips_a_fifo_and_a_one_sample_clip_by_name(datasets, tmp_path):
    """The default recipe, corrupted copies included: the FIFO is left out, the short clip skipped, both named."""
    corpus = hostile_corpus(datasets, tmp_path / "corpus")
    result = run_script("train_model.py", "--data-dir", corpus, "--model-dir", tmp_path / "m", "--epochs", "1",
                        "--cache-dir", tmp_path / "cache", "--split", "speaker", "--test-speakers", "4",
                        timeout=TIMEOUT)  # with the default's corrupted copies: the short clip meets no corruption
    assert result.returncode == 0, result.stderr
    assert "left out 1 not a regular file" in result.stdout
    assert "skipped 1 clips (1 too short): 03-01-02-01-01-01-99.wav" in result.stdout


def test_prediction_skips_a_fifo_and_a_too_short_clip(brief_model, tmp_path):
    os.mkfifo(tmp_path / "f.wav")
    sf.write(tmp_path / "short.wav", [0.5], 22050)
    sf.write(tmp_path / "just.wav", np.zeros(FeatureConfig().min_samples - 1, np.float32) + 0.1, 22050)
    result = run_script("predict_live.py", "--model-dir", brief_model[0], "--file", tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-3:] == [f"skipped {tmp_path / 'f.wav'}: not a regular file",
                                                       f"skipped {tmp_path / 'just.wav'}: too short",
                                                       f"skipped {tmp_path / 'short.wav'}: too short"]


@pytest.mark.parametrize("condition", augment.CONDITIONS)
def test_no_corruption_fails_on_the_shortest_clip_a_model_takes(condition, datasets):
    config = FeatureConfig()
    y = features.load_audio(datasets / "ravdess/Actor_01/03-01-05-02-01-01-01.flac", config.sample_rate)
    shortest = y[len(y) // 2:len(y) // 2 + config.min_samples]
    talkers = [shortest] * augment.BABBLE_TALKERS
    out = augment.corrupt(shortest, config.sample_rate, condition, np.random.default_rng(0), talkers)
    assert out.shape == shortest.shape and np.isfinite(out).all()


@pytest.mark.slow  # it simulates the training rooms
def test_no_training_copy_fails_on_the_shortest_clip_a_model_takes(datasets):
    config = FeatureConfig()
    y = features.load_audio(datasets / "ravdess/Actor_01/03-01-05-02-01-01-01.flac", config.sample_rate)
    shortest = y[len(y) // 2:len(y) // 2 + config.min_samples]
    for seed in range(40):  # every kind the training copies draw
        copy = augment.training_corruption(shortest, config.sample_rate, np.random.default_rng(seed),
                                           [shortest] * augment.BABBLE_TALKERS)
        assert copy.shape == shortest.shape and np.isfinite(copy).all()


def copy_model(brief_model, target):
    shutil.copytree(brief_model[0], target)
    return target


@pytest.mark.slow
def test_two_writers_on_one_output_lose_no_row(brief_model, datasets, tmp_path):
    """Two real processes on one --output at once: while one writes, the other is refused in one line; run again,
    it adds its files. Every file either run was given ends up in the output, once."""
    out, lock = tmp_path / "o.csv", tmp_path / "o.csv.lock"
    first = [datasets / "tess"]  # 2,800 files: still running when the second has loaded its model
    second = [datasets / "ravdess" / f"Actor_0{a}" for a in (3, 4, 5)]
    one = subprocess.Popen([sys.executable, "predict_live.py", "--model-dir", str(brief_model[0]), "--output", str(out),
                            "--file", *map(str, first)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while not lock.exists() and one.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    other = run_script("predict_live.py", "--model-dir", brief_model[0], "--output", out, "--file", *second,
                       timeout=TIMEOUT)
    _, stderr = one.communicate(timeout=TIMEOUT)
    assert one.returncode == 0, stderr
    if other.returncode != 0:  # it came while the first wrote: refused before any work, and run again after
        assert other.stderr.strip().splitlines() == [
            f"error: another run is writing {out}; let it finish, or pass another --output"]
        assert len(pd.read_csv(out)) == 2800
        other = run_script("predict_live.py", "--model-dir", brief_model[0], "--output", out, "--file", *second,
                           timeout=TIMEOUT)
    assert other.returncode == 0, other.stderr
    table = pd.read_csv(out)
    assert len(table) == 2800 + 180 and table["path"].is_unique


def test_a_damaged_results_file_is_resumed_without_its_broken_row(brief_model, datasets, tmp_path):
    predictor = inference.Predictor(modeldir.load_model_dir(brief_model[0]))
    paths = corpora.audio_files(datasets / "tess" / "OAF_sad")[:6]
    out = tmp_path / "o.csv"
    first, _ = batch.classify_many(paths, predictor, brief_model[0], output=out)
    text = out.read_text()
    out.write_text(text[:text.rindex("\n", 0, len(text) - 1) + 30])  # cut in the middle of the last row
    assert pd.read_csv(out)[predictor.labels].isna().any(axis=None)
    again, _ = batch.classify_many(paths, predictor, brief_model[0], output=out)
    table = pd.read_csv(out)
    assert len(table) == 6 and np.isfinite(table[predictor.labels].to_numpy()).all()
    np.testing.assert_allclose(table[predictor.labels], first[predictor.labels], atol=1e-4)
    assert table["windows"].dtype == np.int64 and (table["model"] == predictor.identity).all()


def test_an_output_of_another_model_is_refused(brief_model, datasets, tmp_path):
    other = copy_model(brief_model, tmp_path / "other")
    meta = json.loads((other / "metadata.json").read_text())
    (other / "metadata.json").write_text(json.dumps({**meta, "created": "another day"}))
    files, out = datasets / "tess" / "OAF_sad", tmp_path / "o.csv"
    assert run_script("predict_live.py", "--model-dir", brief_model[0], "--file", files, "--output", out,
                      timeout=TIMEOUT).returncode == 0
    before = out.read_bytes()
    result = run_script("predict_live.py", "--model-dir", other, "--file", files, "--output", out, timeout=TIMEOUT)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: o.csv was written by another model (") and line.endswith("; pass a new --output")
    assert out.read_bytes() == before


@pytest.mark.parametrize("labels, problem", [(["happy"] * 8, "labels repeat"),
                                             ("ABCDEFGH", "labels must be a list of emotion names"),
                                             (["happy", "bored"], "labels ['bored'] are not among the emotions")])
def test_model_dir_labels_are_validated_on_load(brief_model, tmp_path, labels, problem):
    broken = copy_model(brief_model, tmp_path / "m")
    meta = json.loads((broken / "metadata.json").read_text())
    (broken / "metadata.json").write_text(json.dumps({**meta, "labels": labels}))
    with pytest.raises(modeldir.ModelDirError, match=re.escape(f"metadata.json is broken (ValueError: {problem}")):
        modeldir.load_model_dir(broken)


def test_a_model_dir_made_while_training_ran_keeps_both_models(tmp_path):
    """What a second training into the same new --model-dir meets when it saves: the first one's model stays, and
    this one is kept beside it under a printed name."""
    recipe = RECIPES["pooled"]
    model = models.compiled(models.build(recipe, recipe.features.shape, 8))
    first = modeldir.save_model_dir(tmp_path / "m", model, {"run": 1})
    with pytest.raises(modeldir.ModelDirTaken) as taken:
        modeldir.save_model_dir(tmp_path / "m", model, {"run": 2})
    assert str(taken.value) == (f"{first} was saved by another run while this one trained; this model is kept as "
                                f"{tmp_path / 'm-2'}")
    assert json.loads((first / "metadata.json").read_text()) == {"run": 1}
    assert json.loads((tmp_path / "m-2" / "metadata.json").read_text()) == {"run": 2}
    # A save killed half-way leaves a hidden folder; the next save removes it once its process is gone.
    stale = tmp_path / ".m.partial-99999999"
    (stale / "model.keras").parent.mkdir()
    (tmp_path / ".m.partial-1").mkdir()  # pid 1 is alive: its folder stays
    modeldir.save_model_dir(tmp_path / "m", model, {"run": 3}, overwrite=True)
    assert not stale.exists() and (tmp_path / ".m.partial-1").exists()


@pytest.mark.slow
def test_two_trainings_into_one_new_model_dir_lose_no_model(small_corpus, brief_model, tmp_path):
    command = [sys.executable, "train_model.py", "--data-dir", str(small_corpus), "--model-dir", str(tmp_path / "m"),
               "--epochs", "1", "--copies", "0", "--cache-dir", str(brief_model[1])]  # its features are cached
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL) for _ in range(2)]
    results = [(run.wait(timeout=TIMEOUT), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 1]
    (line,) = [err for code, err in results if code == 1][0].strip().splitlines()
    taken = (f"error: {tmp_path / 'm'} was saved by another run while this one trained; this model is kept as "
             f"{tmp_path / 'm-2'}")
    assert line in (taken, f"error: {tmp_path / 'm'} already exists; pass --overwrite to replace it")
    if line == taken:  # both trained at once: the second to save kept its model beside the first's
        assert modeldir.load_model_dir(tmp_path / "m-2").labels
    assert modeldir.load_model_dir(tmp_path / "m").labels


def test_a_damaged_model_file_says_so(brief_model, tmp_path):
    broken = copy_model(brief_model, tmp_path / "m")
    data = (broken / "model.keras").read_bytes()
    (broken / "model.keras").write_bytes(data[:len(data) // 2])
    result = run_script("test_model.py", "--model-dir", broken, timeout=TIMEOUT)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: cannot load {broken / 'model.keras'}: it is damaged or cut short (not a whole Keras file); train it "
        f"again or copy it anew"]


def test_a_missing_file_fails_before_the_model_loads(tmp_path):
    result = run_script("predict_live.py", "--model-dir", tmp_path / "no-model", "--file", tmp_path / "missing.wav")
    assert result.returncode == 1  # the file, not the missing model, is named: nothing was loaded first
    assert result.stderr.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'missing.wav'}"]


def test_ctrl_c_saves_what_is_done_and_says_how_to_resume(brief_model, datasets, tmp_path):
    out = tmp_path / "o.parquet"
    job = subprocess.Popen([sys.executable, "predict_live.py", "--model-dir", str(brief_model[0]), "--file",
                            str(datasets / "tess"), "--output", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                           # A shell without job control starts background jobs with SIGINT ignored, and children
                           # inherit that: give this one the Ctrl-C a user's terminal gives.
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parts = batch.parts_folder(out)
    deadline = time.monotonic() + TIMEOUT
    while not (parts.is_dir() and any(parts.iterdir())) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=TIMEOUT)
    assert job.returncode == 130 and "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    saved = len(pd.read_parquet(out))
    assert line == f"interrupted: {saved} of 2800 files saved to {out}; run again to resume"
    assert 50 <= saved < 2800 and not parts.exists()


def test_list_devices_says_when_there_is_no_input(monkeypatch, capsys):
    class NoDevices:  # what sounddevice reports on a machine without audio hardware or server
        @staticmethod
        def query_devices():
            return []

    monkeypatch.setattr(predict_live, "import_sounddevice", lambda: NoDevices)
    predict_live.main(["--list-devices"])
    assert capsys.readouterr().out == "no input devices\n"


def test_test_model_names_what_it_skipped_in_another_folder(brief_model, datasets, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    clip = datasets / "ravdess/Actor_01/03-01-05-01-01-01-01.flac"
    (tmp_path / "mine" / clip.name).symlink_to(clip)
    (tmp_path / "mine" / "holiday.wav").symlink_to(clip.with_name("03-01-05-01-01-02-01.flac"))
    test_model.main(["--model-dir", str(brief_model[0]), "--data-dir", str(tmp_path / "mine"), "--out",
                     str(tmp_path / "out"), "--cache-dir", str(brief_model[1])])
    assert "skipped 1 audio files whose names match no corpus and whose folders name no emotion" in (
        capsys.readouterr().out)


@pytest.mark.slow
def test_a_long_file_is_read_in_blocks_and_heard_as_if_decoded_whole(datasets, tmp_path):
    config = RECIPES["pooled"].features
    actor = datasets / "ravdess" / "Actor_01"
    clips = [features.load_audio(actor / f"03-01-0{e}-01-01-01-01.flac", 16000) for e in range(1, 9)]
    speech = np.concatenate([np.concatenate([c, np.zeros(16000, np.float32)]) for c in clips])  # 37 s
    sf.write(tmp_path / "minute.wav", np.tile(speech, 3), 16000)
    whole = inference.file_windows(features.load_audio(tmp_path / "minute.wav", config.sample_rate), config)
    blocks = inference.long_file_windows(tmp_path / "minute.wav", config)
    assert blocks.shape == whole.shape == (71, *config.shape)
    standardised = features.standardise_per_clip
    assert np.abs(standardised(blocks) - standardised(whole)).mean() < 0.01
    # Twenty minutes: decoded whole at the model's rate it would take 106 MB; read in blocks, far less.
    sf.write(tmp_path / "long.wav", np.tile(speech, 33), 16000, subtype="PCM_16")
    tracemalloc.start()
    try:
        windows = inference.audio_windows(tmp_path / "long.wav", config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(windows) > 800 and peak < 0.5 * 33 * len(speech) / 16000 * config.sample_rate * 4
