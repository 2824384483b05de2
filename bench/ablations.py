"""Ideas measured against the default recipe and not kept: other models, mixup and ensembles, each through
evaluate_speakers.py's 5-fold cross-validation by actor (README, Results, has the figures).

    python bench/ablations.py --data-dir ../shared/datasets --without-tess --model crnn --out results/abl-crnn
    python bench/ablations.py --data-dir ../shared/datasets --without-tess --mixup 0.2 --out results/abl-mixup
    python bench/ablations.py --data-dir ../shared/datasets --without-tess --ensemble 3 --out results/abl-ensemble3
    python bench/ablations.py --bench --data-dir ../shared/datasets --model wide --splits random   # bench_pipeline.py
    python bench/ablations.py --call-times   # each model's share of a live hop

--model also takes the VARIANTS below in place of the default's pooled CNN; --mixup blends pairs
of training clips and their labels (Beta(a, a) weights) after the default's masks; --ensemble N
averages the probabilities of N models trained with different seeds. Every option of
evaluate_speakers.py applies as well; with --bench, bench_pipeline.py runs instead, with its
options. These live here and not in model.py and training.py because none paid for itself:
the wide CNN and the ensemble gained about as much as one run differs from the next, at three
times the training time (and the ensemble's three model calls would take the live hop past
its 10 ms budget).
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_live  # noqa: E402
import bench_pipeline  # noqa: E402
import cli  # noqa: E402
import evaluation  # noqa: E402
import model as models  # noqa: E402
import training  # noqa: E402
from config import EMOTIONS, RECIPES  # noqa: E402
from model import keras, layers  # noqa: E402

# isort: split
import tensorflow as tf  # noqa: E402  (after model, which quietens it)


def attention_pool(x):
    """A softmax over frames of a learned score per frame, and the frames' weighted sum."""
    weights = layers.Softmax(axis=1)(layers.Dense(1)(x))
    return layers.Flatten()(layers.Dot(axes=1)([weights, x]))


def stats_pool(x):
    """Mean and standard deviation over frames, side by side (x-vector style)."""
    std = keras.ops.sqrt(keras.ops.var(x, axis=1) + 1e-5)  # the epsilon keeps the gradient finite at 0
    return layers.Concatenate()([layers.GlobalAveragePooling1D()(x), std])


def pooled_cnn_with(pool=None, gru_units: int = 0):
    """A builder of the pooled CNN (model.build_pooled_cnn) whose average pooling is replaced by
    pool(frames) -> vector, optionally after a bidirectional GRU over the convolutions' frames."""
    def build(recipe, input_shape, n_classes, normalizer=None):
        inputs = keras.Input(shape=input_shape)
        x = normalizer(inputs) if normalizer is not None else inputs
        for layer in models.pooled_conv_layers(recipe):
            x = layer(x)
        if gru_units:
            x = layers.Bidirectional(layers.GRU(gru_units, return_sequences=True))(x)
        x = pool(x) if pool else layers.GlobalAveragePooling1D()(x)
        x = layers.Dense(recipe.hidden, activation="relu")(layers.Dropout(recipe.head_dropout)(x))
        return keras.Model(inputs, layers.Dense(n_classes, activation="softmax")(x))
    return build


def pooled_cnn_of(**changes):
    """A builder of the pooled CNN with these recipe settings changed (conv_blocks, hidden)."""
    def build(recipe, input_shape, n_classes, normalizer=None):
        return models.build_pooled_cnn(dataclasses.replace(recipe, **changes), input_shape, n_classes, normalizer)
    return build


VARIANTS = {
    "attention": pooled_cnn_with(attention_pool),  # attention pooling instead of the average
    "stats": pooled_cnn_with(stats_pool),  # mean and std pooling
    "crnn": pooled_cnn_with(gru_units=64),  # a bidirectional GRU over the convolutions' frames
    # a fourth block: twice the receptive field
    "deep": pooled_cnn_of(conv_blocks=(*RECIPES["pooled"].conv_blocks, (128, 3))),
    # twice the filters, about 3.7x the weights
    "wide": pooled_cnn_of(conv_blocks=((128, 5), (256, 5), (256, 3)), hidden=128),
}


