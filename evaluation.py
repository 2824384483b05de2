"""Evaluation: accuracy, macro-F1 and unweighted average recall, reports, confusion plots, and
cross-validation by RAVDESS actor.

    ev = evaluation.evaluate(probabilities, clips, labels)   # every figure of evaluation.json
    print(evaluation.report_text(ev))
    result = evaluation.cross_validate(X, clips, args)       # the 5 folds of published work
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, recall_score  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import augment  # noqa: E402
import features  # noqa: E402
import inference  # noqa: E402
import recipes  # noqa: E402
import training  # noqa: E402

# The folds of published RAVDESS work, by actor, over all 24.
FOLDS = [(2, 5, 14, 15, 16), (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22)]
# The folds that choose recipes: actors 1-20 only, two men (odd) and two women (even) each, so that the
# speaker-split test actors 21-24 (recipes.DEFAULT_TEST_SPEAKERS) stay out of every choice.
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
    y_true = clips["emotion"].map(labels.index).to_numpy()
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
    alone = evaluation.get("each_clip_alone")
    if alone:
        lines += ["", f"{len(evaluation['enrolled_speakers'])} speakers the model never heard are standardised above "
                      "by all of their own clips (enrolment).",
                  f"{'each clip standardised alone':30} accuracy {alone['accuracy']:.3f}  UAR {alone['uar']:.3f}"]
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
    """Index rows to evaluate for a model.SavedModel, and a description: the model's saved test split,
    or all of data_dirs (a folder or a list). Clips whose emotion the model does not know are left out."""
    if data_dirs is None:
        # Models saved before several folders were possible name one.
        data_dir = saved.metadata.get("data_dirs") or saved.metadata["data_dir"]
        clips, _ = features.index_corpus(data_dir)
        wanted = set(saved.metadata["split"]["test"])
        clips = clips[clips["relpath"].isin(wanted)]
        if len(clips) < len(wanted):
            raise features.CorpusError(f"{len(wanted) - len(clips)} of the model's {len(wanted)} test clips are "
                                       f"missing under {data_dir}; pass --data-dir to evaluate on another folder")
        what = f"its {saved.metadata['split']['method']}-split test set"
    else:
        clips, _ = features.index_corpus(data_dirs)
        what = "all of " + (" and ".join(map(str, data_dirs)) if isinstance(data_dirs, list) else str(data_dirs))
    unknown = ~clips["emotion"].isin(saved.labels)
    if unknown.all():
        raise features.CorpusError(f"none of the {len(clips)} clips of {what} has an emotion the model knows "
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
    data = features.load_features(clips, saved.config, cache_dir)
    if data.skip_line():
        print(data.skip_line())
    if len(data.X) == 0:
        raise features.CorpusError("no clip left to evaluate")
    return data.X, data.clips, what


def model_inputs(saved, data_dirs, cache_dir) -> tuple[np.ndarray, pd.DataFrame, str]:
    """model_features, standardised as the model was trained: (model input X, its index rows, a description)."""
    X, clips, what = model_features(saved, data_dirs, cache_dir)
    return saved_inputs(saved, X, clips), clips, what


def saved_inputs(saved, X: np.ndarray, clips: pd.DataFrame) -> np.ndarray:
    """Features X of the clips' rows standardised as the model.SavedModel was trained (features.normalised)."""
    return features.normalised(X, clips["speaker"], saved.norm, saved.speaker_statistics)


