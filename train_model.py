"""Train the emotion CNN on RAVDESS + TESS MFCCs and save a model dir with everything needed to use it.

    python train_model.py --data-dir ../shared/datasets                 # the default recipe, models/latest
    python train_model.py --recipe reference --model-dir models/seed-cnn  # exactly the seed's recipe
    python train_model.py --split speaker --test-speakers 21,22,23,24

`--recipe` names a set of options (RECIPES below); options given beside it win.
`--split random` (default) is the seed's protocol, a stratified 80/20 split over all clips.
`--split speaker` holds out whole speakers, which is what a new voice meets. Validation is
always carved from the training part and picks the best epoch; the test part is never seen.
"""
import argparse
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight  # noqa: E402

import features  # noqa: E402
import model as models  # noqa: E402  (before TensorFlow: it quietens it)
import tensorflow as tf  # noqa: E402

DEFAULT_TEST_SPEAKERS = ("ravdess-21", "ravdess-22", "ravdess-23", "ravdess-24")  # two male, two female
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1  # of all clips, taken from the training part
N_VAL_SPEAKERS = 2  # for --split speaker: one male and one female training speaker where possible


class SplitError(ValueError):
    """Split options that do not fit the data."""


# ---------------------------------------------------------------------------------------------
# Splits: each returns one of "train", "val", "test" per index row.


def random_split(clips: pd.DataFrame, seed: int) -> np.ndarray:
    """80/10/10 split stratified by corpus and emotion; identical files move as one group."""
    groups = clips.drop_duplicates("group")
    strata = groups["corpus"] + "/" + groups["emotion"]
    try:
        rest, test = train_test_split(groups.index, test_size=TEST_FRACTION, stratify=strata, random_state=seed)
        train, val = train_test_split(rest, test_size=VAL_FRACTION / (1 - TEST_FRACTION), stratify=strata[rest],
                                      random_state=seed)
    except ValueError as e:  # too few clips of some corpus and emotion to stratify
        counts = strata.value_counts()
        raise SplitError(f"too few clips for a stratified random split (smallest: {counts.index[-1]} with "
                         f"{counts.iloc[-1]}): {e}") from None
    side = pd.Series("train", index=groups["group"])
    side[groups.loc[val, "group"]] = "val"
    side[groups.loc[test, "group"]] = "test"
    return side[clips["group"]].to_numpy()


def speaker_split(clips: pd.DataFrame, test_speakers: list[str], seed: int) -> np.ndarray:
    """Test on whole speakers; validate on N_VAL_SPEAKERS other speakers of the same corpus."""
    known = sorted(clips["speaker"].unique())
    missing = sorted(set(test_speakers) - set(known))
    if missing:
        raise SplitError(f"test speakers {missing} are not in the data; known speakers: {', '.join(known)}")
    corpora = clips.loc[clips["speaker"].isin(test_speakers), "corpus"].unique()
    candidates = (clips[clips["corpus"].isin(corpora) & ~clips["speaker"].isin(test_speakers)]
                  .drop_duplicates("speaker").sample(frac=1, random_state=seed))
    # One speaker per gender first, then whoever is left, until N_VAL_SPEAKERS.
    ordered = pd.concat([candidates.drop_duplicates("gender"), candidates]).drop_duplicates("speaker")
    val_speakers = ordered["speaker"].head(N_VAL_SPEAKERS).tolist()
    side = np.where(clips["speaker"].isin(test_speakers), "test",
                    np.where(clips["speaker"].isin(val_speakers), "val", "train"))
    if not (side == "train").any() or not (side == "val").any():
        raise SplitError("a speaker split needs speakers left for training and validation; "
                         "choose fewer --test-speakers")
    return keep_groups_together(side, clips["group"])


def keep_groups_together(side: np.ndarray, groups: pd.Series) -> np.ndarray:
    """Move every copy of an identical file to the side of its copy furthest from training."""
    rank = {"train": 0, "val": 1, "test": 2}
    worst = pd.Series([rank[s] for s in side]).groupby(groups.to_numpy()).transform("max")
    return np.array(["train", "val", "test"])[worst.to_numpy()]


