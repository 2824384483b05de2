"""Classifying many files (predict_live.py --file): in partitions, each saved as it finishes so that a run that
stops can be resumed, in this process or on a Dask cluster (cluster.py).

    predictor = inference.Predictor(modeldir.load_model_dir("models/latest"))
    table, skipped = batch.classify_many(paths, predictor, "models/latest", output=Path("results.parquet"))

`table` has a row per classified file: path, label, windows, a probability per label, as
inference.classify_files gives them, and the model that made it (Predictor.identity). With an output file,
the rows of each partition go to `<output>.parts/` as it finishes; at the end they are merged into the output
with the rows it already had, and a second run with the same output skips every file already in either. One
run at a time writes an output (a lock beside it), and only the model that wrote it may add to it.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from tqdm import tqdm

import inference
from fileio import atomic_output

PARTITION_FILES = 50  # files per task: enough to hide a task's overhead, few enough to spread over workers
OUTPUT_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}  # by suffix, in any case


class ResultsFileError(Exception):
    """An --output file that exists but is not a results table of this model, or that another run is writing."""


class Interrupted(Exception):
    """Ctrl-C during classify_many: what was saved, and where."""

    def __init__(self, saved: int, total: int, output: Path | None):
        where = f"saved to {output}; run again to resume" if output else "classified; nothing saved without --output"
        super().__init__(f"interrupted: {saved} of {total} files {where}")


def output_format(path: str | Path) -> str | None:
    """The results format a file's suffix names, whatever its case: "csv", "json" or "parquet"; None for others."""
    return OUTPUT_FORMATS.get(Path(path).suffix.lower())


def results_table(results: list[dict], labels: list[str]) -> pd.DataFrame:
    """Results (inference.classify_files records with their "model") as a table: path, label, windows, a
    probability column per label, and model."""
    return pd.DataFrame({"path": [r["path"] for r in results], "label": [r["label"] for r in results],
                         "windows": np.array([r["windows"] for r in results], dtype=np.int64),
                         **{c: [r["probabilities"][c] for r in results] for c in labels},
                         "model": [r.get("model") for r in results]})


# ---------------------------------------------------------------------------------------------
# On a worker: one model per process


@functools.lru_cache(maxsize=2)
def _process_predictor(model_dir: str, exported: str | None, encoder_dir: str | None) -> inference.Predictor:
    import modeldir
    saved = modeldir.load_model_dir(model_dir, encoder_dir)
    predictor = inference.Predictor(saved, Path(exported) if exported else None)
    # A worker may run several partitions at once on its threads; LiteRT's interpreter is not safe to share,
    # and Keras builds its predict function on the first call.
    run, lock = predictor.run, threading.Lock()

    def locked(X):
        with lock:
            return run(X)

    predictor.run = locked
    return predictor


_LOADING = threading.Lock()


def classify_partition(model_dir: str, exported: str | None, encoder_dir: str | None,
                       paths: list[str]) -> tuple[pd.DataFrame, list]:
    """(results_table, skips as (path, reason)) of files, by the model in model_dir (or its exported file), with
    its pretrained encoder in encoder_dir if it has one (None: where it was made), which each process loads once."""
    with _LOADING:
        predictor = _process_predictor(model_dir, exported, encoder_dir)
    return classified(paths, predictor)


def classified(paths: list[str], predictor: inference.Predictor) -> tuple[pd.DataFrame, list]:
    """(results_table, skips as (path, reason)) of files, by a predictor (inference.classify_files)."""
    results, skipped = inference.classify_files([Path(p) for p in paths], predictor)
    return results_table([{**r, "model": predictor.identity} for r in results], predictor.labels), skipped


# ---------------------------------------------------------------------------------------------
# Results files


def read_results(path: Path, labels: list[str], model: str) -> pd.DataFrame:
    """The usable rows (usable_rows) of a results file written by write_results, or one of its parts, as a
    results_table. Raises ResultsFileError if it is not a results file, or another model's."""
    try:
        if output_format(path) == "json":
            table = results_table(json.loads(path.read_text()), labels)  # the records are classify_files'
        else:
            table = pd.read_parquet(path) if output_format(path) == "parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any reader's failure means the same thing here
        raise ResultsFileError(f"{path} exists but is not a results file ({type(e).__name__}: {e}); "
                               f"move it away or choose another --output") from None
    expected = ["path", "label", "windows", *labels, "model"]
    if list(table.columns) != expected:
        raise ResultsFileError(f"{path} exists but its columns are not this model's ({', '.join(expected)}); "
                               f"move it away or choose another --output")
    others = sorted(set(table["model"].dropna().astype(str)) - {model})
    if others:
        raise ResultsFileError(f"{path.name} was written by another model ({', '.join(others)}, not {model}); "
                               f"pass a new --output")
    return usable_rows(table, labels)


