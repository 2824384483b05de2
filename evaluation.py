"""Evaluation: accuracy, macro-F1 and unweighted average recall, reports, confusion plots, and the two
protocols that choose recipes: cross-validation by RAVDESS actor and leaving one corpus out.

    ev = evaluation.evaluate(probabilities, clips, labels)             # every figure of evaluation.json
    print(evaluation.report_text(ev))
    result = evaluation.cross_validate(X, clips, recipe, FOLDS)         # the 5 folds of published work
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, recall_score  # noqa: E402

import cache  # noqa: E402
import corpora  # noqa: E402
import features  # noqa: E402
import training  # noqa: E402
from config import DEFAULT_TEST_SPEAKERS, EMOTIONS, Recipe  # noqa: E402
from fileio import atomic_output, write_json  # noqa: E402

# The folds of published RAVDESS work, by actor, over all 24.
FOLDS = [(2, 5, 14, 15, 16), (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22)]
# The folds that choose recipes: actors 1-20 only, two men (odd) and two women (even) each, so that the
# speaker-split test actors 21-24 (config.DEFAULT_TEST_SPEAKERS) stay out of every choice.
SELECTION_FOLDS = [(1, 2, 11, 12), (3, 4, 13, 14), (5, 6, 15, 16), (7, 8, 17, 18), (9, 10, 19, 20)]
FOLD_SETS = {"selection": SELECTION_FOLDS, "published": FOLDS}


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """accuracy, macro_f1 and uar (unweighted average recall) of integer labels, and n.

    Macro-F1 and UAR average over the classes present in y_true, so a corpus without calm
    is not charged for it.
    """
    present = np.unique(y_true)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "n": int(len(y_true)),
    }


def restricted_argmax(probabilities: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The most probable class (n,) of probabilities (n, classes) among the class indices `allowed` only."""
    columns = np.isin(np.arange(probabilities.shape[1]), allowed)
    return np.where(columns, probabilities, -np.inf).argmax(axis=1)


def scores_of(probabilities: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict:
    """scores() of the most probable class, and, where y_true has fewer emotions than the model knows,
    "shared_emotions": the scores when the prediction may only be one of the emotions in y_true (the
    usual cross-corpus protocol), with those emotions' names."""
    result = scores(y_true, probabilities.argmax(axis=1))
    present = np.unique(y_true)
    if len(present) < len(labels):
        result["shared_emotions"] = {**scores(y_true, restricted_argmax(probabilities, present)),
                                     "labels": [labels[i] for i in present]}
    return result


def evaluate(probabilities: np.ndarray, clips: pd.DataFrame, labels: list[str]) -> dict:
    """Every figure of evaluation.json for class probabilities (n, classes) of the clips' index rows."""
    y_true = training.labels_of(clips, labels)
    y_pred = probabilities.argmax(axis=1)
    report = classification_report(y_true, y_pred, labels=range(len(labels)), target_names=labels,
                                   output_dict=True, zero_division=0)
    corpora = clips["corpus"].to_numpy()
    return {
        **scores_of(probabilities, y_true, labels),
        "per_class": {name: report[name] for name in labels},
        "per_corpus": {c: scores_of(probabilities[corpora == c], y_true[corpora == c], labels)
                       for c in sorted(set(corpora))},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=range(len(labels))).tolist(),
        "labels": list(labels),
    }


def report_text(evaluation: dict) -> str:
    """The figures as a terminal report. "own emotions": accuracy and UAR with the prediction restricted to the
    emotions that those clips have, where they have fewer than the model knows."""
    lines = [f"{'':10} {'n':>5} {'accuracy':>9} {'macro-F1':>9} {'UAR':>6}   own emotions: accuracy, UAR"]
    rows = [("all", evaluation)] + list(evaluation["per_corpus"].items())
    for name, s in rows:
        shared = s.get("shared_emotions")
        own = f"   {shared['accuracy']:9.3f} {shared['uar']:6.3f} ({len(shared['labels'])})" if shared else ""
        lines.append(f"{name:10} {s['n']:5d} {s['accuracy']:9.3f} {s['macro_f1']:9.3f} {s['uar']:6.3f}{own}")
    lines += ["", f"{'':10} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"]
    for name, c in evaluation["per_class"].items():
        lines.append(f"{name:10} {c['precision']:9.3f} {c['recall']:7.3f} {c['f1-score']:6.3f} {int(c['support']):8d}")
    return "\n".join(lines)


