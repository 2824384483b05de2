"""Training: the splits, the recipe's features, the augmentation pipeline and the fit.

    X, clips = training.recipe_features(args)           # args: recipes.add_recipe_arguments options
    side = training.random_split(clips, seed=0)          # "train" / "val" / "test" per clip
    model, history, best_epoch = training.train(X[train], y[train], X[val], y[val], args, seed=0)

Validation is always carved from the training part and picks the best epoch; the test part
is never seen.
"""
from __future__ import annotations

import hashlib
import platform
import sys
import time
import zlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight  # noqa: E402

import augment  # noqa: E402
import features  # noqa: E402
import model as models  # noqa: E402
from recipes import recipe_config  # noqa: E402

# isort: split
import tensorflow as tf  # noqa: E402  (after model, which quietens it)

TEST_FRACTION = 0.2
VAL_FRACTION = 0.1  # of all clips, taken from the training part
N_VAL_SPEAKERS = 2  # for --split speaker: one male and one female training speaker where possible


class SplitError(ValueError):
    """Split options that do not fit the data."""


# ---------------------------------------------------------------------------------------------
# Splits: each returns one of "train", "val", "test" per index row.


def random_split(clips: pd.DataFrame, seed: int) -> np.ndarray:
    """70/10/20 train/val/test split stratified by corpus and emotion; identical files move as one group."""
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


# ---------------------------------------------------------------------------------------------
# Features of a recipe


def recipe_features(args) -> tuple[np.ndarray, pd.DataFrame]:
    """Index --data-dir and return (features X, the index rows of X) for the recipe in args, before any
    standardisation (normalised_split does that once the split is known)."""
    config = recipe_config(args)
    clips, summary = features.index_corpus(args.data_dir)
    clips = features.select_corpora(clips, args.corpora)
    print(f"found {len(clips)} clips: " + ", ".join(f"{n} {c}" for c, n in clips["corpus"].value_counts().items()))
    for line in summary.lines():
        print(line)
    start = time.perf_counter()
    data = features.load_features(clips, config, args.cache_dir)
    print(f"features {data.X.shape} in {time.perf_counter() - start:.1f} s "
          f"({data.n_extracted} extracted, {len(data.X) - data.n_extracted} from cache)")
    if data.skip_line():
        print(data.skip_line())
    return data.X, data.clips


def normalised_split(X: np.ndarray, clips: pd.DataFrame, side: np.ndarray, norm: str) -> tuple[np.ndarray, dict]:
    """(X as a model trained with `norm` takes it, the per-speaker statistics used) for a split `side`.

    Speaker statistics come from the training side (train and val) alone, so a test clip never shapes the
    statistics that anything is standardised with. A test speaker with no clip on the training side (the
    speaker split, the folds) can only be standardised by their own test clips: that needs a few minutes of
    the speaker's balanced speech, which evaluation reports say, beside the per-clip figure.
    """
    fit = side != "test"
    statistics = features.speaker_statistics(X[fit], clips["speaker"][fit]) if norm == "speaker" else {}
    return features.normalised(X, clips["speaker"], norm, statistics), statistics


N_BABBLE_TALKERS = 40  # clips that babble in the training copies is drawn from


def corrupted_copies(X: np.ndarray, clips: pd.DataFrame, args) -> list[np.ndarray]:
    """args.copies arrays like X (the clean features of the clips' rows): the features of a corrupted copy
    of every clip (augment.training_corruption; with args.perturb_voice, of augment.other_voice first),
    seeded by the copy's number and the file's content, and cached like the clean features. Where a copy
    gives no features, the clean ones stand in."""
    if not args.copies:
        return []
    config = recipe_config(args)
    sr = config.sample_rate
    # Babble from a fixed draw of all clips, so that every protocol shares one cache. A test speaker may be
    # among them: as six voices summed under another's speech, they lend it no label of theirs.
    pool = clips.sample(min(N_BABBLE_TALKERS, len(clips)), random_state=0)
    talkers = [features.load_audio(path, sr) for path in pool["path"]]
    talker_tag = hashlib.sha1("|".join(sorted(pool["relpath"])).encode()).hexdigest()[:8]
    for rt60 in augment.TRAINING_RT60S:  # simulate the rooms once, before the threads that draw from them
        augment.rir_bank(rt60, sr, augment.TRAINING_ROOM_SEED)
    copies = []
    for k in range(args.copies):
        def corrupt(y, key, k=k):
            rng = np.random.default_rng([k, zlib.crc32((key or "").encode())])
            if args.perturb_voice:
                y = augment.other_voice(y, sr, rng)
            return augment.training_corruption(y, sr, rng, talkers)

        name = f"copy{k}-v{augment.TRAINING_VERSION}-{talker_tag}" + ("-voice" if args.perturb_voice else "")
        data = features.load_features(clips, config, args.cache_dir, variant=features.Variant(name, corrupt))
        copy = X.copy()
        copy[clips["relpath"].isin(data.clips["relpath"]).to_numpy()] = data.X
        copies.append(copy)
    return copies


