"""Train the emotion CNN on RAVDESS + TESS MFCCs and save a model dir with everything needed to use it.

    python train_model.py --data-dir ../shared/datasets                 # the default recipe, models/latest
    python train_model.py --recipe reference --model-dir models/seed-cnn  # exactly the seed's recipe
    python train_model.py --split speaker --test-speakers 21,22,23,24

`--recipe` names a set of options (recipes.py); options given beside it win.
`--split random` (default) is the seed's protocol: 70% train, 10% validation, 20% test,
stratified by corpus and emotion. `--split speaker` holds out whole speakers, which is what a
new voice meets. Validation is always carved from the training part and picks the best epoch;
the test part is never seen.
"""
import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import recipes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipes.add_data_arguments(p)
    p.add_argument("--model-dir", default="models/latest", help="where to save the model (default: models/latest)")
    p.add_argument("--split", choices=["random", "speaker"], default="random")
    p.add_argument("--test-speakers", type=recipes.parse_speakers, default=list(recipes.DEFAULT_TEST_SPEAKERS),
                   help="for --split speaker: RAVDESS actor numbers or names like tess-OAF "
                        "(default: 21,22,23,24)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --model-dir")
    recipes.add_recipe_arguments(p)
    args = recipes.apply_recipe(p.parse_args(argv))
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    return run(args)


def run(args) -> Path:
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import features
    import model as models
    import training
    try:
        if Path(args.model_dir).exists() and not args.overwrite:
            raise FileExistsError(f"{args.model_dir} already exists; pass --overwrite to replace it")
        X, clips = training.recipe_features(args)
        side = (training.random_split(clips, args.seed) if args.split == "random"
                else training.speaker_split(clips, args.test_speakers, args.seed))
    except (features.CorpusError, FileExistsError, training.SplitError) as e:
        sys.exit(f"error: {e}")
    parts = {name: side == name for name in ("train", "val", "test")}
    print("split: " + ", ".join(f"{name} {mask.sum()}" for name, mask in parts.items()))
    fit = training.fit_split(X, clips, side, args, args.seed, training.corrupted_copies(X, clips, args), verbose=None)
    model, history, best_epoch = fit.model, fit.history, fit.best_epoch
    best = history.loc[best_epoch]
    print(f"best epoch {best_epoch}: val_accuracy {best['val_accuracy']:.3f}, val_loss {best['val_loss']:.3f}")

    speakers = {name: sorted(set(clips.loc[parts[name], "speaker"])) if args.split == "speaker" else None
                for name in ("test", "val")}
    metadata = {
        "labels": list(features.EMOTIONS),
        "feature_config": recipes.recipe_config(args).to_dict(),
        "recipe": args.recipe,
        "model": args.model,
        "clip_view": args.clip_view,
        "norm": args.norm,  # test_model.py and predict_live.py standardise the same way
        "speaker_statistics": models.statistics_record(fit.statistics),  # of the training side, for norm "speaker"
        "data_dirs": [str(Path(d).resolve()) for d in args.data_dir],
        "corpora": sorted(set(clips["corpus"])),
        "split": {
            "method": args.split,
            "seed": args.seed,
            "test_speakers": speakers["test"],
            "val_speakers": speakers["val"],
            **{name: clips.loc[mask, "relpath"].tolist() for name, mask in parts.items()},
        },
        "training": {**recipes.training_options(args), "best_epoch": int(best_epoch)},
        "validation": {"accuracy": float(best["val_accuracy"]), "loss": float(best["val_loss"]),
                       "n": int(parts["val"].sum())},
        "versions": training.library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = models.save_model_dir(args.model_dir, model, metadata, overwrite=args.overwrite, extra_files={
        "history.csv": history.to_csv,
        "training_curves.png": lambda path: training.plot_training_curves(history, best_epoch, path),
    })
    print(f"saved {out}; evaluate it with: python test_model.py --model-dir {out}")
    return out


if __name__ == "__main__":
    main()
