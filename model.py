"""The Keras models: the seed's CNN and the pooled CNN, built from a config.Recipe, and how they are compiled.

    model = model.build(recipe, input_shape=(130, 39), n_classes=8, normalizer=model.feature_normalizer(X_train))

modeldir.py saves a trained model with everything needed to use it again.
"""
import os

# TensorFlow only stays quiet if both are set before it is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import logging  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from config import Recipe  # noqa: E402

# Keras' retracing notices when many models are trained in one process (cross-validation) are not for users.
logging.getLogger("tensorflow").setLevel(logging.ERROR)


def compiled(model: keras.Model, learning_rate=1e-3, label_smoothing: float = 0.0) -> keras.Model:
    """The model compiled as every model here trains: Adam, cross-entropy on one-hot labels, accuracy.

    learning_rate: a float (Adam's default 1e-3 for the reference) or a Keras schedule.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing), metrics=["accuracy"])
    return model


def build_seed_cnn(recipe: Recipe, input_shape: tuple[int, int], n_classes: int,
                   normalizer: layers.Normalization | None = None) -> keras.Model:
    """The reference 1D CNN over (frames, coefficients) MFCC sequences, not yet compiled: each of
    recipe.conv_blocks a convolution, ReLU, max-pooling and dropout; then flattened, a dense layer and the softmax.

    `normalizer`, an adapted Normalization layer, standardises each coefficient inside the
    model so the training statistics travel with it.
    """
    stack = []
    for filters, kernel in recipe.conv_blocks:
        stack += [layers.Conv1D(filters, kernel), layers.ReLU(), layers.MaxPooling1D(2),
                  layers.Dropout(recipe.conv_dropout)]
    return keras.Sequential([
        keras.Input(shape=input_shape),
        *([normalizer] if normalizer is not None else []),
        *stack,
        layers.Flatten(),
        *([layers.Dropout(recipe.head_dropout)] if recipe.head_dropout else []),
        layers.Dense(recipe.hidden, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ], name="seed_cnn")


def pooled_conv_layers(recipe: Recipe) -> list[layers.Layer]:
    """The pooled CNN's convolutions: each with BatchNorm and ReLU, max-pooling and dropout between them."""
    stack = []
    for i, (filters, kernel) in enumerate(recipe.conv_blocks):
        if i:
            stack += [layers.MaxPooling1D(2), layers.Dropout(recipe.conv_dropout)]
        stack += [layers.Conv1D(filters, kernel, padding="same", use_bias=False), layers.BatchNormalization(),
                  layers.ReLU()]
    return stack


def build_pooled_cnn(recipe: Recipe, input_shape: tuple[int, int], n_classes: int,
                     normalizer: layers.Normalization | None = None) -> keras.Model:
    """A CNN that pools over time instead of flattening: BatchNorm after each convolution, global
    average pooling, so a sound means the same wherever it falls in the window. Not yet compiled.
    """
    return keras.Sequential([
        keras.Input(shape=input_shape),
        *([normalizer] if normalizer is not None else []),
        *pooled_conv_layers(recipe),
        layers.GlobalAveragePooling1D(),
        layers.Dropout(recipe.head_dropout),
        layers.Dense(recipe.hidden, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ], name="pooled_cnn")


# recipe.model -> builder(recipe, input_shape, n_classes, normalizer); bench/ablations.py adds its variants.
MODELS = {"seed": build_seed_cnn, "pooled": build_pooled_cnn}


def build(recipe: Recipe, input_shape: tuple[int, int], n_classes: int,
          normalizer: layers.Normalization | None = None) -> keras.Model:
    """The recipe's model (MODELS[recipe.model]) for inputs of input_shape (frames, features), not yet compiled."""
    if recipe.model not in MODELS:
        raise ValueError(f"unknown model {recipe.model!r}: one of {', '.join(MODELS)}")
    return MODELS[recipe.model](recipe, input_shape, n_classes, normalizer)


def feature_normalizer(X_train: np.ndarray) -> layers.Normalization:
    """A Normalization layer holding the per-coefficient mean and variance of X_train (n, frames, coefs)."""
    normalizer = layers.Normalization(axis=-1, name="standardise")
    normalizer.adapt(X_train)
    return normalizer