def plot_confusion_matrix(cm: list[list[int]], labels: list[str], path, title: str = "") -> None:
    """Two heatmaps side by side: counts, and rows normalised to recall."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    for ax, data, fmt, name in [(axes[0], cm, "d", "counts"), (axes[1], normalised, ".2f", "share of each true class")]:
        sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", xticklabels=labels, yticklabels=labels, ax=ax,
                    cbar=False, square=True)
        ax.set(xlabel="predicted", ylabel="true", title=name)
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def agreement(reference: np.ndarray, other: np.ndarray, y_true: np.ndarray) -> dict:
    """How far class probabilities `other` (n, classes) are from `reference`, and both accuracies on y_true."""
    return {"n": int(len(y_true)), "max_abs_diff": float(np.abs(other - reference).max()),
            "top_label_agreement": float((other.argmax(1) == reference.argmax(1)).mean()),
            "accuracy_keras": float((reference.argmax(1) == y_true).mean()),
            "accuracy_exported": float((other.argmax(1) == y_true).mean())}


# ---------------------------------------------------------------------------------------------
# A saved model's test clips


def clips_to_evaluate(saved, data_dirs) -> tuple[pd.DataFrame, str]:
    """Index rows to evaluate for a modeldir.SavedModel, and a description: the model's saved test split,
    or all of data_dirs (a list of folders). Clips whose emotion the model does not know are left out."""
    if data_dirs is None:
        # Models saved before several folders were possible name one.
        data_dir = saved.metadata.get("data_dirs") or saved.metadata["data_dir"]
        clips, _ = corpora.index_corpus(data_dir)
        wanted = set(saved.metadata["split"]["test"])
        clips = clips[clips["relpath"].isin(wanted)]
        if len(clips) < len(wanted):
            raise corpora.CorpusError(f"{len(wanted) - len(clips)} of the model's {len(wanted)} test clips are "
                                      f"missing under {data_dir}; pass --data-dir to evaluate on another folder")
        what = f"its {saved.metadata['split']['method']}-split test set"
    else:
        clips, summary = corpora.index_corpus(data_dirs)
        for line in summary.lines():
            print(line)
        what = "all of " + " and ".join(map(str, data_dirs))
    unknown = ~clips["emotion"].isin(saved.labels)
    if unknown.all():
        raise corpora.CorpusError(f"none of the {len(clips)} clips of {what} has an emotion the model knows "
                                  f"({', '.join(saved.labels)})")
    if unknown.any():
        print(f"left out {unknown.sum()} clips with emotions the model does not know: "
              f"{', '.join(sorted(set(clips.loc[unknown, 'emotion'])))}")
    return clips[~unknown].reset_index(drop=True), what


def result_paths(folder, data_dirs) -> tuple[Path, Path]:
    """Where test_model.py writes its JSON and confusion plot: evaluation.json and confusion_matrix.png for the
    model's own test split (data_dirs None), evaluation-on-<folder names>.json and confusion_matrix-on-....png
    for other folders, so that one never replaces the other."""
    suffix = "" if data_dirs is None else "-on-" + "+".join(Path(d).resolve().name for d in data_dirs)
    return Path(folder) / f"evaluation{suffix}.json", Path(folder) / f"confusion_matrix{suffix}.png"


def model_features(saved, data_dirs, cache_dir) -> tuple[np.ndarray, pd.DataFrame, str]:
    """(features X before standardisation, its index rows, a description) of the clips that clips_to_evaluate
    picks. Raises CorpusError if none is readable."""
    clips, what = clips_to_evaluate(saved, data_dirs)
    data = cache.load_features(clips, saved.config, cache_dir)
    if data.skip_line():
        print(data.skip_line())
    if len(data.X) == 0:
        raise corpora.CorpusError("no clip left to evaluate")
    return data.X, data.clips, what


def evaluate_saved(saved, X: np.ndarray, clips: pd.DataFrame) -> dict:
    """evaluate() of a modeldir.SavedModel on features X (before standardisation) of the clips' index rows."""
    probabilities = saved.model.predict(features.normalised(X, saved.norm), batch_size=256, verbose=0)
    return evaluate(probabilities, clips, saved.labels)


