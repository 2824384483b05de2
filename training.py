"""Training: the splits, a recipe's features and corrupted copies, the augmentation pipeline and the fit.

    X, clips = training.recipe_features(recipe, data_dirs=["../shared/datasets"])
    side = training.split(clips, recipe, "random", seed=0)        # "train" / "val" / "test" per clip
    fit = training.fit_split(X, clips, side, recipe, seed=0)     # fit.model, fit.history, fit.best_epoch

Validation is always carved from the training part and picks the best epoch; the test part is never seen.
"""
from __future__ import annotations

import hashlib
import sys
import time
import zlib
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import augment  # noqa: E402
import cache  # noqa: E402
import corpora  # noqa: E402
import features  # noqa: E402
import model as models  # noqa: E402
from config import EMOTIONS, Recipe  # noqa: E402

# isort: split
import tensorflow as tf  # noqa: E402  (after model, which quietens it)


class SplitError(ValueError):
    """Split options that do not fit the data."""


# ---------------------------------------------------------------------------------------------
# Splits: each returns one of "train", "val", "test" per index row.


def random_split(clips: pd.DataFrame, seed: int, test_fraction: float = 0.2, val_fraction: float = 0.1) -> np.ndarray:
    """A train/val/test split (70/10/20 by default: the fractions are of all clips) stratified by corpus and emotion;
    identical files move as one group."""
    groups = clips.drop_duplicates("group")
    strata = groups["corpus"] + "/" + groups["emotion"]
    try:
        rest, test = train_test_split(groups.index, test_size=test_fraction, stratify=strata, random_state=seed)
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=strata[rest],
                                      random_state=seed)
    except ValueError as e:  # too few clips of some corpus and emotion to stratify
        counts = strata.value_counts()
        raise SplitError(f"too few clips for a stratified random split (smallest: {counts.index[-1]} with "
                         f"{counts.iloc[-1]}): {e}") from None
    side = pd.Series("train", index=groups["group"])
    side[groups.loc[val, "group"]] = "val"
    side[groups.loc[test, "group"]] = "test"
    return side[clips["group"]].to_numpy()


def speaker_split(clips: pd.DataFrame, test_speakers, seed: int, n_val_speakers: int = 2) -> np.ndarray:
    """Test on whole speakers; validate on n_val_speakers other speakers of the same corpus."""
    known = sorted(clips["speaker"].unique())
    missing = sorted(set(test_speakers) - set(known))
    if missing:
        raise SplitError(f"test speakers {missing} are not in the data; known speakers: {', '.join(known)}")
    corpora = clips.loc[clips["speaker"].isin(test_speakers), "corpus"].unique()
    candidates = (clips[clips["corpus"].isin(corpora) & ~clips["speaker"].isin(test_speakers)]
                  .drop_duplicates("speaker").sample(frac=1, random_state=seed))
    # One speaker per gender first, then whoever is left, until n_val_speakers.
    ordered = pd.concat([candidates.drop_duplicates("gender"), candidates]).drop_duplicates("speaker")
    val_speakers = ordered["speaker"].head(n_val_speakers).tolist()
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


def split(clips: pd.DataFrame, recipe: Recipe, method: str, seed: int, test_speakers=()) -> np.ndarray:
    """"train", "val" or "test" per index row: random_split with the recipe's fractions (method "random"), or
    speaker_split of test_speakers with its number of validation speakers (method "speaker")."""
    if method == "random":
        return random_split(clips, seed, recipe.test_fraction, recipe.val_fraction)
    return speaker_split(clips, test_speakers, seed, recipe.n_val_speakers)


def validation_split(clips: pd.DataFrame, recipe: Recipe, seed: int) -> np.ndarray:
    """"train" or "val" per index row: random_split's validation part, its test part joined to training."""
    side = random_split(clips, seed, recipe.test_fraction, recipe.val_fraction)
    return np.where(side == "val", "val", "train")


def labels_of(clips: pd.DataFrame, labels=EMOTIONS) -> np.ndarray:
    """Class indices (n,) of the clips' emotions in `labels` order."""
    return clips["emotion"].map(list(labels).index).to_numpy()


# ---------------------------------------------------------------------------------------------
# Features of a recipe


def recipe_features(recipe: Recipe, *, data_dirs, corpus_names=None,
                    cache_dir: str | None = "cache") -> tuple[np.ndarray, pd.DataFrame]:
    """Index data_dirs (only the corpora named, if any) and return (features X (clips, frames, features), the
    index rows of X) for the recipe, before any standardisation. Prints what it found and skipped."""
    clips, summary = corpora.index_corpus(data_dirs)
    clips = corpora.select_corpora(clips, corpus_names)
    print(f"found {len(clips)} clips: " + ", ".join(f"{n} {c}" for c, n in clips["corpus"].value_counts().items()))
    for line in summary.lines():
        print(line)
    start = time.perf_counter()
    data = cache.load_features(clips, recipe.features, cache_dir)
    print(f"features {data.X.shape} in {time.perf_counter() - start:.1f} s "
          f"({data.n_extracted} extracted, {len(data.X) - data.n_extracted} from cache)")
    if data.skip_line():
        print(data.skip_line())
    return data.X, data.clips