@dataclass
class Fit:
    """What fit_split returns."""

    model: object  # the Keras model with its best epoch's weights
    history: pd.DataFrame  # a row per epoch
    best_epoch: int  # counted from 1
    inputs: np.ndarray  # every row of X standardised as the model takes it
    statistics: dict  # per-speaker statistics of the training side (norm "speaker"), else {}


def fit_split(X: np.ndarray, clips: pd.DataFrame, side: np.ndarray, args, seed: int, copies=(),
              verbose: int | None = 0) -> Fit:
    """Standardise X for the split (normalised_split), add the corrupted copies of the training clips, weigh
    them (args.balance), and train the recipe in args on side "train", choosing the epoch on side "val".

    Wherever clips are standardised by their speaker (norm "speaker", or the speaker half of
    args.mix_speaker_norm), each copy of a speaker's clips takes that copy's own statistics, as a speaker's
    clips through one corrupted channel would.
    """
    inputs, statistics = normalised_split(X, clips, side, args.norm)
    y, tr, va = labels_of(clips), side == "train", side == "val"
    speakers = clips["speaker"].to_numpy()[tr]
    if args.mix_speaker_norm:
        rng = np.random.default_rng(seed)
        versions = [mixed_standardisation(v[tr], speakers, args.norm, rng) for v in [X, *copies]]
    else:
        versions = [inputs[tr]] + [features.normalised(c[tr], speakers, args.norm) for c in copies]
    weights = balance_weights(clips[tr], args.balance)
    if args.epoch_copies == "one" and copies:
        X_train, y_train = np.stack(versions, axis=1), y[tr]
    else:
        X_train, y_train = np.concatenate(versions), np.tile(y[tr], len(versions))
        weights = None if weights is None else np.tile(weights, len(versions))
    model, history, best_epoch = train(X_train, y_train, inputs[va], y[va], args, seed, verbose, weights)
    return Fit(model, history, best_epoch, inputs, statistics)


def mixed_standardisation(X: np.ndarray, speakers, norm: str, rng: np.random.Generator,
                          share: float = 0.5) -> np.ndarray:
    """X (clips, frames, features) standardised by each clip itself, as `norm` (of recipes.PER_CLIP_NORMS)
    does, except a random `share` of the clips, standardised by the statistics of all their speaker's clips
    in X.

    A training mix (--mix-speaker-norm): a clip standardised by its speaker keeps what it says louder,
    brighter or more varied than the speaker's usual, which per-clip standardisation takes away, while the
    model still learns the per-clip view that a single clip at test time gets.
    """
    by_speaker = rng.random(len(X)) < share
    return np.where(by_speaker[:, None, None], features.standardise_per_speaker(X, speakers),
                    features.normalised(X, speakers, norm)).astype(np.float32)


def validation_split(clips: pd.DataFrame, seed: int) -> np.ndarray:
    """"train" or "val" per index row: random_split's validation part, its test part joined to training."""
    side = random_split(clips, seed)
    return np.where(side == "val", "val", "train")


def labels_of(clips: pd.DataFrame) -> np.ndarray:
    """Class indices (n,) of the clips' emotions, in features.EMOTIONS order."""
    return clips["emotion"].map(features.EMOTIONS.index).to_numpy()


# ---------------------------------------------------------------------------------------------
# Training


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


