"""The model directory: a trained model with everything needed to use it again, and its exports.

A model directory holds `model.keras` and `metadata.json` (labels in output order, the recipe with its
FeatureConfig, the split, library versions). `save_model_dir` writes it atomically; `load_model_dir` reads it
back with Keras' safe mode on. `export_model_dir` adds `model.tflite` (and `model-int8.tflite`, `model.onnx`);
`inference.load_exported` runs those.
"""
import contextlib
import ctypes
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import model as models  # noqa: F401  (first: it quietens TensorFlow before Keras loads)

# isort: split
import keras
import psutil

import pretrained
from config import EMOTIONS, FeatureConfig, Recipe, recipe_of_metadata
from fileio import atomic_output, file_digest
from inference import ONNX_FILE, TFLITE_FILE, TFLITE_INT8_FILE

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


class ModelDirError(Exception):
    """A model directory that is missing, incomplete or unreadable."""


class ModelDirTaken(Exception):
    """Another run saved a model at the path while this one trained; this one's model was kept beside it."""

    def __init__(self, wanted: Path, kept: Path):
        super().__init__(f"{wanted} was saved by another run while this one trained; this model is kept as {kept}")
        self.wanted, self.kept = wanted, kept


@dataclass
class SavedModel:
    model: keras.Model
    metadata: dict
    labels: list[str]
    recipe: Recipe
    path: Path  # the model dir

    def identity(self, exported: Path | None = None) -> str:
        """A short digest of the files that make this model's probabilities: model.keras, metadata.json and, when
        it runs instead of Keras, the exported file. Results of other files are another model's."""
        return file_digest(self.path / MODEL_FILE, self.path / METADATA_FILE, *([exported] if exported else []))

    @property
    def config(self) -> FeatureConfig:
        """How the model's input is made from audio."""
        return self.recipe.features

    @property
    def norm(self) -> str:
        """How the model's input is standardised, one of config.NORMS."""
        return self.recipe.norm


def check_new(model_dir: str | Path, overwrite: bool) -> None:
    """Raise FileExistsError if model_dir exists and overwrite is not given."""
    if Path(model_dir).exists() and not overwrite:
        raise FileExistsError(f"{model_dir} already exists; pass --overwrite to replace it")


def save_model_dir(model_dir: str | Path, model: keras.Model, metadata: dict, extra_files: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write model.keras, metadata.json and extra_files ({name: writer(path)}) as one directory.

    Everything is written into a hidden sibling folder first and renamed into place, so a
    crash never leaves a half-written model dir; what a killed save left is removed here. Without
    overwrite, an existing dir is kept: if one appeared while this run trained (another run saved
    there), this model goes to a free name beside it, and ModelDirTaken says where.
    """
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_dir)
    staging = model_dir.with_name(f".{model_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model.save(staging / MODEL_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        for name, write in (extra_files or {}).items():
            write(staging / name)
        if not overwrite:
            kept = rename_to_free_name(staging, model_dir)
            if kept != model_dir:
                raise ModelDirTaken(model_dir, kept)
        elif not model_dir.exists():
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


def rename_to_free_name(source: Path, target: Path) -> Path:
    """Rename source to target, or, where something is already there, to target-2, target-3, ...: where it went."""
    for n in range(1, 1000):
        candidate = target if n == 1 else target.with_name(f"{target.name}-{n}")
        if candidate.exists():
            continue
        try:
            source.rename(candidate)  # onto an empty folder made in between it would succeed: that is a free name
            return candidate
        except OSError:  # made by another run between the check and the rename
            continue
    raise ModelDirError(f"no free name beside {target}")


def remove_stale_staging(model_dir: Path) -> None:
    """Remove the hidden folders (.NAME.partial-PID, .NAME.old-PID) that saves of processes no longer running left
    beside model_dir when they were killed."""
    for folder in model_dir.parent.glob(f".{model_dir.name}.*-*"):
        kind, _, pid = folder.name.removeprefix(f".{model_dir.name}.").rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


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


def load_model_dir(model_dir: str | Path, encoder_dir: str | Path | None = None) -> SavedModel:
    """The model and metadata saved by train_model.py. Raises ModelDirError with a one-line reason.

    A model on the pretrained front end has its encoder found and checked here, in the folder it was made with or
    in encoder_dir (`--encoder-dir`), against the SHA-256 it records: features of another encoder are refused."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"no model directory at {model_dir}; train one with train_model.py "
                            f"or pass --model-dir")
    try:
        metadata = json.loads((model_dir / METADATA_FILE).read_text())
        labels = valid_labels(metadata["labels"])
        recipe = recipe_of_metadata(metadata)
    except FileNotFoundError:
        raise ModelDirError(f"{model_dir} has no {METADATA_FILE}; it is not a model dir from train_model.py") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{model_dir / METADATA_FILE} is broken ({type(e).__name__}: {e})") from None
    if recipe.features.frontend == "whisper":
        if encoder_dir is not None:
            features = dataclasses.replace(recipe.features, encoder_dir=str(Path(encoder_dir).resolve()))
            recipe = dataclasses.replace(recipe, features=features)
        try:
            pretrained.config_encoder(recipe.features)
        except pretrained.EncoderError as e:
            raise ModelDirError(f"{model_dir}: {e}") from None
    if (model_dir / MODEL_FILE).is_file() and not zipfile.is_zipfile(model_dir / MODEL_FILE):
        raise ModelDirError(f"cannot load {model_dir / MODEL_FILE}: it is damaged or cut short (not a whole Keras "
                            f"file); train it again or copy it anew")
    try:
        model = keras.saving.load_model(model_dir / MODEL_FILE, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelDirError(f"cannot load {model_dir / MODEL_FILE}: {reason[:200]}") from None
    if model.output_shape[-1] != len(labels) or tuple(model.input_shape[1:]) != recipe.features.shape:
        raise ModelDirError(f"{model_dir}: model shapes {model.input_shape} -> {model.output_shape} "
                            f"do not match its metadata ({len(labels)} labels, features {recipe.features.shape})")
    return SavedModel(model=model, metadata=metadata, labels=labels, recipe=recipe, path=model_dir)


def valid_labels(labels) -> list[str]:
    """labels, if they are a list of distinct emotions of config.EMOTIONS; else ValueError naming the problem."""
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"labels must be a list of emotion names, not {labels!r}")
    unknown = [label for label in labels if label not in EMOTIONS]
    if unknown:
        raise ValueError(f"labels {unknown} are not among the emotions {', '.join(EMOTIONS)}")
    if len(set(labels)) < len(labels):
        raise ValueError(f"labels repeat: {labels}")
    return labels


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