def parse_speakers(text: str) -> list[str]:
    """'21,22' -> ['ravdess-21', 'ravdess-22']; corpus-qualified names ('tess-OAF') pass through."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    return [f"ravdess-{int(s):02d}" if s.isdigit() else s for s in names]


# ---------------------------------------------------------------------------------------------
# Training


class KeepBestWeights(models.keras.callbacks.Callback):
    """Restores, when training ends, the weights of the epoch with the highest val_accuracy."""

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights = -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] > self.best:
            self.best, self.best_epoch, self.best_weights = logs["val_accuracy"], epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):
        self.model.set_weights(self.best_weights)


def spec_augment(X, max_shift: int = 16, max_time_mask: int = 16, max_feature_mask: int = 3):
    """A training-time variant of a batch X (clips, frames, features), same shape, as TensorFlow ops.

    Each clip is shifted in time by up to max_shift frames (circularly), and one block of up to
    max_time_mask frames and one of up to max_feature_mask features (SpecAugment-style) are set
    to that clip's mean, so masks carry no level of their own. TensorFlow ops, so tf.data runs
    them beside training; a Python data pipeline doubled the epoch time here.
    """
    n, frames, width = tf.shape(X)[0], tf.shape(X)[1], tf.shape(X)[2]
    t, f = tf.range(frames)[None, :], tf.range(width)[None, :]

    def block(size, longest):
        start = tf.random.uniform([n, 1], 0, size, dtype=tf.int32)
        length = tf.random.uniform([n, 1], 0, longest + 1, dtype=tf.int32)
        return start, start + length

    shift = tf.random.uniform([n, 1], -max_shift, max_shift + 1, dtype=tf.int32)
    shifted = tf.gather(X, (t - shift) % frames, batch_dims=1)
    (t0, t1), (f0, f1) = block(frames, max_time_mask), block(width, max_feature_mask)
    mask = ((t >= t0) & (t < t1))[:, :, None] | ((f >= f0) & (f < f1))[:, None, :]
    return tf.where(mask, tf.reduce_mean(shifted, axis=1, keepdims=True), shifted)


def augmented_batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches of (X, y), reshuffled and passed through spec_augment afresh every epoch."""
    return (tf.data.Dataset.from_tensor_slices((X, y))
            .shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .map(lambda x, label: (spec_augment(x), label), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def train(X_train, y_train, X_val, y_val, recipe: argparse.Namespace, seed: int, verbose: int | None = None):
    """Fit models.MODELS[recipe.model] as the recipe (the options of add_recipe_arguments) says.

    Returns (model with the best epoch's weights, history table, best epoch).
    verbose: Keras' fit verbosity; default a progress bar on a terminal, a line per epoch elsewhere.
    """
    models.keras.utils.set_random_seed(seed)
    model = models.MODELS[recipe.model](X_train.shape[1:], len(features.EMOTIONS),
                                        normalizer=models.feature_normalizer(X_train))
    steps = -(-len(y_train) // recipe.batch_size)
    learning_rate = (models.keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=recipe.epochs * steps)
                     if recipe.lr_schedule == "cosine" else 1e-3)
    models.compiled(model, learning_rate, recipe.label_smoothing)
    onehot = np.eye(len(features.EMOTIONS), dtype="float32")
    data = ({"x": augmented_batches(X_train, onehot[y_train], recipe.batch_size, seed), "shuffle": False}
            if recipe.augment else
            {"x": X_train, "y": onehot[y_train], "batch_size": recipe.batch_size})
    best = KeepBestWeights()
    fit = model.fit(**data, validation_data=(X_val, onehot[y_val]), epochs=recipe.epochs, callbacks=[best],
                    class_weight=balanced_class_weights(y_train) if recipe.class_weights else None,
                    verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    history = pd.DataFrame(fit.history).rename_axis("epoch")
    history.index += 1
    return model, history, best.best_epoch


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    """{class index: n / (n_classes_present * count)} for the classes in y, so each class weighs the same."""
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    return {int(c): float(w) for c, w in zip(present, weights)}


def plot_training_curves(history: pd.DataFrame, best_epoch: int, path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ["loss", "accuracy"]):
        ax.plot(history.index, history[metric], label="train")
        ax.plot(history.index, history[f"val_{metric}"], label="validation")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def library_versions() -> dict:
    names = ["tensorflow-cpu", "tensorflow", "keras", "librosa", "numpy", "pandas", "scikit-learn", "soundfile"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed under that name
            pass
    return found


# How a model is made, by name; --recipe picks one and any recipe option given overrides it.
RECIPES = {
    # The seed's recipe exactly: its CNN on untrimmed MFCCs, Adam at 1e-3, nothing else.
    "reference": {"model": "seed", "trim_db": None, "n_mfcc": 13, "deltas": False, "speaker_norm": False,
                  "augment": False, "lr_schedule": "constant", "label_smoothing": 0.0, "class_weights": False},
    # The best on speakers never heard (README, Results).
    "pooled": {"model": "pooled", "trim_db": 30.0, "n_mfcc": 13, "deltas": True, "speaker_norm": True,
               "augment": True, "lr_schedule": "cosine", "label_smoothing": 0.0, "class_weights": False},
}
DEFAULT_RECIPE = "pooled"


def optional_db(text: str) -> float | None:
    """'30' -> 30.0; 'none' -> None (no trimming)."""
    return None if text.lower() == "none" else float(text)


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The options that define how a model is made, shared with evaluate_speakers.py and the benchmarks.

    Call apply_recipe on the parsed arguments: options not given take the --recipe's value.
    """
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help=f"a named set of the options below (default: {DEFAULT_RECIPE}); "
                        + "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r.items())
                                    for name, r in RECIPES.items()))
    given = {"default": argparse.SUPPRESS}  # so apply_recipe can tell an option given from one left out
    p.add_argument("--model", choices=list(models.MODELS), **given,
                   help="seed: the reference CNN; pooled: BatchNorm + global average pooling")
    p.add_argument("--trim-db", type=optional_db, **given,
                   help="trim leading/trailing audio this many dB below the peak before fixing the window; "
                        "none: no trimming")
    p.add_argument("--n-mfcc", type=int, **given, help="MFCCs per frame")
    p.add_argument("--deltas", action=argparse.BooleanOptionalAction, **given,
                   help="append MFCC deltas and delta-deltas")
    p.add_argument("--speaker-norm", action=argparse.BooleanOptionalAction, **given,
                   help="standardise features per speaker (live: per session, from running statistics)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, **given,
                   help="time shift and SpecAugment-style masks while training")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], **given,
                   help="Adam's learning rate: constant 1e-3 (the reference), or cosine decay from 1e-3 to 0")
    p.add_argument("--label-smoothing", type=float, **given, help="label smoothing of the cross-entropy")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, **given,
                   help="weigh classes inversely to their frequency")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="fixes the split and the initial weights")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")


def apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """args with every recipe option that was not given set from RECIPES[args.recipe]."""
    for name, value in RECIPES[args.recipe].items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def recipe_config(args) -> features.FeatureConfig:
    """The feature config that the recipe options ask for."""
    return features.FeatureConfig(trim_db=args.trim_db, n_mfcc=args.n_mfcc, deltas=args.deltas)


def recipe(args) -> dict:
    """The recipe options, as cross-validation and benchmark results record them."""
    return {"recipe": args.recipe, "model": args.model, "speaker_norm": args.speaker_norm, **training_options(args),
            "feature_config": recipe_config(args).to_dict()}


def training_options(args) -> dict:
    """The recipe options that concern training alone."""
    return {"augment": args.augment, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr_schedule": args.lr_schedule, "label_smoothing": args.label_smoothing,
            "class_weights": args.class_weights, "seed": args.seed}


def recipe_features(args) -> tuple[np.ndarray, pd.DataFrame]:
    """Index --data-dir and return (model input X, the index rows of X) for the recipe in args."""
    config = recipe_config(args)
    clips, summary = features.index_corpus(args.data_dir)
    print(f"found {len(clips)} clips: " + ", ".join(f"{n} {c}" for c, n in clips["corpus"].value_counts().items()))
    for line in summary.lines():
        print(line)
    start = time.perf_counter()
    data = features.load_features(clips, config, args.cache_dir)
    print(f"features {data.X.shape} in {time.perf_counter() - start:.1f} s "
          f"({data.n_extracted} extracted, {len(data.X) - data.n_extracted} from cache)")
    if data.skip_line():
        print(data.skip_line())
    X = features.standardise_per_speaker(data.X, data.clips["speaker"]) if args.speaker_norm else data.X
    return X, data.clips


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder holding RAVDESS and/or TESS (default: data)")
    p.add_argument("--model-dir", default="models/latest", help="where to save the model (default: models/latest)")
    p.add_argument("--split", choices=["random", "speaker"], default="random")
    p.add_argument("--test-speakers", type=parse_speakers, default=list(DEFAULT_TEST_SPEAKERS),
                   help="for --split speaker: RAVDESS actor numbers or names like tess-OAF "
                        "(default: 21,22,23,24)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --model-dir")
    add_recipe_arguments(p)
    args = apply_recipe(p.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        return run(args)
    except (features.CorpusError, FileExistsError, SplitError) as e:
        sys.exit(f"error: {e}")


def run(args):
    if Path(args.model_dir).exists() and not args.overwrite:
        raise FileExistsError(f"{args.model_dir} already exists; pass --overwrite to replace it")
    X, clips = recipe_features(args)
    side = (random_split(clips, args.seed) if args.split == "random"
            else speaker_split(clips, args.test_speakers, args.seed))
    y = clips["emotion"].map(features.EMOTIONS.index).to_numpy()
    parts = {name: side == name for name in ("train", "val", "test")}
    print("split: " + ", ".join(f"{name} {mask.sum()}" for name, mask in parts.items()))

    model, history, best_epoch = train(X[parts["train"]], y[parts["train"]], X[parts["val"]], y[parts["val"]],
                                       args, args.seed)
    best = history.loc[best_epoch]
    print(f"best epoch {best_epoch}: val_accuracy {best['val_accuracy']:.3f}, val_loss {best['val_loss']:.3f}")

    metadata = {
        "labels": list(features.EMOTIONS),
        "feature_config": recipe_config(args).to_dict(),
        "recipe": args.recipe,
        "model": args.model,
        "speaker_norm": args.speaker_norm,  # test_model.py and predict_live.py standardise the same way
        "data_dir": str(Path(args.data_dir).resolve()),
        "split": {
            "method": args.split,
            "seed": args.seed,
            "test_speakers": sorted(set(clips.loc[parts["test"], "speaker"])) if args.split == "speaker" else None,
            "val_speakers": sorted(set(clips.loc[parts["val"], "speaker"])) if args.split == "speaker" else None,
            **{name: clips.loc[mask, "relpath"].tolist() for name, mask in parts.items()},
        },
        "training": {**training_options(args), "best_epoch": int(best_epoch)},
        "validation": {"accuracy": float(best["val_accuracy"]), "loss": float(best["val_loss"]),
                       "n": int(parts["val"].sum())},
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = models.save_model_dir(args.model_dir, model, metadata, overwrite=args.overwrite, extra_files={
        "history.csv": history.to_csv,
        "training_curves.png": lambda path: plot_training_curves(history, best_epoch, path),
    })
    print(f"saved {out}; evaluate it with: python test_model.py --model-dir {out}")
    return out


if __name__ == "__main__":
    main()