# ---------------------------------------------------------------------------------------------
# Training and testing on one split


def fit_and_evaluate(X: np.ndarray, clips: pd.DataFrame, side: np.ndarray, recipe: Recipe, seed: int,
                     copies=()) -> tuple[training.Fit, dict]:
    """training.fit_split, and evaluate() of the fitted model on side "test"."""
    fit = training.fit_split(X, clips, side, recipe, seed, copies)
    test = side == "test"
    probabilities = fit.model.predict(fit.inputs[test], batch_size=256, verbose=0)
    return fit, evaluate(probabilities, clips[test], list(EMOTIONS))


def recipe_record(recipe: Recipe, seed: int) -> dict:
    """The recipe and seed, as every result file records them."""
    return {**recipe.to_dict(), "seed": seed}


# ---------------------------------------------------------------------------------------------
# Cross-validation by actor


def fold_result(X: np.ndarray, clips: pd.DataFrame, recipe: Recipe, k: int, actors, seed: int, copies=()) -> dict:
    """Fold k (counted from 0) of one seed: the recipe trained on the actors outside `actors` (and any other corpus
    in clips), its best epoch picked on recipe.n_val_speakers more held-out actors (one of each gender), and tested
    on `actors`. Returns its accuracy, UAR, confusion matrix and how it was made."""
    start = time.perf_counter()
    side = training.speaker_split(clips, [f"ravdess-{a:02d}" for a in actors], seed + k, recipe.n_val_speakers)
    fit, ev = fit_and_evaluate(X, clips, side, recipe, seed + k, copies)
    return {"fold": k + 1, "seed": seed, "actors": list(actors), "accuracy": ev["accuracy"], "uar": ev["uar"],
            "n": ev["n"], "best_epoch": int(fit.best_epoch),
            "val_speakers": sorted(set(clips.loc[side == "val", "speaker"])),
            "confusion_matrix": ev["confusion_matrix"], "seconds": round(time.perf_counter() - start, 1)}


def fold_line(row: dict) -> str:
    """A fold_result as one line of the terminal report."""
    return (f"fold {row['fold']} seed {row['seed']} actors {tuple(row['actors'])}: accuracy {row['accuracy']:.3f}  "
            f"UAR {row['uar']:.3f}  (best epoch {row['best_epoch']}, {row['seconds']:.0f} s)")


def fold_summary(rows: list[dict]) -> dict:
    """cv.json's figures of fold_results (any order, any seeds): the folds (sorted by seed and fold, without
    their confusion matrices), the mean and std of each figure over all of them, each seed's means, and the
    confusion matrix summed over all."""
    rows = sorted(rows, key=lambda r: (r["seed"], r["fold"]))
    names = ("accuracy", "uar")
    seeds = sorted({r["seed"] for r in rows})
    return {"folds": [{k: v for k, v in r.items() if k != "confusion_matrix"} for r in rows],
            **{f"{name}_{stat}": float(getattr(np, stat)([r[name] for r in rows]))
               for name in names for stat in ("mean", "std")},
            "seeds": seeds,
            "per_seed": [{"seed": s, **{f"{name}_mean": float(np.mean([r[name] for r in rows if r["seed"] == s]))
                                        for name in names}} for s in seeds],
            "confusion_matrix": np.sum([r["confusion_matrix"] for r in rows], axis=0).tolist(),
            "labels": list(EMOTIONS)}


def cross_validate(X: np.ndarray, clips: pd.DataFrame, recipe: Recipe, folds=FOLDS, copies=(), seeds=(0,)) -> dict:
    """fold_summary of the recipe over folds of actors (fold_result), once per seed, in this process."""
    rows = []
    for seed in seeds:
        for k, actors in enumerate(folds):
            rows.append(fold_result(X, clips, recipe, k, actors, seed, copies))
            print(fold_line(rows[-1]), flush=True)
    return fold_summary(rows)