def evaluate_saved(saved, X: np.ndarray, clips: pd.DataFrame) -> dict:
    """evaluate() of a model.SavedModel on features X (before standardisation) of the clips' index rows,
    standardised as the model was trained.

    A speaker-normalised model meets speakers it never heard standardised by all of their own clips here
    (enrolment): the result names them ("enrolled_speakers") and adds "each_clip_alone", the figures with
    every clip standardised by itself, which is all that one file or one live utterance of a stranger gives.
    """
    result = evaluate(saved.model.predict(saved_inputs(saved, X, clips), batch_size=256, verbose=0), clips,
                      saved.labels)
    enrolled = sorted(set(clips["speaker"]) - set(saved.speaker_statistics)) if saved.norm == "speaker" else []
    if enrolled:
        alone = saved.model.predict(features.standardise_per_clip(X), batch_size=256, verbose=0)
        result["enrolled_speakers"] = enrolled
        result["each_clip_alone"] = scores_of(alone, clips["emotion"].map(saved.labels.index).to_numpy(),
                                              saved.labels)
    return result


def running_standardiser_accuracy(saved, X: np.ndarray, clips: pd.DataFrame, seed: int = 0) -> float:
    """Accuracy of a speaker-normalised model when each speaker's clips reach it one at a time, in a random
    order, standardised by inference.RunningStandardiser as a live session is: the first clips know little
    of the speaker."""
    y_true = clips["emotion"].map(saved.labels.index).to_numpy()
    rng, correct = np.random.default_rng(seed), 0
    for speaker in sorted(set(clips["speaker"])):
        standardise = inference.RunningStandardiser()
        for i in rng.permutation(np.flatnonzero((clips["speaker"] == speaker).to_numpy())):
            p = saved.model.predict_on_batch(standardise(X[i])[np.newaxis])
            correct += int(np.argmax(p) == y_true[i])
    return correct / len(clips)


# ---------------------------------------------------------------------------------------------
# Robustness: the test audio corrupted (augment.py) before its features are made


