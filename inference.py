"""Inference: class probabilities from a saved model for files and for a live stream.

    predictor = inference.Predictor(modeldir.load_model_dir("models/latest"))
    results, skipped = inference.classify_files(paths, predictor)       # whole files
    live = inference.LiveClassifier(predictor, device_rate=48000)        # one hop of a stream
    hop = live(window, time_s)

Both turn audio into model input with features.waveform_features, the code of training.
predict_live.py adds the audio device and the display. Only numpy and the feature code are
imported here; the model's own runtime (Keras, LiteRT, onnxruntime) comes with the model.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

import corpora
import features
from config import FeatureConfig
from fileio import is_special_file

SILENCE = "silence"
# Loudest 0.5 s of a corpus clip: above -48 dBFS for 95% of RAVDESS and 100% of TESS (see README).
DEFAULT_SILENCE_DB = -50.0
GATE_BLOCK_S = 0.5  # the gate compares the loudest block of this length in the window
DEFAULT_HOP_S = 0.5
DEFAULT_SMOOTHING = 0.5
FILE_WINDOW_STEP = 0.5  # windows over a long file overlap by half
LONG_FILE_S = 60.0  # a file longer than this is read in blocks, not decoded whole (long_file_windows)
BLOCK_S = 30.0  # seconds a block

# Exported models, written into the model dir by export_model.py.
TFLITE_FILE = "model.tflite"  # float32
TFLITE_INT8_FILE = "model-int8.tflite"  # --int8: dynamic-range int8 weights
ONNX_FILE = "model.onnx"  # --onnx


class LiveError(Exception):
    """Something about the audio input that the user has to fix."""


class ModelFileError(Exception):
    """An exported model file that is missing or unreadable."""


def level_db(y: np.ndarray) -> float:
    """RMS level of y in dB relative to full scale, floored at -120."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    return max(20 * np.log10(rms + 1e-12), -120.0)


def loudest_block_db(y: np.ndarray, block: int) -> float:
    """level_db of the loudest of the consecutive `block`-sample pieces that end at the end of y."""
    n = len(y) // block
    return max(level_db(piece) for piece in y[len(y) - n * block:].reshape(n, block))


class Predictor:
    """Class probabilities from a saved model, run by Keras or from an exported .tflite/.onnx file.

    Keras' `predict_on_batch` runs its compiled predict function: about 1 ms a hop here, against
    about 9 ms for an eager `model(x)` and 75 ms for `model.predict` (bench/bench_live.py).
    """

    def __init__(self, saved, exported: Path | None = None):
        """saved: a modeldir.SavedModel; exported: a .tflite or .onnx file of it to run instead of Keras."""
        self.labels, self.config, self.norm = saved.labels, saved.config, saved.norm
        self.saved, self.exported = saved, exported
        self.run = load_exported(exported) if exported else saved.model.predict_on_batch

    @functools.cached_property
    def identity(self) -> str:
        """Which model wrote a results row (modeldir.SavedModel.identity): hashed once, and only where asked."""
        return self.saved.identity(self.exported)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for features X (n, frames, coefficients), before standardisation. Raises
        ValueError for features of another front end."""
        if X.shape[1:] != self.config.shape:
            raise ValueError(f"features of shape {X.shape[1:]} are not this model's ({self.config.frontend}, "
                             f"{self.config.shape})")
        return np.asarray(self.run(features.normalised(X, self.norm)))


# ---------------------------------------------------------------------------------------------
# Files


def window_starts(start: int, stop: int, config: FeatureConfig) -> np.ndarray | None:
    """Where the windows over speech from sample start to stop (at config.sample_rate) begin: evenly spaced, at most
    FILE_WINDOW_STEP of a window apart, end to end. None where the speech lasts up to 1 + FILE_WINDOW_STEP windows
    (4.5 s): then it gets exactly what training made of it, one window centred on the speech."""
    n = config.n_samples
    if stop - start <= n * (1 + FILE_WINDOW_STEP):
        return None
    k = int(np.ceil((stop - start - n) / (n * FILE_WINDOW_STEP)))
    return np.linspace(start, stop - n, k + 1).round().astype(int)


def stacked(windows: list[np.ndarray]) -> np.ndarray:
    """The features of the windows that were not silent, stacked; raises SkipClip("silent") if none was left."""
    if not windows:
        raise features.SkipClip("silent")
    return np.stack(windows)


def features_or_none(y: np.ndarray, config: FeatureConfig) -> np.ndarray | None:
    """features.waveform_features of a window, or None for a silent one."""
    try:
        return features.waveform_features(y, config)
    except features.SkipClip:
        return None


def file_windows(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Features (n_windows, frames, coefficients) of a clip y at config.sample_rate: one window, or several over
    long speech (window_starts). Silent windows are left out; raises SkipClip("silent") if all are."""
    start, stop = features.trimmed_span(features.peak_normalise(y), config)
    starts = window_starts(start, stop, config)
    if starts is None:
        return features.waveform_features(y, config)[np.newaxis]
    return stacked([w for first in starts if (w := features_or_none(y[first:first + config.n_samples], config))
                    is not None])