def one_version(X):
    """Of a batch X (clips, versions, frames, features), one version of each clip drawn at random, as TensorFlow
    ops: (clips, frames, features)."""
    n, versions = tf.shape(X)[0], tf.shape(X)[1]
    return tf.gather(X, tf.random.uniform([n], 0, versions, dtype=tf.int32), batch_dims=1)


def training_batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int, sample_weight: np.ndarray | None = None,
                     augment: bool = True) -> tf.data.Dataset:
    """Batches of (X, y) or (X, y, sample_weight), reshuffled every epoch and, with augment, passed through
    spec_augment afresh. X is (clips, frames, features), or (clips, versions, frames, features) to train on
    one version of each clip per epoch, drawn afresh (one_version)."""
    tensors = (X, y) if sample_weight is None else (X, y, sample_weight)

    def variant(x):
        x = one_version(x) if X.ndim == 4 else x
        return spec_augment(x) if augment else x

    return (tf.data.Dataset.from_tensor_slices(tensors)
            .shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .map(lambda x, *rest: (variant(x), *rest), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def balance_weights(clips: pd.DataFrame, by: str) -> np.ndarray | None:
    """A weight (n,) per training clip so that every speaker (by="speaker") or corpus (by="corpus") weighs
    the same in the loss, mean 1; None for by="none". Many clips of few voices (TESS: 2,800 of 2) would
    otherwise outweigh many voices with few clips."""
    if by == "none":
        return None
    counts = clips[by].map(clips[by].value_counts()).to_numpy()
    weights = 1.0 / counts
    return (weights * len(weights) / weights.sum()).astype("float32")


def train(X_train, y_train, X_val, y_val, recipe, seed: int, verbose: int | None = None, sample_weight=None):
    """Fit models.MODELS[recipe.model] as the recipe (the options of recipes.add_recipe_arguments) says.

    X_train: (clips, frames, features), or (clips, versions, frames, features) to train on one version of each
    clip per epoch (training_batches).
    Returns (model with the best epoch's weights, history table, best epoch, counted from 1).
    verbose: Keras' fit verbosity; default a progress bar on a terminal, a line per epoch elsewhere.
    sample_weight: a weight (n,) per training clip (balance_weights), or None.
    """
    models.keras.utils.set_random_seed(seed)
    frames = X_train.reshape(-1, *X_train.shape[-2:])
    model = models.MODELS[recipe.model](frames.shape[1:], len(features.EMOTIONS),
                                        normalizer=models.feature_normalizer(frames),
                                        **({"clip_view": True} if recipe.clip_view else {}))
    steps = -(-len(y_train) // recipe.batch_size)
    learning_rate = (models.keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=recipe.epochs * steps)
                     if recipe.lr_schedule == "cosine" else 1e-3)
    models.compiled(model, learning_rate, recipe.label_smoothing)
    onehot = np.eye(len(features.EMOTIONS), dtype="float32")
    class_weight = balanced_class_weights(y_train) if recipe.class_weights else None
    if class_weight is not None and sample_weight is not None:  # Keras takes one or the other: their product
        sample_weight = (sample_weight * np.array([class_weight[c] for c in y_train])).astype("float32")
        class_weight = None
    data = ({"x": training_batches(X_train, onehot[y_train], recipe.batch_size, seed, sample_weight, recipe.augment),
             "shuffle": False}
            if recipe.augment or X_train.ndim == 4 else
            {"x": X_train, "y": onehot[y_train], "batch_size": recipe.batch_size, "sample_weight": sample_weight})
    # Patience of every epoch: it never stops early, it only keeps the best epoch's weights.
    best = models.keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=recipe.epochs,
                                                restore_best_weights=True)
    fit = model.fit(**data, validation_data=(X_val, onehot[y_val]), epochs=recipe.epochs, callbacks=[best],
                    class_weight=class_weight,
                    verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    history = pd.DataFrame(fit.history).rename_axis("epoch")
    history.index += 1
    return model, history, best.best_epoch + 1


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    """{class index: n / (n_classes_present * count)} for the classes in y, so each class weighs the same."""
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    return {int(c): float(w) for c, w in zip(present, weights, strict=True)}


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


def library_versions() -> dict:
    """{package: version} of the libraries a saved model depends on, and Python's."""
    names = ["tensorflow-cpu", "tensorflow", "keras", "librosa", "numpy", "pandas", "scikit-learn", "soundfile"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