def cross_validation_data(recipe: Recipe, *, data_dirs, corpus_names=None, cache_dir="cache",
                          folds: str = "selection",
                          without_tess: bool = False) -> tuple[np.ndarray, pd.DataFrame, list[np.ndarray]]:
    """(features X, their index rows, the corrupted training copies) that run_cross_validation folds: the
    recipe's features of data_dirs; RAVDESS alone with without_tess; without the speaker-split test actors for
    the "selection" folds, which leave them out of the data altogether."""
    X, clips = training.recipe_features(recipe, data_dirs=data_dirs, corpus_names=corpus_names, cache_dir=cache_dir)
    keep = np.ones(len(clips), dtype=bool)
    if without_tess:
        keep &= (clips["corpus"] == "ravdess").to_numpy()
    if folds == "selection":
        keep &= ~clips["speaker"].isin(DEFAULT_TEST_SPEAKERS).to_numpy()
    copies = [c[keep] for c in training.corrupted_copies(X, clips, recipe, cache_dir)]
    return X[keep], clips[keep].reset_index(drop=True), copies


# On a Dask worker (cluster.py): each process reads the data once, and trains one fold at a time, with all
# of its threads, since Keras' seeds and session are the process's. The recipe travels as the JSON of its
# dict, since the scheduler unpickles every task without the project's code.
_ONE_FIT = threading.Lock()


