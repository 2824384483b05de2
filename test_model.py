"""Evaluate a saved model: accuracy, macro-F1, unweighted average recall, per-class report, confusion matrix.

    python test_model.py --model-dir models/seed-cnn                 # its own held-out test split
    python test_model.py --model-dir models/seed-cnn --data-dir my/  # every clip of another corpus folder

Prints the figures overall and per corpus, and writes evaluation.json and confusion_matrix.png
into the model dir.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix, f1_score,  # noqa: E402
                             recall_score)

import features  # noqa: E402
import model as models  # noqa: E402


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


def evaluate(probabilities: np.ndarray, clips: pd.DataFrame, labels: list[str]) -> dict:
    """Every figure of evaluation.json for class probabilities (n, classes) of the clips' index rows."""
    y_true = clips["emotion"].map(labels.index).to_numpy()
    y_pred = probabilities.argmax(axis=1)
    report = classification_report(y_true, y_pred, labels=range(len(labels)), target_names=labels,
                                   output_dict=True, zero_division=0)
    corpora = clips["corpus"].to_numpy()
    return {
        **scores(y_true, y_pred),
        "per_class": {name: report[name] for name in labels},
        "per_corpus": {c: scores(y_true[corpora == c], y_pred[corpora == c]) for c in sorted(set(corpora))},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=range(len(labels))).tolist(),
        "labels": list(labels),
    }


def report_text(evaluation: dict) -> str:
    """The figures as a terminal report."""
    lines = [f"{'':10} {'n':>5} {'accuracy':>9} {'macro-F1':>9} {'UAR':>6}"]
    rows = [("all", evaluation)] + list(evaluation["per_corpus"].items())
    for name, s in rows:
        lines.append(f"{name:10} {s['n']:5d} {s['accuracy']:9.3f} {s['macro_f1']:9.3f} {s['uar']:6.3f}")
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


def clips_to_evaluate(saved: models.SavedModel, data_dir: str | None) -> tuple[pd.DataFrame, str]:
    """Index rows to evaluate, and a description: the model's saved test split, or all of data_dir.

    Clips whose emotion the model does not know are left out.
    """
    if data_dir is None:
        data_dir = saved.metadata["data_dir"]
        clips, _ = features.index_corpus(data_dir)
        wanted = set(saved.metadata["split"]["test"])
        clips = clips[clips["relpath"].isin(wanted)]
        if len(clips) < len(wanted):
            raise features.CorpusError(f"{len(wanted) - len(clips)} of the model's {len(wanted)} test clips are "
                                       f"missing under {data_dir}; pass --data-dir to evaluate on another folder")
        what = f"its {saved.metadata['split']['method']}-split test set"
    else:
        clips, _ = features.index_corpus(data_dir)
        what = f"all of {data_dir}"
    unknown = ~clips["emotion"].isin(saved.labels)
    if unknown.any():
        print(f"left out {unknown.sum()} clips with emotions the model does not know: "
              f"{', '.join(sorted(set(clips.loc[unknown, 'emotion'])))}")
    return clips[~unknown].reset_index(drop=True), what


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/latest", help="model dir from train_model.py (default: models/latest)")
    p.add_argument("--data-dir", default=None, help="evaluate on every clip of this folder instead of the test split")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except (models.ModelDirError, features.CorpusError) as e:
        sys.exit(f"error: {e}")


def model_inputs(saved: models.SavedModel, data_dir: str | None, cache_dir) -> tuple[np.ndarray, pd.DataFrame, str]:
    """(model input X, its index rows, a description) of the clips that clips_to_evaluate picks,
    standardised per speaker if the model was trained so. Raises CorpusError if none is readable."""
    clips, what = clips_to_evaluate(saved, data_dir)
    data = features.load_features(clips, saved.config, cache_dir)
    if data.skip_line():
        print(data.skip_line())
    if len(data.X) == 0:
        raise features.CorpusError("no clip left to evaluate")
    X = features.standardise_per_speaker(data.X, data.clips["speaker"]) if saved.metadata.get("speaker_norm") else data.X
    return X, data.clips, what


def run(args) -> dict:
    saved = models.load_model_dir(args.model_dir)
    X, clips, what = model_inputs(saved, args.data_dir, args.cache_dir)
    probabilities = saved.model.predict(X, batch_size=256, verbose=0)
    evaluation = evaluate(probabilities, clips, saved.labels)
    print(f"{args.model_dir} on {what}:")
    print(report_text(evaluation))

    model_dir = Path(args.model_dir)
    with features.atomic_output(model_dir / "evaluation.json") as tmp:
        tmp.write_text(json.dumps(evaluation, indent=2))
    with features.atomic_output(model_dir / "confusion_matrix.png") as tmp:
        plot_confusion_matrix(evaluation["confusion_matrix"], saved.labels, tmp,
                              title=f"{model_dir.name} on {what}: accuracy {evaluation['accuracy']:.3f}, "
                                    f"UAR {evaluation['uar']:.3f}")
    print(f"wrote {model_dir / 'evaluation.json'} and {model_dir / 'confusion_matrix.png'}")
    return evaluation


if __name__ == "__main__":
    main()
