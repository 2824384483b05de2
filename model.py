"""The Keras models, and the model directory that carries one with everything needed to use it again.

A model directory holds `model.keras` and `metadata.json` (labels in output order, the
FeatureConfig, the split, training options, library versions). `save_model_dir` writes it
atomically; `load_model_dir` reads it back with Keras' safe mode on. export_model.py adds
`model.tflite` (and `model-int8.tflite`, `model.onnx`); `load_exported` runs those.
"""
import os

# TensorFlow only stays quiet if both are set before it is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from features import FeatureConfig  # noqa: E402

# Keras' retracing notices when many models are trained in one process (cross-validation) are not for users.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
TFLITE_FILE = "model.tflite"  # written by export_model.py, float32
TFLITE_INT8_FILE = "model-int8.tflite"  # export_model.py --int8: dynamic-range int8 weights
ONNX_FILE = "model.onnx"  # export_model.py --onnx


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


def build_pooled_cnn(input_shape: tuple[int, int], n_classes: int, normalizer: layers.Normalization | None = None,
                     blocks=POOLED_BLOCKS, hidden: int = 64) -> keras.Model:
    """A CNN that pools over time instead of flattening: BatchNorm after each convolution, global
    average pooling, so a sound means the same wherever it falls in the window. Not yet compiled."""
    model = keras.Sequential([
        keras.Input(shape=input_shape),
        *([normalizer] if normalizer is not None else []),
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
        if model_dir.exists():
            retired = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
            model_dir.rename(retired)
            staging.rename(model_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


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
# Exported models (export_model.py): the same probabilities without Keras.


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code writes to file descriptor 2 (LiteRT's "INFO: Created ... delegate")."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TFLiteModel:
    """Class probabilities (n, classes) for features X (n, frames, coefficients) from a .tflite file,
    through the LiteRT interpreter (the ai-edge-litert package, TensorFlow Lite's successor)."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter
        with quiet_native_stderr():
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = 1

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(X) != self.batch:  # the batch dimension is dynamic; resizing costs a re-allocation
            self.interpreter.resize_tensor_input(self.input, X.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(X)
        self.interpreter.set_tensor(self.input, X)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


class OnnxModel:
    """Class probabilities (n, classes) for features X (n, frames, coefficients) from a .onnx file, through
    onnxruntime on the CPU."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = num_threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.asarray(X, dtype=np.float32)})[0]


def load_exported(path: str | Path):
    """A TFLiteModel or OnnxModel for an exported file, by its suffix. Raises ModelDirError if it is missing
    or unreadable."""
    path = Path(path)
    if not path.is_file():
        flag = {ONNX_FILE: " --onnx", TFLITE_INT8_FILE: " --int8"}.get(path.name, "")
        raise ModelDirError(f"no exported model at {path}; write it with: python export_model.py "
                            f"--model-dir {path.parent}{flag}")
    try:
        return OnnxModel(path) if path.suffix == ".onnx" else TFLiteModel(path)
    except Exception as e:  # noqa: BLE001 - the runtimes raise many kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelDirError(f"cannot load {path}: {reason[:200]}") from None
