"""The Keras models, and the model directory that carries one with everything needed to use it again.

A model directory holds `model.keras` and `metadata.json` (labels in output order, the
FeatureConfig, the split, training options, library versions). `save_model_dir` writes it
atomically; `load_model_dir` reads it back with Keras' safe mode on. `export_model_dir` adds
`model.tflite` (and `model-int8.tflite`, `model.onnx`); `inference.load_exported` runs those.
"""
import os

# TensorFlow only stays quiet if both are set before it is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import contextlib  # noqa: E402
import ctypes  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from features import FeatureConfig, atomic_output  # noqa: E402
from inference import ONNX_FILE, TFLITE_FILE, TFLITE_INT8_FILE  # noqa: E402

# Keras' retracing notices when many models are trained in one process (cross-validation) are not for users.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def compiled(model: keras.Model, learning_rate=1e-3, label_smoothing: float = 0.0) -> keras.Model:
    """The model compiled as every model here trains: Adam, cross-entropy on one-hot labels, accuracy.

    learning_rate: a float (Adam's default 1e-3 for the reference) or a Keras schedule.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing), metrics=["accuracy"])
    return model


def build_seed_cnn(input_shape: tuple[int, int], n_classes: int,
                   normalizer: layers.Normalization | None = None) -> keras.Model:
    """The reference 1D CNN over (frames, coefficients) MFCC sequences, not yet compiled.

    `normalizer`, an adapted Normalization layer, standardises each coefficient inside the
    model so the training statistics travel with it.
    """
    model = keras.Sequential([
        keras.Input(shape=input_shape),
        *([normalizer] if normalizer is not None else []),
        layers.Conv1D(64, 5),
        layers.ReLU(),
        layers.MaxPooling1D(2),
        layers.Dropout(0.3),
        layers.Conv1D(128, 5),
        layers.ReLU(),
        layers.MaxPooling1D(2),
        layers.Dropout(0.3),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ], name="seed_cnn")
    return model


POOLED_BLOCKS = ((64, 5), (128, 5), (128, 3))  # (filters, kernel) of each convolution


def pooled_conv_layers(blocks=POOLED_BLOCKS) -> list[layers.Layer]:
    """The pooled CNN's convolutions: each with BatchNorm and ReLU, max-pooling and dropout between them."""
    stack = []
    for i, (filters, kernel) in enumerate(blocks):
        if i:
            stack += [layers.MaxPooling1D(2), layers.Dropout(0.2)]
        stack += [layers.Conv1D(filters, kernel, padding="same", use_bias=False), layers.BatchNormalization(),
                  layers.ReLU()]
    return stack


@keras.saving.register_keras_serializable(package="ser")
class BesideClipStandardised(layers.Layer):
    """(batch, frames, features) -> (batch, frames, 2 * features): each clip as it comes, and beside it the
    same clip standardised by its own mean and standard deviation of each feature over its frames (as
    features.standardise_per_clip does).

    With --norm mean the first half keeps how far each feature swings over time, a cue to arousal that
    carries from one corpus to another; additive noise narrows those swings, and the second half undoes that.
    """

    def call(self, x):
        mean = keras.ops.mean(x, axis=1, keepdims=True)
        std = keras.ops.std(x, axis=1, keepdims=True)
        return keras.ops.concatenate([x, (x - mean) / (std + 1e-6)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1])


