"""The linear floor of the pretrained front end: logistic regression on each clip's pooled features (the mean and
standard deviation of the Whisper encoder's frames over time, and its eGeMAPS), standardised by the training side,
on the protocols that choose recipes. The "whisper" recipe's head must beat it to be kept (RESULTS.md).

    python bench/linear_floor.py --data-dir ../shared/datasets ../shared/emodb

Prints, and writes to --out (results/linear-floor.json): the speaker split (actors 21-24), the five selection
folds, the five published folds, and leaving each corpus out (on the held-out corpus's own emotions).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402
import evaluation  # noqa: E402
import training  # noqa: E402
from config import DEFAULT_TEST_SPEAKERS, EMOTIONS, N_EGEMAPS, make_recipe  # noqa: E402
from fileio import write_json  # noqa: E402


def pooled(X: np.ndarray) -> np.ndarray:
    """(clips, 2 * encoder width + 88): each clip's frames averaged and their standard deviation, and its eGeMAPS."""
    frames = X[:, :, :-N_EGEMAPS].astype(np.float32)
    return np.concatenate([frames.mean(axis=1), frames.std(axis=1), X[:, 0, -N_EGEMAPS:].astype(np.float32)], axis=1)


def linear_accuracy(P: np.ndarray, clips, train: np.ndarray, test: np.ndarray) -> dict:
    """evaluation.evaluate of logistic regression fitted on rows `train` of the pooled features P, on rows `test`."""
    y = training.labels_of(clips)
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    head.fit(P[train], y[train])
    probabilities = np.zeros((test.sum(), len(EMOTIONS)))
    probabilities[:, head.classes_] = head.predict_proba(P[test])
    return evaluation.evaluate(probabilities, clips[test], list(EMOTIONS))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_arguments(p)
    p.add_argument("--out", default="results/linear-floor.json")
    args = p.parse_args()
    X, clips = training.recipe_features(make_recipe("whisper"), data_dirs=args.data_dir, corpus_names=args.corpora,
                                        cache_dir=args.cache_dir)
    P = pooled(X)
    speaker = clips["speaker"].to_numpy()
    result = {}
    test = np.isin(speaker, DEFAULT_TEST_SPEAKERS)
    result["speaker_split"] = linear_accuracy(P, clips, ~test, test)["accuracy"]
    print(f"speaker split (actors 21-24): {result['speaker_split']:.3f}")
    for name, folds in evaluation.FOLD_SETS.items():
        keep = ~test if name == "selection" else np.ones(len(clips), bool)
        scores = []
        for actors in folds:
            held = np.isin(speaker, [f"ravdess-{a:02d}" for a in actors])
            scores.append(linear_accuracy(P, clips, keep & ~held, held)["accuracy"])
        result[f"{name}_folds"] = {"folds": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores))}
        print(f"{name} folds: {np.mean(scores):.3f} ± {np.std(scores):.3f} ({', '.join(f'{s:.3f}' for s in scores)})")
    for held_out in sorted(set(clips["corpus"])):
        held = (clips["corpus"] == held_out).to_numpy()
        ev = linear_accuracy(P, clips, ~held, held)
        result[f"to_{held_out}"] = ev.get("shared_emotions", ev)["accuracy"]
        print(f"-> {held_out}, its own emotions: {result[f'to_{held_out}']:.3f}")
    print(f"wrote {write_json(Path(args.out), result)}")


if __name__ == "__main__":
    main()