def usable_rows(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The rows of a results_table that are whole: a known label, at least one window, finite probabilities and a
    model. Others (a row cut off by a crash, a damaged file) count as not done, and are classified again."""
    whole = (table["label"].isin(labels) & (pd.to_numeric(table["windows"], errors="coerce") >= 1)
             & np.isfinite(table[labels].apply(pd.to_numeric, errors="coerce")).all(axis=1) & table["model"].notna())
    return table[whole].astype({"windows": np.int64}).reset_index(drop=True)


def write_results(table: pd.DataFrame, path: Path, labels: list[str]) -> None:
    """A results_table as .csv (probabilities to 4 decimals), .parquet, or .json (a record per file with a
    "probabilities" mapping), as output_format says, written atomically."""
    with atomic_output(path) as tmp:
        if output_format(path) == "parquet":
            table.to_parquet(tmp, index=False)
        elif output_format(path) == "json":
            records = [{"path": r["path"], "label": r["label"], "probabilities": {c: float(r[c]) for c in labels},
                        "windows": int(r["windows"]), "model": r["model"]} for r in table.to_dict("records")]
            tmp.write_text(json.dumps(records, indent=2))
        else:
            table.to_csv(tmp, index=False, float_format="%.4f")


def parts_folder(output: Path) -> Path:
    """Where the partitions of a run writing `output` are kept until they are merged into it."""
    return output.with_name(output.name + ".parts")


def finished_rows(output: Path, labels: list[str], model: str) -> pd.DataFrame:
    """The usable rows already in output and in its parts folder (a run that stopped before merging)."""
    parts = parts_folder(output)
    files = ([output] if output.exists() else []) + (sorted(parts.glob("*.parquet")) if parts.is_dir() else [])
    tables = [read_results(f, labels, model) for f in files]
    return (pd.concat(tables, ignore_index=True).drop_duplicates("path") if tables
            else results_table([], labels))


def write_part(output: Path, table: pd.DataFrame) -> None:
    """A finished partition's rows, saved in parts_folder(output) until the run merges them into output."""
    folder = parts_folder(output)
    folder.mkdir(exist_ok=True)
    with atomic_output(folder / f"{time.time_ns()}-{os.getpid()}.parquet") as tmp:
        table.to_parquet(tmp, index=False)


# ---------------------------------------------------------------------------------------------
# The job


def classify_many(paths: list[Path], predictor: inference.Predictor, model_dir: str | Path,
                  exported: Path | None = None, output: Path | None = None,
                  client=None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(results_table of paths, one row per file in their order, and (path, reason) of the files skipped).

    predictor: the model of model_dir (run by its exported file, if given), which classifies in this process
    when client is None; with a distributed.Client the partitions run on its workers, which load model_dir
    themselves, once per process, and read the files at their absolute paths. With an output file, files
    already in it (or in its parts) are not classified again, and every row, old and new, ends up in it;
    a second run on the same output at the same time is refused (ResultsFileError). Ctrl-C saves what is
    done and raises Interrupted. A bar on a terminal's stderr counts files done.
    """
    if output is None:
        return _classify_many(paths, predictor, model_dir, exported, None, client)
    try:
        with FileLock(output.with_name(output.name + ".lock"), timeout=0):
            return _classify_many(paths, predictor, model_dir, exported, output, client)
    except Timeout:
        raise ResultsFileError(f"another run is writing {output}; let it finish, or pass another --output") from None


def _classify_many(paths, predictor, model_dir, exported, output, client):
    absolute = {}  # one row per file, however many ways it was named
    for path in paths:
        absolute.setdefault(os.path.abspath(path), str(path))
    named = {name: a for a, name in absolute.items()}
    labels = predictor.labels
    done = finished_rows(output, labels, predictor.identity) if output else results_table([], labels)
    already = set(done["path"])
    todo = [name for name in named if name not in already]
    groups = [[named[n] for n in todo[i:i + PARTITION_FILES]] for i in range(0, len(todo), PARTITION_FILES)]
    if client is None:
        finished = (classified(group, predictor) for group in groups)
    else:
        import cluster  # Dask, only for a cluster
        model_path = os.path.abspath(model_dir)
        exported_path = os.path.abspath(exported) if exported else None
        cluster.check_readable(client, [model_path, *([exported_path] if exported_path else []),
                                        *sorted({os.path.dirname(a) for g in groups for a in g})])
        finished = cluster.results_as_completed(client, "batch.classify_partition",
                                                [(model_path, exported_path, predictor.config.encoder_dir, g)
                                                 for g in groups])
    tables, skipped, interrupted = [done], [], False
    with tqdm(total=len(todo), unit="file", desc="classifying", disable=None) as bar:
        try:
            for table, skips in finished:
                table["path"] = table["path"].map(absolute)
                if output:
                    write_part(output, table)
                tables.append(table)
                skipped += [(absolute[p], reason) for p, reason in skips]
                bar.update(len(table) + len(skips))
        except KeyboardInterrupt:
            interrupted = True
    order = {name: i for i, name in enumerate(named)}
    # Rows of files outside this run first, as they were; then this run's files in the order given.
    every = pd.concat(tables, ignore_index=True)
    every = every.iloc[np.argsort(every["path"].map(order).fillna(-1).to_numpy(), kind="stable")]
    if output:
        write_results(every, output, labels)
        shutil.rmtree(parts_folder(output), ignore_errors=True)
    mine = every[every["path"].isin(order)].reset_index(drop=True)
    if interrupted:
        raise Interrupted(len(mine), len(named), output)
    return mine, sorted(skipped, key=lambda s: order[s[0]])
