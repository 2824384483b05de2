"""Train the emotion CNN on RAVDESS + TESS MFCCs and save a model dir with everything needed to use it.

    python train_model.py --data-dir ../shared/datasets                 # the default recipe, models/latest
    python train_model.py --recipe reference --model-dir models/seed-cnn  # exactly the seed's recipe
    python train_model.py --split speaker --test-speakers 21,22,23,24

`--recipe` names a config.Recipe; the few options given beside it (--epochs, --copies, ...) change it.
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

import cli
from config import DEFAULT_TEST_SPEAKERS, Recipe


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_arguments(p)
    p.add_argument("--model-dir", default="models/latest", help="where to save the model (default: models/latest)")
    p.add_argument("--split", choices=["random", "speaker"], default="random")
    p.add_argument("--test-speakers", type=cli.parse_speakers, default=list(DEFAULT_TEST_SPEAKERS),
                   help="for --split speaker: RAVDESS actor numbers or names like tess-OAF "
                        "(default: 21,22,23,24)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --model-dir")
    cli.add_recipe_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    recipe = cli.recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size, copies=args.copies,
                        label_smoothing=args.label_smoothing, encoder_dir=args.encoder_dir)
    return run(recipe, data_dirs=args.data_dir, corpus_names=args.corpora,
               cache_dir=args.cache_dir, model_dir=args.model_dir, split=args.split, test_speakers=args.test_speakers,
               seed=args.seed, overwrite=args.overwrite)


def run(recipe: Recipe, *, data_dirs, corpus_names, cache_dir, model_dir, split, test_speakers, seed,
        overwrite) -> Path:
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import config
    import corpora
    import modeldir
    import training
    try:
        modeldir.check_new(model_dir, overwrite)
        X, clips = training.recipe_features(recipe, data_dirs=data_dirs, corpus_names=corpus_names,
                                            cache_dir=cache_dir)
        side = training.split(clips, recipe, split, seed, test_speakers)
    except (corpora.CorpusError, FileExistsError, training.SplitError) as e:
        sys.exit(f"error: {e}")
    parts = {name: side == name for name in ("train", "val", "test")}
    print("split: " + ", ".join(f"{name} {mask.sum()}" for name, mask in parts.items()))
    fit = training.fit_split(X, clips, side, recipe, seed, training.corrupted_copies(X, clips, recipe, cache_dir),
                             verbose=None)
    best = fit.history.loc[fit.best_epoch]
    print(f"best epoch {fit.best_epoch}: val_accuracy {best['val_accuracy']:.3f}, val_loss {best['val_loss']:.3f}")

    speakers = {name: sorted(set(clips.loc[parts[name], "speaker"])) if split == "speaker" else None
                for name in ("test", "val")}
    metadata = {
        "labels": list(config.EMOTIONS),
        "recipe": recipe.to_dict(),  # the features, the standardisation and how the model was made
        "data_dirs": [str(Path(d).resolve()) for d in data_dirs],
        "corpora": sorted(set(clips["corpus"])),
        "split": {
            "method": split,
            "seed": seed,
            "test_speakers": speakers["test"],
            "val_speakers": speakers["val"],
            **{name: clips.loc[mask, "relpath"].tolist() for name, mask in parts.items()},
        },
        "training": {"seed": seed, "best_epoch": int(fit.best_epoch)},
        "validation": {"accuracy": float(best["val_accuracy"]), "loss": float(best["val_loss"]),
                       "n": int(parts["val"].sum())},
        "versions": config.library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        out = modeldir.save_model_dir(model_dir, fit.model, metadata, overwrite=overwrite, extra_files={
            "history.csv": fit.history.to_csv,
            "training_curves.png": lambda path: training.plot_training_curves(fit.history, fit.best_epoch, path),
        })
    except modeldir.ModelDirTaken as e:
        sys.exit(f"error: {e}")
    print(f"saved {out}; evaluate it with: python test_model.py --model-dir {out}")
    return out


if __name__ == "__main__":
    main()
