"""Export a trained model for runtimes without Keras: TensorFlow Lite (LiteRT) and ONNX.

    python export_model.py --model-dir models/latest           # model.tflite, float32
    python export_model.py --model-dir models/latest --int8    # and model-int8.tflite (dynamic-range int8)
    python export_model.py --model-dir models/latest --onnx    # and model.onnx (tf2onnx)

The files go next to model.keras. What a runtime needs to make the input (labels, feature
config, speaker normalisation) stays in metadata.json; `predict_live.py --tflite` and `--onnx`
use it. Each export is then checked against Keras on the model's own test clips (or every
clip of --data-dir): largest probability difference, top-label agreement, and accuracy.
"""
import argparse
import contextlib
import io
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import features
import model as models
import test_model

ONNX_OPSET = 17


class ExportError(Exception):
    """A converter that failed, with its reason."""


def write_saved_model(model, path: Path) -> None:
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


def agreement(reference: np.ndarray, other: np.ndarray, y_true: np.ndarray) -> dict:
    """How far class probabilities `other` (n, classes) are from `reference`, and both accuracies on y_true."""
    return {"n": int(len(y_true)), "max_abs_diff": float(np.abs(other - reference).max()),
            "top_label_agreement": float((other.argmax(1) == reference.argmax(1)).mean()),
            "accuracy_keras": float((reference.argmax(1) == y_true).mean()),
            "accuracy_exported": float((other.argmax(1) == y_true).mean())}


def export(model_dir: Path, int8: bool = False, onnx: bool = False) -> list[Path]:
    """Write model.tflite, and with the flags model-int8.tflite and model.onnx, into model_dir.

    Each file is written under a temporary name and renamed into place.
    """
    saved = models.load_model_dir(model_dir)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        saved_model = Path(tmp) / "saved_model"
        write_saved_model(saved.model, saved_model)
        for name, quantise in [(models.TFLITE_FILE, False)] + ([(models.TFLITE_INT8_FILE, True)] if int8 else []):
            with features.atomic_output(model_dir / name) as part:
                part.write_bytes(tflite_bytes(saved_model, quantise))
            written.append(model_dir / name)
        if onnx:
            with features.atomic_output(model_dir / models.ONNX_FILE) as part:
                write_onnx(saved_model, part)
            written.append(model_dir / models.ONNX_FILE)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("models/latest"))
    p.add_argument("--int8", action="store_true", help="also write model-int8.tflite, int8 weights")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx")
    p.add_argument("--data-dir", help="check on every clip of this folder instead of the model's test split")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with Keras")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except (models.ModelDirError, features.CorpusError, ExportError) as e:
        sys.exit(f"error: {e}")


def run(args) -> dict:
    written = export(args.model_dir, int8=args.int8, onnx=args.onnx)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if args.no_check:
        return {}
    saved = models.load_model_dir(args.model_dir)
    X, clips, what = test_model.model_inputs(saved, args.data_dir, args.cache_dir)
    y = clips["emotion"].map(saved.labels.index).to_numpy()
    reference = saved.model.predict(X, batch_size=256, verbose=0)
    print(f"checked against Keras on {what} ({len(X)} clips):")
    checks = {}
    for path in written:
        checks[path.name] = a = agreement(reference, models.load_exported(path)(X), y)
        print(f"  {path.name:18} max |Δp| {a['max_abs_diff']:.1e}  top labels agree {a['top_label_agreement']:.3f}  "
              f"accuracy {a['accuracy_exported']:.3f} (Keras {a['accuracy_keras']:.3f})")
    return checks


if __name__ == "__main__":
    main()
