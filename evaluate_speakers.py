"""Speaker-independent accuracy: 5-fold cross-validation by RAVDESS actor, the folds of published work.

    python evaluate_speakers.py --data-dir ../shared/datasets --out results/speakers-seed
    python evaluate_speakers.py --model pooled --trim-db 30 --speaker-norm --out results/speakers-best

Each fold trains on the other 19 actors' RAVDESS clips plus all of TESS, picks its best epoch on
two more held-out actors (one of each gender), and is tested on the fold's actors, whom it
never heard. Prints accuracy and UAR per fold and their mean ± std, and writes
`cv.json` and `confusion_matrix.png` (summed over folds) into --out.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

import features
import test_model
import train_model

FOLDS = [(2, 5, 14, 15, 16), (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22)]


def cross_validate(X: np.ndarray, clips, args) -> dict:
    """Per-fold and summed figures of the recipe in args over FOLDS."""
    labels = list(features.EMOTIONS)
    y = clips["emotion"].map(labels.index).to_numpy()
    folds, confusion = [], np.zeros((len(labels), len(labels)), dtype=int)
    for k, actors in enumerate(FOLDS):
        start = time.perf_counter()
        side = train_model.speaker_split(clips, [f"ravdess-{a:02d}" for a in actors], seed=args.seed + k)
        tr, va, te = side == "train", side == "val", side == "test"
        model, _, best_epoch = train_model.train(X[tr], y[tr], X[va], y[va], args, args.seed + k, verbose=0)
        ev = test_model.evaluate(model.predict(X[te], batch_size=256, verbose=0), clips[te], labels)
        confusion += np.array(ev["confusion_matrix"])
        folds.append({"actors": list(actors), "accuracy": ev["accuracy"], "uar": ev["uar"], "n": ev["n"],
                      "best_epoch": int(best_epoch), "seconds": round(time.perf_counter() - start, 1),
                      "val_speakers": sorted(set(clips.loc[va, "speaker"]))})
        print(f"fold {k + 1} actors {actors}: accuracy {ev['accuracy']:.3f}  UAR {ev['uar']:.3f}  "
              f"(best epoch {best_epoch}, {folds[-1]['seconds']:.0f} s)", flush=True)
    acc, uar = np.array([f["accuracy"] for f in folds]), np.array([f["uar"] for f in folds])
    return {"folds": folds, "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "uar_mean": float(uar.mean()), "uar_std": float(uar.std()), "confusion_matrix": confusion.tolist(),
            "labels": labels}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", type=Path, default=Path("results/speakers"))
    p.add_argument("--without-tess", action="store_true", help="train on RAVDESS alone")
    train_model.add_recipe_arguments(p)
    args = train_model.apply_recipe(p.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        return run(args)
    except (features.CorpusError, train_model.SplitError) as e:
        sys.exit(f"error: {e}")


def run(args) -> dict:
    start = time.perf_counter()
    X, clips = train_model.recipe_features(args)
    if args.without_tess:
        keep = (clips["corpus"] == "ravdess").to_numpy()
        X, clips = X[keep], clips[keep].reset_index(drop=True)
    result = cross_validate(X, clips, args)
    result["recipe"] = train_model.recipe(args)
    result["without_tess"] = args.without_tess
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"5-fold by actor: accuracy {result['accuracy_mean']:.3f} ± {result['accuracy_std']:.3f}, "
          f"UAR {result['uar_mean']:.3f} ± {result['uar_std']:.3f} ({result['seconds'] / 60:.1f} min)")

    args.out.mkdir(parents=True, exist_ok=True)
    with features.atomic_output(args.out / "cv.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with features.atomic_output(args.out / "confusion_matrix.png") as tmp:
        test_model.plot_confusion_matrix(result["confusion_matrix"], result["labels"], tmp,
                                         title=f"5-fold by RAVDESS actor, summed: accuracy "
                                               f"{result['accuracy_mean']:.3f} ± {result['accuracy_std']:.3f}")
    print(f"wrote {args.out / 'cv.json'} and {args.out / 'confusion_matrix.png'}")
    return result


if __name__ == "__main__":
    main()