def long_file_windows(path: str | Path, config: FeatureConfig, block_s: float = BLOCK_S) -> np.ndarray:
    """file_windows of a long file, read in blocks of block_s seconds, so that memory stays flat however long the
    file is: one pass finds the speech's span (the RMS of n_fft frames, hop_length apart, as trimming does), and
    each window is then read on its own. Raises SkipClip("unreadable"), ("empty"), ("non-finite"), ("silent")."""
    try:
        with sf.SoundFile(path) as f:
            rate, total = f.samplerate, round(f.frames * config.sample_rate / f.samplerate)
            energy, peak = frame_energies(f, config, round(block_s * rate))
            if total == 0:
                raise features.SkipClip("empty")
            if peak < features.SILENCE_PEAK:
                raise features.SkipClip("silent")
            start, stop = 0, total
            if config.trim_db is not None and len(energy):
                loud = np.flatnonzero(energy > energy.max() * 10 ** (-config.trim_db / 10))
                # Frame i spans n_fft samples from i * hop: trimming's centred frame i + n_fft / 2 / hop.
                start = loud[0] * config.hop_length + config.n_fft // 2
                stop = min(total, (loud[-1] + 1) * config.hop_length + config.n_fft // 2)
            starts = window_starts(start, stop, config)
            if starts is None:  # one short utterance in a long file: its window as training makes it
                return features.waveform_features(read_audio(f, start, stop - start, config), config)[np.newaxis]
            windows = [features_or_none(read_audio(f, first, config.n_samples, config), config) for first in starts]
    except (sf.LibsndfileError, RuntimeError, OSError):
        raise features.SkipClip("unreadable") from None
    return stacked([w for w in windows if w is not None])


def frame_energies(f: sf.SoundFile, config: FeatureConfig, block: int) -> tuple[np.ndarray, float]:
    """(the mean square of every n_fft frame, hop_length apart, of the open file's audio at config.sample_rate, the
    peak), read block samples at a time. Raises SkipClip("non-finite")."""
    carry, energies, peak = np.zeros(0, np.float32), [], 0.0
    for part in f.blocks(blocksize=block, dtype="float32", always_2d=True):
        if not np.isfinite(part).all():
            raise features.SkipClip("non-finite")
        y = np.concatenate([carry, features.resample(part.mean(axis=1), f.samplerate, config.sample_rate)])
        peak = max(peak, float(np.abs(y).max(initial=0.0)))
        n = 0 if len(y) < config.n_fft else 1 + (len(y) - config.n_fft) // config.hop_length
        if n:
            frames = librosa.util.frame(y, frame_length=config.n_fft, hop_length=config.hop_length)[:, :n]
            energies.append(np.mean(np.square(frames, dtype=np.float64), axis=0))
        carry = y[n * config.hop_length:]
    return (np.concatenate(energies) if energies else np.zeros(0)), peak


def read_audio(f: sf.SoundFile, first: int, n: int, config: FeatureConfig) -> np.ndarray:
    """n samples (n,) of the open file's audio, mono at config.sample_rate, from sample `first` (at that rate) on.
    A margin read on either side and cut after resampling keeps the resampler's edges out."""
    ratio, margin = f.samplerate / config.sample_rate, min(first, config.n_fft)
    f.seek(int((first - margin) * ratio))
    y = f.read(int(np.ceil((n + margin + config.n_fft) * ratio)), dtype="float32", always_2d=True).mean(axis=1)
    return librosa.util.fix_length(features.resample(y, f.samplerate, config.sample_rate)[margin:], size=n)


def audio_windows(path: str | Path, config: FeatureConfig) -> np.ndarray:
    """file_windows of an audio file: decoded whole up to LONG_FILE_S, read in blocks beyond (long_file_windows).
    Raises SkipClip with the reason."""
    if not is_special_file(path):
        try:
            if sf.info(str(path)).duration > LONG_FILE_S:
                return long_file_windows(path, config)
        except (sf.LibsndfileError, RuntimeError, OSError):
            pass  # load_audio says why
    return file_windows(features.load_audio(path, config.sample_rate), config)


def classify_files(paths: list[Path], predictor: Predictor) -> tuple[list[dict], list[tuple[str, str]]]:
    """One result per readable file ({path, label, probabilities, windows}), and (path, reason) skips. A long
    file's probabilities are the mean over its windows (file_windows)."""
    windows, skipped = {}, []
    for path in paths:
        try:
            windows[path] = audio_windows(path, predictor.config)
        except features.SkipClip as skip:
            skipped.append((str(path), str(skip)))
    if not windows:
        return [], skipped
    X = np.concatenate(list(windows.values()))
    owner = np.repeat(np.arange(len(windows)), [len(w) for w in windows.values()])
    P = predictor(X)
    results = []
    for i, path in enumerate(windows):
        p = P[owner == i].mean(axis=0)
        results.append({"path": str(path), "label": predictor.labels[int(p.argmax())],
                        "probabilities": dict(zip(predictor.labels, map(float, p), strict=True)),
                        "windows": int((owner == i).sum())})
    return results, skipped


def expand_paths(names: list[str]) -> list[Path]:
    """Files as given, and the audio files inside folders. Raises LiveError for a path that does not exist."""
    out = []
    for name in map(Path, names):
        if name.is_dir():
            out += corpora.audio_files(name)
        elif name.exists():
            out.append(name)
        else:
            raise LiveError(f"no such file or folder: {name}")
    return out


# ---------------------------------------------------------------------------------------------
# Live


class Smoother:
    """Exponential moving average of probabilities: weight `alpha` on the past; 0 passes them raw."""

    def __init__(self, alpha: float):
        self.alpha, self.state = alpha, None

    def __call__(self, p: np.ndarray) -> np.ndarray:
        self.state = p if self.state is None else self.alpha * self.state + (1 - self.alpha) * p
        return self.state

    def reset(self) -> None:
        self.state = None


@dataclass
class Hop:
    time_s: float  # stream time at the end of the window
    label: str  # an emotion, or SILENCE
    probabilities: np.ndarray | None  # None for silence
    level_db: float  # of the loudest GATE_BLOCK_S of the window


class LiveClassifier:
    """Turns the newest window of device audio into a Hop: silence gate, resampling, features, model, smoothing."""

    def __init__(self, predictor: Predictor, device_rate: int, hop_s: float = DEFAULT_HOP_S,
                 silence_db: float = DEFAULT_SILENCE_DB, smoothing: float = DEFAULT_SMOOTHING):
        self.predictor, self.device_rate, self.silence_db = predictor, device_rate, silence_db
        self.window_samples = round(predictor.config.window_s * device_rate)
        self.hop_samples = round(hop_s * device_rate)
        self.gate_samples = round(GATE_BLOCK_S * device_rate)
        self.smoother = Smoother(smoothing)

    def warm_up(self) -> None:
        """Pay the first call's costs (librosa's numba compilation, TensorFlow tracing) before streaming.

        Paid inside the stream, they hold the GIL for seconds and the audio callback loses input.
        """
        self(0.1 * np.sin(np.linspace(0, 2000, self.window_samples, dtype=np.float32)), 0.0)
        self.smoother.reset()

    def __call__(self, window: np.ndarray, time_s: float) -> Hop:
        """window: the last window_samples of the stream at device_rate."""
        # Gating on the whole window, not the newest hop, lets an utterance be heard whole (centred,
        # as in training) after it ends; the label falls back to silence once it leaves the window.
        level = loudest_block_db(window, self.gate_samples)
        config = self.predictor.config
        try:
            if level < self.silence_db:
                raise features.SkipClip("silent")
            X = features.waveform_features(features.resample(window, self.device_rate, config.sample_rate), config)
        except features.SkipClip:  # below the gate, or (with a very low --silence-db) digital silence
            self.smoother.reset()
            return Hop(time_s, SILENCE, None, level)
        p = self.smoother(self.predictor(X[np.newaxis])[0])
        return Hop(time_s, self.predictor.labels[int(p.argmax())], p, level)


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
    """A TFLiteModel or OnnxModel for an exported file, by its suffix. Raises ModelFileError if it is missing
    or unreadable."""
    path = Path(path)
    if not path.is_file():
        flag = {ONNX_FILE: " --onnx", TFLITE_INT8_FILE: " --int8"}.get(path.name, "")
        raise ModelFileError(f"no exported model at {path}; write it with: python export_model.py "
                            f"--model-dir {path.parent}{flag}")
    try:
        return OnnxModel(path) if path.suffix == ".onnx" else TFLiteModel(path)
    except Exception as e:  # noqa: BLE001 - the runtimes raise many kinds for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"cannot load {path}: {reason[:200]}") from None