def mixup(x, y, alpha: float):
    """Each clip of a batch blended with a random other one, and their one-hot labels alike."""
    n = tf.shape(x)[0]
    a, b = tf.random.gamma([n], alpha), tf.random.gamma([n], alpha)
    lam = a / (a + b)  # Beta(alpha, alpha)
    other = tf.random.shuffle(tf.range(n))
    return (lam[:, None, None] * x + (1 - lam[:, None, None]) * tf.gather(x, other),
            lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, other))


def with_mixup(alpha: float):
    """training.training_batches with mixup after its masks."""
    masked = training.training_batches

    def batches(X, y, recipe, seed):
        return masked(X, y, recipe, seed).map(lambda x, label: mixup(x, label, alpha),
                                              num_parallel_calls=tf.data.AUTOTUNE)
    return batches


def with_ensemble(n: int):
    """training.train that trains n models (seeds seed, seed + 1000, ...) and returns their average."""
    train_one = training.train

    def train(X_train, y_train, X_val, y_val, recipe, seed, verbose=None):
        runs = [train_one(X_train, y_train, X_val, y_val, recipe, seed + 1000 * i, verbose) for i in range(n)]
        inputs = keras.Input(shape=X_train.shape[1:])
        members = [keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}") for i, (m, _, _) in enumerate(runs)]
        average = keras.Model(inputs, layers.Average()([member(inputs) for member in members]))
        return average, runs[0][1], runs[0][2]
    return train


def call_times_ms(n_calls: int = 300) -> dict[str, float]:
    """Median milliseconds of one live hop's model call (predict_on_batch of one window), per model.

    Weights do not change the time, so the models are untrained; ensembles cost their members' sum.
    """
    recipe = RECIPES["pooled"]
    window = np.zeros((1, *recipe.features.shape), np.float32)
    times = {}
    for name, build in {"pooled": models.build_pooled_cnn, **VARIANTS}.items():
        model = models.compiled(build(recipe, recipe.features.shape, len(EMOTIONS)))
        for _ in range(20):  # tracing and warm-up
            model.predict_on_batch(window)
        times[name] = float(np.median(bench_live.hop_times_ms(model.predict_on_batch, [window] * n_calls)))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixup", type=float, default=0.0, help="Beta(a, a) of mixup; 0: none")
    p.add_argument("--ensemble", type=int, default=1, help="average this many models, each its own seed")
    p.add_argument("--model", choices=[*models.MODELS, *VARIANTS], help="the recipe's model, or one of the variants")
    p.add_argument("--bench", action="store_true", help="run bench_pipeline.py (random/speaker split) instead")
    p.add_argument("--call-times", action="store_true", help="print each model's live model-call time, and stop")
    args, rest = p.parse_known_args()
    if args.call_times:
        for name, ms in call_times_ms().items():
            print(f"{name:10} {ms:.2f} ms median per model call")
        return
    if args.mixup:
        training.training_batches = with_mixup(args.mixup)
    if args.ensemble > 1:
        training.train = with_ensemble(args.ensemble)
    models.MODELS.update(VARIANTS)

    def with_model(recipe):
        return dataclasses.replace(recipe, model=args.model) if args.model else recipe

    if args.bench:
        bench_pipeline.main(rest, with_model)
        return
    # evaluate_speakers.py's options.
    cv = argparse.ArgumentParser(prog="ablations.py")
    cli.add_data_arguments(cv)
    cli.add_cross_validation_arguments(cv)
    cli.add_recipe_arguments(cv)
    options = cv.parse_args(rest)
    recipe = cli.recipe(options.recipe, epochs=options.epochs, batch_size=options.batch_size, copies=options.copies,
                        label_smoothing=options.label_smoothing, encoder_dir=options.encoder_dir)
    evaluation.run_cross_validation(with_model(recipe), data_dirs=options.data_dir,
                                    corpus_names=options.corpora, cache_dir=options.cache_dir, folds=options.folds,
                                    without_tess=options.without_tess, seeds=options.seeds or [options.seed],
                                    out=options.out)


if __name__ == "__main__":
    main()