def build_pooled_cnn(input_shape: tuple[int, int], n_classes: int, normalizer: layers.Normalization | None = None,
                     blocks=POOLED_BLOCKS, hidden: int = 64, clip_view: bool = False) -> keras.Model:
    """A CNN that pools over time instead of flattening: BatchNorm after each convolution, global
    average pooling, so a sound means the same wherever it falls in the window. Not yet compiled.

    clip_view: the convolutions see each clip beside itself standardised per clip (BesideClipStandardised).
    """
    model = keras.Sequential([
        keras.Input(shape=input_shape),
        *([normalizer] if normalizer is not None else []),
        *([BesideClipStandardised()] if clip_view else []),
        *pooled_conv_layers(blocks),
        layers.GlobalAveragePooling1D(),
        layers.Dropout(0.3),
        layers.Dense(hidden, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ], name="pooled_cnn")
    return model


MODELS = {"seed": build_seed_cnn, "pooled": build_pooled_cnn}


def feature_normalizer(X_train: np.ndarray) -> layers.Normalization:
    """A Normalization layer holding the per-coefficient mean and variance of X_train (n, frames, coefs)."""
    normalizer = layers.Normalization(axis=-1, name="standardise")
    normalizer.adapt(X_train)
    return normalizer


class ModelDirError(Exception):
    """A model directory that is missing, incomplete or unreadable."""


@dataclass
class SavedModel:
    model: keras.Model
    metadata: dict
    labels: list[str]
    config: FeatureConfig

    @property
    def norm(self) -> str:
        """How the model's input is standardised, one of recipes.NORMS (older models say speaker_norm)."""
        return self.metadata.get("norm") or ("speaker" if self.metadata.get("speaker_norm") else "none")

    @property
    def speaker_statistics(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{speaker: (mean, std)} of the speakers the model was trained on, for norm "speaker"."""
        return {s: (np.array(v["mean"], np.float32), np.array(v["std"], np.float32))
                for s, v in self.metadata.get("speaker_statistics", {}).items()}


def statistics_record(statistics: dict) -> dict:
    """features.speaker_statistics as JSON for metadata.json."""
    return {s: {"mean": mean.tolist(), "std": std.tolist()} for s, (mean, std) in statistics.items()}


def save_model_dir(model_dir: str | Path, model: keras.Model, metadata: dict, extra_files: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write model.keras, metadata.json and extra_files ({name: writer(path)}) as one directory.

    Everything is written into a hidden sibling folder first and renamed into place, so a
    crash never leaves a half-written model dir. Raises FileExistsError for an existing dir
    unless overwrite.
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir} already exists; pass --overwrite to replace it")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = model_dir.with_name(f".{model_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model.save(staging / MODEL_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        for name, write in (extra_files or {}).items():
            write(staging / name)
        if not model_dir.exists():
            staging.rename(model_dir)
        elif exchange_paths(staging, model_dir):  # the old model is now at staging, removed below
            pass
        else:  # no atomic exchange here: a moment without a model dir between two renames
            retired = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
            model_dir.rename(retired)
            staging.rename(model_dir)
            shutil.rmtree(retired)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step: Linux's renameat2(RENAME_EXCHANGE), macOS's
    renamex_np(RENAME_SWAP). False where the system or file system has no such call (Windows)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # Windows has no C library to open by None
        return False
    a, b = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        return libc.renameat2(at_fdcwd, a, at_fdcwd, b, rename_exchange) == 0
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 0x2
        return libc.renamex_np(a, b, rename_swap) == 0
    return False


def load_model_dir(model_dir: str | Path) -> SavedModel:
    """The model and metadata saved by train_model.py. Raises ModelDirError with a one-line reason."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"no model directory at {model_dir}; train one with train_model.py "
                            f"or pass --model-dir")
    try:
        metadata = json.loads((model_dir / METADATA_FILE).read_text())
        labels = list(metadata["labels"])
        config = FeatureConfig.from_dict(metadata["feature_config"])
    except FileNotFoundError:
        raise ModelDirError(f"{model_dir} has no {METADATA_FILE}; it is not a model dir from train_model.py") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{model_dir / METADATA_FILE} is broken ({type(e).__name__}: {e})") from None
    try:
        model = keras.saving.load_model(model_dir / MODEL_FILE, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelDirError(f"cannot load {model_dir / MODEL_FILE}: {reason[:200]}") from None
    if model.output_shape[-1] != len(labels) or tuple(model.input_shape[1:]) != config.shape:
        raise ModelDirError(f"{model_dir}: model shapes {model.input_shape} -> {model.output_shape} "
                            f"do not match its metadata ({len(labels)} labels, features {config.shape})")
    return SavedModel(model=model, metadata=metadata, labels=labels, config=config)


# ---------------------------------------------------------------------------------------------
# Export for runtimes without Keras (export_model.py); inference.load_exported runs the files.

ONNX_OPSET = 17


class ExportError(Exception):
    """A converter that failed, with its reason."""


def write_saved_model(model: keras.Model, path: Path) -> None:
    """The model's inference function as a TensorFlow SavedModel, the converters' common input."""
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the exported signature
        model.export(str(path), format="tf_saved_model")


def tflite_bytes(saved_model: Path, int8: bool = False) -> bytes:
    """A .tflite flatbuffer of the SavedModel: float32, or with int8 weights (dynamic-range quantisation)."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def write_onnx(saved_model: Path, path: Path) -> None:
    """An ONNX file of the SavedModel through tf2onnx's command line, its supported entry point for Keras 3
    models (its from_keras and from_function fail on them). Raises ExportError with the converter's last line."""
    done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model),
                           "--output", str(path), "--opset", str(ONNX_OPSET)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ExportError(f"tf2onnx failed: {lines[-1] if lines else f'exit status {done.returncode}'}")


def export_model_dir(model_dir: str | Path, int8: bool = False, onnx: bool = False) -> list[Path]:
    """Write model.tflite, and with the flags model-int8.tflite and model.onnx, into model_dir.

    Each file is written under a temporary name and renamed into place.
    """
    model_dir = Path(model_dir)
    saved = load_model_dir(model_dir)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        saved_model = Path(tmp) / "saved_model"
        write_saved_model(saved.model, saved_model)
        for name, quantise in [(TFLITE_FILE, False)] + ([(TFLITE_INT8_FILE, True)] if int8 else []):
            with atomic_output(model_dir / name) as part:
                part.write_bytes(tflite_bytes(saved_model, quantise))
            written.append(model_dir / name)
        if onnx:
            with atomic_output(model_dir / ONNX_FILE) as part:
                write_onnx(saved_model, part)
            written.append(model_dir / ONNX_FILE)
    return written