def corrupted_features(waves: list[np.ndarray], config, condition: str, seed: int,
                       talkers: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(features (n_ok, *config.shape), mask (n,) of the waves that gave features) of waveforms at
    config.sample_rate under one augment condition. Clip i's corruption is seeded by (seed, i, condition),
    so every model meets the same corrupted audio."""
    tag = zlib.crc32(condition.encode())

    def one(i: int):
        y = augment.corrupt(waves[i], config.sample_rate, condition, np.random.default_rng([seed, i, tag]), talkers)
        try:
            return features.waveform_features(y, config)
        except features.SkipClip:
            return None

    with threadpool_limits(1), ThreadPoolExecutor(features.extraction_threads()) as pool:
        results = list(pool.map(one, range(len(waves))))
    ok = np.array([r is not None for r in results])
    X = np.stack([r for r in results if r is not None]) if ok.any() else np.zeros((0, *config.shape), np.float32)
    return X, ok


def robustness(saved, clips: pd.DataFrame, waves: list[np.ndarray], talkers: list[np.ndarray],
               conditions=augment.CONDITIONS, seed: int = 0) -> list[dict]:
    """A row per condition: a model.SavedModel's accuracy and UAR (evaluate_saved) on the clips' waveforms
    (at the model's rate) corrupted so. talkers: clips of speakers outside the test set, for babble. Clips
    that a corruption leaves silent are counted in "skipped" and scored as wrong in the accuracy; the UAR is
    over the clips that gave features."""
    rows = []
    for condition in conditions:
        start = time.perf_counter()
        X, ok = corrupted_features(waves, saved.config, condition, seed, talkers)
        result = evaluate_saved(saved, X, clips[ok].reset_index(drop=True))
        row = {"condition": condition, "accuracy": result["accuracy"] * ok.mean(), "uar": result["uar"],
               "n": len(waves), "skipped": int((~ok).sum())}
        if "each_clip_alone" in result:
            row["accuracy_each_clip_alone"] = result["each_clip_alone"]["accuracy"] * ok.mean()
        rows.append(row)
        alone = f", each clip alone {row['accuracy_each_clip_alone']:.3f}" if "accuracy_each_clip_alone" in row else ""
        print(f"{condition:12} accuracy {row['accuracy']:.3f}{alone} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# Cross-validation by actor


def fold_result(X: np.ndarray, clips: pd.DataFrame, args, k: int, actors, seed: int, copies=()) -> dict:
    """Fold k (counted from 0) of one seed: the recipe in args trained on the actors outside `actors` (and any
    other corpus in clips), its best epoch picked on two more held-out actors (one of each gender), and tested
    on `actors`. Returns its accuracy, UAR, confusion matrix and how it was made; with norm "speaker" also the
    accuracy with each test clip standardised alone."""
    labels = list(features.EMOTIONS)
    start = time.perf_counter()
    side = training.speaker_split(clips, [f"ravdess-{a:02d}" for a in actors], seed=seed + k)
    va, te = side == "val", side == "test"
    fit = training.fit_split(X, clips, side, args, seed + k, copies)
    ev = evaluate(fit.model.predict(fit.inputs[te], batch_size=256, verbose=0), clips[te], labels)
    row = {"fold": k + 1, "seed": seed, "actors": list(actors), "accuracy": ev["accuracy"], "uar": ev["uar"],
           "n": ev["n"], "best_epoch": int(fit.best_epoch), "val_speakers": sorted(set(clips.loc[va, "speaker"])),
           "confusion_matrix": ev["confusion_matrix"]}
    if args.norm == "speaker":  # the test actors were standardised by their own clips: also each clip alone
        p = fit.model.predict(features.standardise_per_clip(X[te]), batch_size=256, verbose=0)
        row["accuracy_each_clip_alone"] = float((p.argmax(1) == training.labels_of(clips[te])).mean())
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def fold_line(row: dict) -> str:
    """A fold_result as one line of the terminal report."""
    alone = f"  each clip alone {row['accuracy_each_clip_alone']:.3f}" if "accuracy_each_clip_alone" in row else ""
    return (f"fold {row['fold']} seed {row['seed']} actors {tuple(row['actors'])}: accuracy {row['accuracy']:.3f}  "
            f"UAR {row['uar']:.3f}{alone}  (best epoch {row['best_epoch']}, {row['seconds']:.0f} s)")


def fold_summary(rows: list[dict]) -> dict:
    """cv.json's figures of fold_results (any order, any seeds): the folds (sorted by seed and fold, without
    their confusion matrices), the mean and std of each figure over all of them, each seed's means, and the
    confusion matrix summed over all."""
    rows = sorted(rows, key=lambda r: (r["seed"], r["fold"]))
    names = [name for name in ("accuracy", "uar", "accuracy_each_clip_alone") if name in rows[0]]
    seeds = sorted({r["seed"] for r in rows})
    return {"folds": [{k: v for k, v in r.items() if k != "confusion_matrix"} for r in rows],
            **{f"{name}_{stat}": float(getattr(np, stat)([r[name] for r in rows]))
               for name in names for stat in ("mean", "std")},
            "seeds": seeds,
            "per_seed": [{"seed": s, **{f"{name}_mean": float(np.mean([r[name] for r in rows if r["seed"] == s]))
                                        for name in names}} for s in seeds],
            "confusion_matrix": np.sum([r["confusion_matrix"] for r in rows], axis=0).tolist(),
            "labels": list(features.EMOTIONS)}


def cross_validate(X: np.ndarray, clips: pd.DataFrame, args, folds=FOLDS, copies=(), seeds=None) -> dict:
    """fold_summary of the recipe in args over folds of actors (fold_result), once per seed (default:
    args.seed), in this process."""
    rows = []
    for seed in [args.seed] if seeds is None else seeds:
        for k, actors in enumerate(folds):
            rows.append(fold_result(X, clips, args, k, actors, seed, copies))
            print(fold_line(rows[-1]), flush=True)
    return fold_summary(rows)


def cross_validation_data(args) -> tuple[np.ndarray, pd.DataFrame, list[np.ndarray]]:
    """(features X, their index rows, the corrupted training copies) that run_cross_validation folds: the
    recipe's features of args.data_dir; RAVDESS alone with args.without_tess; without the speaker-split test
    actors for the "selection" folds, which leave them out of the data altogether."""
    X, clips = training.recipe_features(args)
    keep = np.ones(len(clips), dtype=bool)
    if args.without_tess:
        keep &= (clips["corpus"] == "ravdess").to_numpy()
    if args.folds == "selection":
        keep &= ~clips["speaker"].isin(recipes.DEFAULT_TEST_SPEAKERS).to_numpy()
    copies = [c[keep] for c in training.corrupted_copies(X, clips, args)]
    return X[keep], clips[keep].reset_index(drop=True), copies


# On a Dask worker (cluster.py): each process reads the data once, and trains one fold at a time, with all
# of its threads, since Keras' seeds and session are the process's.
_ONE_FIT = threading.Lock()


@functools.lru_cache(maxsize=1)
def _worker_data(options: str) -> tuple[np.ndarray, pd.DataFrame, list[np.ndarray], str]:
    """cross_validation_data of the options (JSON of args), and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        data = cross_validation_data(argparse.Namespace(**json.loads(options)))
    return (*data, printed.getvalue())


def worker_prepare(options: str) -> str:
    """On a worker: read the data (and fill the feature cache) before the folds start; returns what that
    printed."""
    return _worker_data(options)[3]


def worker_fold(options: str, k: int, actors, seed: int) -> dict:
    """fold_result on a worker, of the data and recipe in options (JSON of args)."""
    X, clips, copies, _ = _worker_data(options)
    with _ONE_FIT:
        return fold_result(X, clips, argparse.Namespace(**json.loads(options)), k, actors, seed, copies)


def cross_validate_on_cluster(client, args, folds, seeds) -> dict:
    """cross_validate with every (fold, seed) a task on a Dask cluster; the workers read args.data_dir and
    args.cache_dir at the paths this machine has (made absolute). One worker reads the data first, so that
    a cold feature cache is filled once, not by every worker at the same time."""
    import cluster
    data_dirs = [os.path.abspath(d) for d in args.data_dir]
    cluster.check_readable(client, data_dirs)
    options = json.dumps({**vars(args), "data_dir": data_dirs, "cache_dir": os.path.abspath(args.cache_dir)},
                         default=str)
    print(cluster.submit(client, "evaluation.worker_prepare", options).result(), end="")
    rows = []
    tasks = [(options, k, actors, seed) for seed in seeds for k, actors in enumerate(folds)]
    for row in cluster.results_as_completed(client, "evaluation.worker_fold", tasks):
        rows.append(row)
        print(fold_line(row), flush=True)
    return fold_summary(rows)


def run_cross_validation(args, client=None) -> dict:
    """The recipe in args cross-validated on args.data_dir over FOLD_SETS[args.folds], once per seed in
    args.seeds (default: args.seed), in this process or on a Dask client's cluster; prints the figures and
    writes cv.json and confusion_matrix.png (summed over folds and seeds) into args.out. args: recipe
    options, data_dir, corpora, folds, out, without_tess, seeds."""
    start = time.perf_counter()
    folds, seeds = FOLD_SETS[args.folds], args.seeds or [args.seed]
    if client is None:
        X, clips, copies = cross_validation_data(args)
        result = cross_validate(X, clips, args, folds, copies, seeds)
    else:
        result = cross_validate_on_cluster(client, args, folds, seeds)
    result["recipe"] = recipes.recipe_record(args)
    result.update(folds_of=args.folds, without_tess=args.without_tess, seconds=round(time.perf_counter() - start, 1))
    alone = (f"; each clip standardised alone {result['accuracy_each_clip_alone_mean']:.3f} ± "
             f"{result['accuracy_each_clip_alone_std']:.3f}" if "accuracy_each_clip_alone_mean" in result else "")
    runs = f", {len(seeds)} seeds" if len(seeds) > 1 else ""
    print(f"{len(folds)}-fold by actor ({args.folds}{runs}): accuracy {result['accuracy_mean']:.3f} ± "
          f"{result['accuracy_std']:.3f}, UAR {result['uar_mean']:.3f} ± {result['uar_std']:.3f}{alone} "
          f"({result['seconds'] / 60:.1f} min)")

    out = Path(args.out)
    features.write_json(out / "cv.json", result)
    with features.atomic_output(out / "confusion_matrix.png") as tmp:
        plot_confusion_matrix(result["confusion_matrix"], result["labels"], tmp,
                              title=f"{len(folds)} folds by RAVDESS actor ({args.folds}{runs}), summed: accuracy "
                                    f"{result['accuracy_mean']:.3f} ± {result['accuracy_std']:.3f}")
    print(f"wrote {out / 'cv.json'} and {out / 'confusion_matrix.png'}")
    return result


# ---------------------------------------------------------------------------------------------
# Leave one corpus out


def leave_one_corpus_out(X: np.ndarray, clips: pd.DataFrame, args, copies=()) -> dict:
    """Each corpus in clips held out in turn: the recipe in args trained on the others (a stratified tenth of
    them picks the best epoch) and scored on all of the held-out corpus, with every emotion the model knows
    and with the prediction restricted to the held-out corpus's own emotions (the cross-corpus protocol).
    Raises CorpusError for fewer than two corpora."""
    corpora = sorted(set(clips["corpus"]))
    if len(corpora) < 2:
        raise features.CorpusError(f"leaving one corpus out needs two or more; found only {', '.join(corpora)}")
    labels = list(features.EMOTIONS)
    rows = []
    for k, held_out in enumerate(corpora):
        start = time.perf_counter()
        test = (clips["corpus"] == held_out).to_numpy()
        side = np.full(len(clips), "test", dtype=object)
        side[~test] = training.validation_split(clips[~test].reset_index(drop=True), args.seed + k)
        fit = training.fit_split(X, clips, side, args, args.seed + k, copies)
        best_epoch = fit.best_epoch
        ev = evaluate(fit.model.predict(fit.inputs[test], batch_size=256, verbose=0), clips[test], labels)
        shared = ev.get("shared_emotions", {**ev, "labels": labels})
        rows.append({"train": [c for c in corpora if c != held_out], "test": held_out, "n": ev["n"],
                     "accuracy": ev["accuracy"], "uar": ev["uar"], "shared_emotions": shared,
                     "best_epoch": int(best_epoch), "seconds": round(time.perf_counter() - start, 1)})
        print(f"{' + '.join(rows[-1]['train'])} -> {held_out}: accuracy {ev['accuracy']:.3f}, UAR {ev['uar']:.3f}; "
              f"on its {len(shared['labels'])} emotions {shared['accuracy']:.3f}, UAR {shared['uar']:.3f} "
              f"(best epoch {best_epoch}, {rows[-1]['seconds']:.0f} s)", flush=True)
    return {"held_out": rows, "labels": labels}


def run_leave_one_corpus_out(args) -> dict:
    """leave_one_corpus_out over args.data_dir (and args.corpora); prints a table and writes loco.json into
    args.out."""
    start = time.perf_counter()
    X, clips = training.recipe_features(args)
    result = leave_one_corpus_out(X, clips, args, training.corrupted_copies(X, clips, args))
    result["recipe"] = recipes.recipe_record(args)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print("\n| trained on | tested on | clips | accuracy, 8 emotions | accuracy, its own emotions | UAR, its own |")
    print("|---|---|---|---|---|---|")
    for row in result["held_out"]:
        shared = row["shared_emotions"]
        print(f"| {' + '.join(row['train'])} | {row['test']} | {row['n']} | {row['accuracy']:.3f} | "
              f"{shared['accuracy']:.3f} ({len(shared['labels'])}) | {shared['uar']:.3f} |")
    print(f"wrote {features.write_json(Path(args.out) / 'loco.json', result)} ({result['seconds'] / 60:.1f} min)")
    return result