def corrupted_copies(X: np.ndarray, clips: pd.DataFrame, recipe: Recipe,
                     cache_dir: str | None = "cache") -> list[np.ndarray]:
    """recipe.copies arrays like X (the clean features of the clips' rows): the features of a corrupted copy of
    every clip (augment.training_corruption), seeded by the copy's number and the file's content, and cached like
    the clean features. Where a copy gives no features, the clean ones stand in."""
    if not recipe.copies:
        return []
    sr = recipe.features.sample_rate
    # Babble from a fixed draw of all clips, so that every protocol shares one cache. A test speaker may be
    # among them: as six voices summed under another's speech, they lend it no label of theirs.
    pool = clips.sample(min(augment.BABBLE_POOL, len(clips)), random_state=0)
    talkers = [features.load_audio(path, sr) for path in pool["path"]]
    talker_tag = hashlib.sha1("|".join(sorted(pool["relpath"])).encode()).hexdigest()[:8]
    for rt60 in augment.TRAINING_RT60S:  # simulate the rooms once, before the threads that draw from them
        augment.rir_bank(rt60, sr, augment.TRAINING_ROOM_SEED)
    copies = []
    for k in range(recipe.copies):
        def corrupt(y, key, k=k):
            rng = np.random.default_rng([k, zlib.crc32((key or "").encode())])
            return augment.training_corruption(y, sr, rng, talkers)

        name = f"copy{k}-v{augment.TRAINING_VERSION}-{talker_tag}"
        data = cache.load_features(clips, recipe.features, cache_dir, variant=cache.Variant(name, corrupt))
        copy = X.copy()
        copy[clips["relpath"].isin(data.clips["relpath"]).to_numpy()] = data.X
        copies.append(copy)
    return copies


# ---------------------------------------------------------------------------------------------
# The fit


@dataclass
class Fit:
    """What fit_split returns."""

    model: object  # the Keras model with its best epoch's weights
    history: pd.DataFrame  # a row per epoch
    best_epoch: int  # counted from 1
    inputs: np.ndarray  # every row of X standardised as the model takes it


def fit_split(X: np.ndarray, clips: pd.DataFrame, side: np.ndarray, recipe: Recipe, seed: int, copies=(),
              verbose: int | None = 0) -> Fit:
    """Standardise X as the recipe says, add the corrupted copies of the training clips, and train the recipe on
    side "train", choosing the epoch on side "val"."""
    inputs = features.normalised(X, recipe.norm)
    y, tr, va = labels_of(clips), side == "train", side == "val"
    X_train = np.concatenate([inputs[tr]] + [features.normalised(c[tr], recipe.norm) for c in copies])
    model, history, best_epoch = train(X_train, np.tile(y[tr], 1 + len(copies)), inputs[va], y[va], recipe, seed,
                                       verbose)
    return Fit(model, history, best_epoch, inputs)


# ---------------------------------------------------------------------------------------------
# Training


def spec_augment(X, *, max_shift: int, max_time_mask: int, max_feature_mask: int):
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


def training_batches(X: np.ndarray, y: np.ndarray, recipe: Recipe, seed: int) -> tf.data.Dataset:
    """Batches of (X as float32, y) of recipe.batch_size, reshuffled every epoch, and passed through spec_augment
    afresh with the recipe's sizes if recipe.augment. The order is shuffled, not the clips: each batch is gathered
    from X as it is stored, so float16 features stay float16, once, in memory."""
    def variant(x):
        return spec_augment(x, max_shift=recipe.max_shift, max_time_mask=recipe.max_time_mask,
                            max_feature_mask=recipe.max_feature_mask)

    X, y = tf.constant(X), tf.constant(y)
    batches = (tf.data.Dataset.range(len(y))
               .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
               .batch(recipe.batch_size)
               .map(lambda i: (tf.cast(tf.gather(X, i), tf.float32), tf.gather(y, i))))
    if recipe.augment:
        batches = batches.map(lambda x, y: (variant(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def train(X_train, y_train, X_val, y_val, recipe: Recipe, seed: int, verbose: int | None = None):
    """Fit models.build(recipe) on X_train (clips, frames, features) and class indices y_train, keeping the epoch of
    the best validation accuracy. Returns (model with that epoch's weights, history table, best epoch, from 1).

    verbose: Keras' fit verbosity; default a progress bar on a terminal, a line per epoch elsewhere.
    """
    models.keras.utils.set_random_seed(seed)
    model = models.build(recipe, X_train.shape[1:], len(EMOTIONS), normalizer=models.feature_normalizer(X_train))
    steps = -(-len(y_train) // recipe.batch_size)
    learning_rate = (models.keras.optimizers.schedules.CosineDecay(recipe.learning_rate,
                                                                   decay_steps=recipe.epochs * steps)
                     if recipe.lr_schedule == "cosine" else recipe.learning_rate)
    models.compiled(model, learning_rate, recipe.label_smoothing)
    onehot = np.eye(len(EMOTIONS), dtype="float32")
    # Patience of every epoch: it never stops early, it only keeps the best epoch's weights.
    best = models.keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=recipe.epochs,
                                                restore_best_weights=True)
    fit = model.fit(training_batches(X_train, onehot[y_train], recipe, seed), shuffle=False,
                    validation_data=(X_val.astype(np.float32), onehot[y_val]), epochs=recipe.epochs, callbacks=[best],
                    verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    history = pd.DataFrame(fit.history).rename_axis("epoch")
    history.index += 1
    return model, history, best.best_epoch + 1


def plot_training_curves(history: pd.DataFrame, best_epoch: int, path) -> None:
    """Loss and accuracy per epoch, training and validation, with the kept epoch marked; a PNG at path."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ["loss", "accuracy"], strict=True):
        ax.plot(history.index, history[metric], label="train")
        ax.plot(history.index, history[f"val_{metric}"], label="validation")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
