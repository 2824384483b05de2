"""The Keras models: the seed's CNN, the pooled CNN and the head over the pretrained front end, built from a
config.Recipe, and how they are compiled.

    model = model.build(recipe, input_shape=(130, 39), n_classes=8, normalizer=model.feature_normalizer(X_train))

modeldir.py saves a trained model with everything needed to use it again.
"""
import os

# TensorFlow only stays quiet if both are set before it is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import logging  # noqa: E402

# openSMILE must load before TensorFlow, or its first extraction aborts the process (pretrained.py).
import pretrained  # noqa: E402, F401, I001

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from config import N_EGEMAPS, Recipe  # noqa: E402

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


def build_encoder_head(recipe: Recipe, input_shape: tuple[int, int], n_classes: int,
                       normalizer: layers.Normalization | None = None) -> keras.Model:
    """A head over the pretrained front end's (frames, encoder width + 88) input, not yet compiled: the encoder's
    frames through recipe.conv_blocks (spatial dropout first, L2-regularised, ReLU, dropout after), averaged over
    time, then joined with the clip's eGeMAPS (the same beside every frame: the first frame's are taken); dropout,
    a dense layer of recipe.hidden units if any, and the softmax. Pooling the frames after a convolution, not
    before, is what carried across corpora (RESULTS.md)."""
    width = input_shape[1] - N_EGEMAPS
    if width <= 0:
        raise ValueError(f"the encoder head takes the pretrained front end's frames, not features of {input_shape}")
    inputs = keras.Input(shape=input_shape)
    x = normalizer(inputs) if normalizer is not None else inputs
    frames, params = x[:, :, :width], x[:, 0, width:]
    frames = layers.SpatialDropout1D(recipe.conv_dropout)(frames)
    for filters, kernel in recipe.conv_blocks:
        frames = layers.Conv1D(filters, kernel, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))(
            frames)
        frames = layers.Dropout(recipe.head_dropout)(frames)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(frames), params])
    x = layers.Dropout(recipe.head_dropout)(x)
    if recipe.hidden:
        x = layers.Dense(recipe.hidden, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(n_classes, activation="softmax")(x), name="encoder_head")


# recipe.model -> builder(recipe, input_shape, n_classes, normalizer); bench/ablations.py adds its variants.
MODELS = {"seed": build_seed_cnn, "pooled": build_pooled_cnn, "encoder_head": build_encoder_head}


def build(recipe: Recipe, input_shape: tuple[int, int], n_classes: int,
          normalizer: layers.Normalization | None = None) -> keras.Model:
    """The recipe's model (MODELS[recipe.model]) for inputs of input_shape (frames, features), not yet compiled."""
    if recipe.model not in MODELS:
        raise ValueError(f"unknown model {recipe.model!r}: one of {', '.join(MODELS)}")
    return MODELS[recipe.model](recipe, input_shape, n_classes, normalizer)


def feature_normalizer(X_train: np.ndarray) -> layers.Normalization:
    """A Normalization layer holding the per-feature mean and variance of X_train (n, frames, features) over
    its clips and frames, computed in float64 whatever X_train's dtype."""
    flat = X_train.reshape(-1, X_train.shape[-1])
    total, squares = np.zeros(flat.shape[1]), np.zeros(flat.shape[1])
    for start in range(0, len(flat), 65536):  # a float64 copy of all of it could take gigabytes
        chunk = flat[start:start + 65536].astype(np.float64)
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    mean = total / len(flat)
    return layers.Normalization(axis=-1, mean=mean, variance=np.maximum(squares / len(flat) - mean ** 2, 0.0),
                                name="standardise")