@functools.lru_cache(maxsize=1)
def _worker_data(recipe: str, data: tuple) -> tuple[np.ndarray, pd.DataFrame, list[np.ndarray], str]:
    """cross_validation_data of the recipe (JSON of Recipe.to_dict) and data (its keyword arguments as sorted
    (name, value) pairs), and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = cross_validation_data(Recipe.from_dict(json.loads(recipe)), **dict(data))
    return (*result, printed.getvalue())


def worker_prepare(recipe: str, data: tuple) -> str:
    """On a worker: read the data (and fill the feature cache) before the folds start; returns what that
    printed."""
    return _worker_data(recipe, data)[3]


def worker_fold(recipe: str, data: tuple, k: int, actors, seed: int) -> dict:
    """fold_result on a worker, of the recipe and data (as _worker_data takes them)."""
    X, clips, copies, _ = _worker_data(recipe, data)
    with _ONE_FIT:
        return fold_result(X, clips, Recipe.from_dict(json.loads(recipe)), k, actors, seed, copies)


def cross_validate_on_cluster(client, recipe: Recipe, data: dict, folds, seeds) -> dict:
    """cross_validate with every (fold, seed) a task on a Dask cluster; the workers read the data folders and the
    cache at the paths this machine has (made absolute). data: cross_validation_data's keyword arguments. One
    worker reads the data first, so that a cold feature cache is filled once, not by every worker at once."""
    import cluster
    data_dirs = tuple(os.path.abspath(d) for d in data["data_dirs"])
    cluster.check_readable(client, list(data_dirs))
    cache_dir = os.path.abspath(data["cache_dir"]) if data["cache_dir"] is not None else None
    data = tuple(sorted({**data, "data_dirs": data_dirs, "cache_dir": cache_dir}.items()))
    spec = json.dumps(recipe.to_dict())
    print(cluster.submit(client, "evaluation.worker_prepare", spec, data).result(), end="")
    rows = []
    tasks = [(spec, data, k, actors, seed) for seed in seeds for k, actors in enumerate(folds)]
    for row in cluster.results_as_completed(client, "evaluation.worker_fold", tasks):
        rows.append(row)
        print(fold_line(row), flush=True)
    return fold_summary(rows)


def run_cross_validation(recipe: Recipe, *, data_dirs, corpus_names=None, cache_dir="cache", folds="selection",
                         without_tess=False, seeds=(0,), out="results/speakers", client=None) -> dict:
    """The recipe cross-validated on data_dirs over FOLD_SETS[folds], once per seed, in this process or on a Dask
    client's cluster; prints the figures and writes cv.json and confusion_matrix.png (summed over folds and seeds)
    into out."""
    start = time.perf_counter()
    data = {"data_dirs": tuple(data_dirs), "corpus_names": tuple(corpus_names) if corpus_names else None,
            "cache_dir": cache_dir, "folds": folds, "without_tess": without_tess}
    if client is None:
        X, clips, copies = cross_validation_data(recipe, **data)
        result = cross_validate(X, clips, recipe, FOLD_SETS[folds], copies, seeds)
    else:
        result = cross_validate_on_cluster(client, recipe, data, FOLD_SETS[folds], seeds)
    result["recipe"] = recipe_record(recipe, seeds[0])
    result.update(folds_of=folds, without_tess=without_tess, seconds=round(time.perf_counter() - start, 1))
    runs = f", {len(seeds)} seeds" if len(seeds) > 1 else ""
    n = len(FOLD_SETS[folds])
    print(f"{n}-fold by actor ({folds}{runs}): accuracy {result['accuracy_mean']:.3f} ± {result['accuracy_std']:.3f}, "
          f"UAR {result['uar_mean']:.3f} ± {result['uar_std']:.3f} ({result['seconds'] / 60:.1f} min)")

    out = Path(out)
    write_json(out / "cv.json", result)
    with atomic_output(out / "confusion_matrix.png") as tmp:
        plot_confusion_matrix(result["confusion_matrix"], result["labels"], tmp,
                              title=f"{n} folds by RAVDESS actor ({folds}{runs}), summed: accuracy "
                                    f"{result['accuracy_mean']:.3f} ± {result['accuracy_std']:.3f}")
    print(f"wrote {out / 'cv.json'} and {out / 'confusion_matrix.png'}")
    return result


# ---------------------------------------------------------------------------------------------
# Leave one corpus out


def leave_one_corpus_out(X: np.ndarray, clips: pd.DataFrame, recipe: Recipe, seed: int = 0, copies=()) -> dict:
    """Each corpus in clips held out in turn: the recipe trained on the others (a stratified tenth of them picks
    the best epoch) and scored on all of the held-out corpus, with every emotion the model knows and with the
    prediction restricted to the held-out corpus's own emotions (the cross-corpus protocol). Raises CorpusError
    for fewer than two corpora."""
    names = sorted(set(clips["corpus"]))
    if len(names) < 2:
        raise corpora.CorpusError(f"leaving one corpus out needs two or more; found only {', '.join(names)}")
    rows = []
    for k, held_out in enumerate(names):
        start = time.perf_counter()
        test = (clips["corpus"] == held_out).to_numpy()
        side = np.full(len(clips), "test", dtype=object)
        side[~test] = training.validation_split(clips[~test].reset_index(drop=True), recipe, seed + k)
        fit, ev = fit_and_evaluate(X, clips, side, recipe, seed + k, copies)
        shared = ev.get("shared_emotions", {**ev, "labels": list(EMOTIONS)})
        rows.append({"train": [c for c in names if c != held_out], "test": held_out, "n": ev["n"],
                     "accuracy": ev["accuracy"], "uar": ev["uar"], "shared_emotions": shared,
                     "best_epoch": int(fit.best_epoch), "seconds": round(time.perf_counter() - start, 1)})
        print(f"{' + '.join(rows[-1]['train'])} -> {held_out}: accuracy {ev['accuracy']:.3f}, UAR {ev['uar']:.3f}; "
              f"on its {len(shared['labels'])} emotions {shared['accuracy']:.3f}, UAR {shared['uar']:.3f} "
              f"(best epoch {fit.best_epoch}, {rows[-1]['seconds']:.0f} s)", flush=True)
    return {"held_out": rows, "labels": list(EMOTIONS)}


def run_leave_one_corpus_out(recipe: Recipe, *, data_dirs, corpus_names=None, cache_dir="cache", seed: int = 0,
                             out="results/corpora") -> dict:
    """leave_one_corpus_out over data_dirs (and corpus_names); prints a table and writes loco.json into out."""
    start = time.perf_counter()
    X, clips = training.recipe_features(recipe, data_dirs=data_dirs, corpus_names=corpus_names, cache_dir=cache_dir)
    result = leave_one_corpus_out(X, clips, recipe, seed, training.corrupted_copies(X, clips, recipe, cache_dir))
    result["recipe"] = recipe_record(recipe, seed)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print("\n| trained on | tested on | clips | accuracy, 8 emotions | accuracy, its own emotions | UAR, its own |")
    print("|---|---|---|---|---|---|")
    for row in result["held_out"]:
        shared = row["shared_emotions"]
        print(f"| {' + '.join(row['train'])} | {row['test']} | {row['n']} | {row['accuracy']:.3f} | "
              f"{shared['accuracy']:.3f} ({len(shared['labels'])}) | {shared['uar']:.3f} |")
    print(f"wrote {write_json(Path(out) / 'loco.json', result)} ({result['seconds'] / 60:.1f} min)")
    return result
