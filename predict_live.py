"""Hear emotions live from a microphone, or classify audio files, with a model dir from train_model.py.

    python predict_live.py --model-dir models/seed-cnn                      # default input, until Ctrl-C
    python predict_live.py --list-devices
    python predict_live.py --device 3 --duration 30 --log live.csv
    python predict_live.py --file clip.wav other.flac folder/ --output results.csv
    python predict_live.py --tflite            # the model exported by export_model.py, through LiteRT

Live: every --hop seconds the last window (the model's own length) is classified. The
device is opened at its own default rate and resampled to the model's in software, with
the same feature code as training. Windows whose loudest 0.5 s is below --silence-db
show "silence".
"""
import argparse
import csv
import json
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import features
import model as models

SILENCE = "silence"
# Loudest 0.5 s of a corpus clip: above -48 dBFS for 95% of RAVDESS and 100% of TESS (see README).
DEFAULT_SILENCE_DB = -50.0
GATE_BLOCK_S = 0.5  # the gate compares the loudest block of this length in the window
DEFAULT_HOP_S = 0.5
DEFAULT_SMOOTHING = 0.5
FILE_WINDOW_STEP = 0.5  # windows over a long file overlap by half


class LiveError(Exception):
    """Something about the audio input that the user has to fix."""


def level_db(y: np.ndarray) -> float:
    """RMS level of y in dB relative to full scale, floored at -120."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    return max(20 * np.log10(rms + 1e-12), -120.0)


def loudest_block_db(y: np.ndarray, block: int) -> float:
    """level_db of the loudest of the consecutive `block`-sample pieces that end at the end of y."""
    n = len(y) // block
    return max(level_db(piece) for piece in y[len(y) - n * block:].reshape(n, block))


class RunningStandardiser:
    """Per-session speaker normalisation for live input: standardises each window by running
    per-feature mean and variance of the session's non-silent windows so far.

    The first windows weigh equally; after `memory` windows older ones fade, so a new speaker
    takes over within about memory * hop seconds.
    """

    def __init__(self, memory: int = 40):
        self.memory, self.n, self.mean, self.mean_sq = memory, 0, None, None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """X (frames, features) standardised by the statistics including X itself."""
        self.n += 1
        w = max(1 / self.n, 1 / self.memory)
        m, sq = X.mean(axis=0), np.square(X).mean(axis=0)
        self.mean = m if self.mean is None else (1 - w) * self.mean + w * m
        self.mean_sq = sq if self.mean_sq is None else (1 - w) * self.mean_sq + w * sq
        std = np.sqrt(np.maximum(self.mean_sq - np.square(self.mean), 0))
        return ((X - self.mean) / (std + 1e-6)).astype(np.float32)


class Predictor:
    """Class probabilities from a saved model, run by Keras or from an exported .tflite/.onnx file.

    Keras' `predict_on_batch` runs its compiled predict function: about 1 ms a hop here, against
    about 9 ms for an eager `model(x)` and 75 ms for `model.predict` (bench/bench_live.py).
    """

    def __init__(self, saved: models.SavedModel, exported: Path | None = None):
        self.labels, self.config = saved.labels, saved.config
        self.speaker_norm = bool(saved.metadata.get("speaker_norm"))
        self.run = models.load_exported(exported) if exported else saved.model.predict_on_batch

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for features X (n, frames, coefficients)."""
        return np.asarray(self.run(X))


# ---------------------------------------------------------------------------------------------
# Files


def file_windows(y: np.ndarray, config: features.FeatureConfig) -> np.ndarray:
    """Features (n_windows, frames, coefficients) of a clip at config.sample_rate.

    A clip up to half a step longer than the window gets the centre window, as in training;
    longer clips get evenly spaced windows, FILE_WINDOW_STEP of a window apart, end to end.
    Silent windows are left out; raises SkipClip("silent") if all are.
    """
    n = config.n_samples
    k = round((len(y) - n) / (n * FILE_WINDOW_STEP)) if len(y) > n else 0
    starts = np.linspace(0, len(y) - n, k + 1).round().astype(int) if k else [None]
    windows = []
    for start in starts:
        try:
            windows.append(features.waveform_features(y if start is None else y[start:start + n], config))
        except features.SkipClip:
            continue
    if not windows:
        raise features.SkipClip("silent")
    return np.stack(windows)


def speaker_of(path: Path) -> str:
    """The speaker a corpus file name tells (ravdess-07, tess-OAF), else "session" for all other files."""
    fields = features.parse_ravdess_name(path.stem) or features.parse_tess_name(path.stem)
    return fields["speaker"] if isinstance(fields, dict) else "session"


def classify_files(paths: list[Path], predictor: Predictor) -> tuple[list[dict], list[tuple[str, str]]]:
    """One result per readable file ({path, label, probabilities, windows}), and (path, reason) skips.

    For speaker-normalised models the windows of all files of one speaker (by corpus file name;
    other files count as one speaker) are standardised together, as in training.
    """
    windows, skipped = {}, []
    for path in paths:
        try:
            windows[path] = file_windows(features.load_audio(path, predictor.config.sample_rate), predictor.config)
        except features.SkipClip as skip:
            skipped.append((str(path), str(skip)))
    if not windows:
        return [], skipped
    X = np.concatenate(list(windows.values()))
    owner = np.repeat(np.arange(len(windows)), [len(w) for w in windows.values()])
    if predictor.speaker_norm:
        X = features.standardise_per_speaker(X, [speaker_of(p) for p in windows for _ in windows[p]])
    P = predictor(X)
    results = []
    for i, path in enumerate(windows):
        p = P[owner == i].mean(axis=0)
        results.append({"path": str(path), "label": predictor.labels[int(p.argmax())],
                        "probabilities": dict(zip(predictor.labels, map(float, p))), "windows": int((owner == i).sum())})
    return results, skipped


def expand_paths(args: list[str]) -> list[Path]:
    """Files as given, and the audio files inside folders. Raises LiveError for a path that does not exist."""
    out = []
    for arg in map(Path, args):
        if arg.is_dir():
            out += features.audio_files(arg)
        elif arg.exists():
            out.append(arg)
        else:
            raise LiveError(f"no such file or folder: {arg}")
    return out


def write_results(results: list[dict], labels: list[str], path: Path) -> None:
    """Results as .json, or as .csv with one probability column per label."""
    with features.atomic_output(path) as tmp:
        if path.suffix.lower() == ".json":
            tmp.write_text(json.dumps(results, indent=2))
            return
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "windows", *labels])
            for r in results:
                w.writerow([r["path"], r["label"], r["windows"], *(f"{r['probabilities'][c]:.4f}" for c in labels)])


# ---------------------------------------------------------------------------------------------
# Live


class RingBuffer:
    """The most recent `size` samples of a stream. `write` is safe to call from the audio callback."""

    def __init__(self, size: int):
        self.data = np.zeros(size, dtype=np.float32)
        self.total = 0  # samples written since the start
        self.lock = threading.Lock()

    def write(self, frames: np.ndarray) -> None:
        frames = frames[-len(self.data):]
        with self.lock:
            start = self.total % len(self.data)
            first = min(len(frames), len(self.data) - start)
            self.data[start:start + first] = frames[:first]
            self.data[:len(frames) - first] = frames[first:]
            self.total += len(frames)

    def latest(self, n: int) -> np.ndarray:
        """The last n samples, oldest first (zeros before the stream had n)."""
        with self.lock:
            end = self.total % len(self.data)
            return np.roll(self.data, -end)[-n:].copy()


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
        self.standardise = RunningStandardiser() if predictor.speaker_norm else None

    def warm_up(self) -> None:
        """Pay the first call's costs (librosa's numba compilation, TensorFlow tracing) before streaming.

        Paid inside the stream, they hold the GIL for seconds and the audio callback loses input.
        """
        tone = 0.1 * np.sin(np.linspace(0, 2000, self.window_samples, dtype=np.float32))
        standardise, self.standardise = self.standardise, None  # the tone must not enter the statistics
        self(tone, 0.0)
        self.standardise = standardise
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
        if self.standardise is not None:
            X = self.standardise(X)
        p = self.smoother(self.predictor(X[np.newaxis])[0])
        return Hop(time_s, self.predictor.labels[int(p.argmax())], p, level)


def import_sounddevice():
    """The sounddevice module, or LiveError if PortAudio is missing."""
    try:
        import sounddevice
    except OSError:
        raise LiveError("PortAudio library not found; install it (Debian/Ubuntu: apt-get install libportaudio2, "
                        "macOS: brew install portaudio)") from None
    return sounddevice


def input_device(sd, device: str | None) -> dict:
    """sounddevice's description of the chosen input device (index, name or None for the default)."""
    devices = sd.query_devices()
    if device is None:
        index = sd.default.device[0]
        if index is None or index < 0 or devices[index]["max_input_channels"] < 1:
            raise LiveError("no input device found: connect a microphone, or pick a device with --device "
                            "(see --list-devices)")
    elif device.isdigit():
        index = int(device)
        if index >= len(devices):
            raise LiveError(f"no device {index}: there are {len(devices)} (0-{len(devices) - 1}); "
                            f"see --list-devices")
    else:
        matches = [d["index"] for d in devices if device.lower() in d["name"].lower() and d["max_input_channels"]]
        if not matches:
            raise LiveError(f"no input device named like {device!r}; see --list-devices")
        index = matches[0]
    if devices[index]["max_input_channels"] < 1:
        raise LiveError(f"device {index} ({devices[index]['name']}) has no input channels; see --list-devices")
    return devices[index]


def hop_line(hop: Hop) -> str:
    """One plain line per hop, for logs and pipes."""
    if hop.probabilities is None:
        return f"{hop.time_s:7.2f}s  {SILENCE:9}  level {hop.level_db:6.1f} dB"
    top = float(hop.probabilities.max())
    return f"{hop.time_s:7.2f}s  {hop.label:9} {top:.2f}  level {hop.level_db:6.1f} dB"


def hop_block(hop: Hop, labels: list[str], width: int = 30) -> list[str]:
    """The terminal view: the top emotion, then a bar per class."""
    head = f"{hop.time_s:7.1f}s  {hop.label.upper():10} level {hop.level_db:6.1f} dB"
    p = hop.probabilities if hop.probabilities is not None else np.zeros(len(labels))
    bars = [f"  {name:10} {'█' * round(v * width):{width}} {v:4.2f}" for name, v in zip(labels, p)]
    return [head, *bars]


class HopLog:
    """--log: a CSV row per hop (time, label, a probability per class, level), flushed as it goes."""

    def __init__(self, path: Path, labels: list[str]):
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["time_s", "label", *labels, "level_db"])
        self.n_labels = len(labels)

    def write(self, hop: Hop) -> None:
        p = hop.probabilities if hop.probabilities is not None else [np.nan] * self.n_labels
        self.writer.writerow([f"{hop.time_s:.3f}", hop.label, *(f"{v:.4f}" for v in p), f"{hop.level_db:.1f}"])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def summary_line(hops: list[Hop], hop_s: float, overflows: int) -> str:
    seconds = Counter()
    for hop in hops:
        seconds[hop.label] += hop_s
    spent = ", ".join(f"{label} {s:.1f} s" for label, s in seconds.most_common())
    return f"{len(hops)} hops ({len(hops) * hop_s:.1f} s){': ' + spent if spent else ''}; {overflows} input overflows"


def run_live(args, sd, info: dict, predictor: Predictor) -> list[Hop]:
    """Stream from the input device `info` (from input_device) until --duration or Ctrl-C."""
    rate = int(info["default_samplerate"])
    live = LiveClassifier(predictor, rate, args.hop, args.silence_db, args.smoothing)
    ring = RingBuffer(live.window_samples)
    overflows = 0
    live.warm_up()

    def callback(indata, frames, time_info, status):
        nonlocal overflows
        overflows += bool(status.input_overflow)
        ring.write(indata[:, 0])

    log = HopLog(args.log, predictor.labels) if args.log else None
    on_tty = sys.stdout.isatty()
    hops, drawn = [], 0
    print(f"listening on {info['name']} at {rate} Hz, hop {args.hop} s; Ctrl-C to stop", flush=True)
    try:
        with sd.InputStream(device=info["index"], channels=1, samplerate=rate, dtype="float32", callback=callback):
            start, next_hop = time.monotonic(), live.hop_samples
            while args.duration is None or ring.total < args.duration * rate:
                if args.duration is not None and time.monotonic() - start > args.duration + 5:
                    print("the input stream stopped delivering audio", file=sys.stderr)
                    break
                if ring.total < next_hop:
                    time.sleep(0.005)
                    continue
                hop = live(ring.latest(live.window_samples), ring.total / rate)
                next_hop = max(next_hop + live.hop_samples, ring.total - live.hop_samples // 2)
                hops.append(hop)
                if log:
                    log.write(hop)
                if on_tty:
                    block = hop_block(hop, predictor.labels)
                    sys.stdout.write(f"\x1b[{drawn}F" if drawn else "")
                    sys.stdout.write("".join(f"{line}\x1b[K\n" for line in block))
                    drawn = len(block)
                else:
                    print(hop_line(hop))
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except sd.PortAudioError as e:
        raise LiveError(f"cannot record from {info['name']}: {e}") from None
    finally:
        if log:
            log.close()
    print(summary_line(hops, args.hop, overflows))
    return hops


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/latest")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--device", help="input device index or part of its name (default: the system default)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--hop", type=float, default=DEFAULT_HOP_S, help="seconds between predictions (default 0.5)")
    p.add_argument("--silence-db", type=float, default=DEFAULT_SILENCE_DB,
                   help=f"windows whose loudest 0.5 s is below this RMS level show silence "
                        f"(default {DEFAULT_SILENCE_DB} dBFS)")
    p.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING,
                   help="weight of past hops in the shown probabilities, 0 = raw (default 0.5)")
    p.add_argument("--log", type=Path, help="write a CSV row per hop")
    p.add_argument("--file", nargs="+", help="classify these files and folders instead of listening")
    p.add_argument("--output", type=Path, help="with --file: write results as .csv or .json")
    runtime = p.add_mutually_exclusive_group()
    runtime.add_argument("--tflite", nargs="?", type=Path, const=models.TFLITE_FILE, metavar="FILE",
                         help="run the exported TFLite model through LiteRT instead of Keras "
                              f"(default file: {models.TFLITE_FILE} in --model-dir)")
    runtime.add_argument("--onnx", nargs="?", type=Path, const=models.ONNX_FILE, metavar="FILE",
                         help=f"run the exported ONNX model through onnxruntime (default: {models.ONNX_FILE})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not 0 <= args.smoothing < 1:
        p.error("--smoothing must be in [0, 1)")
    try:
        if args.list_devices:
            print(import_sounddevice().query_devices())
            return None
        if args.file:
            return run_files(args, load_predictor(args))
        sd = import_sounddevice()
        info = input_device(sd, args.device)  # before the model loads, so a bad device fails fast
        return run_live(args, sd, info, load_predictor(args))
    except (LiveError, models.ModelDirError) as e:
        sys.exit(f"error: {e}")


def load_predictor(args) -> Predictor:
    """The Predictor of --model-dir, run by Keras or the runtime that --tflite/--onnx name.

    A bare file name is looked for in --model-dir; a path with folders is taken as given."""
    exported = args.tflite or args.onnx
    if exported is not None and exported.parent == Path("."):
        exported = Path(args.model_dir) / exported
    return Predictor(models.load_model_dir(args.model_dir), exported)


def run_files(args, predictor: Predictor) -> list[dict]:
    results, skipped = classify_files(expand_paths(args.file), predictor)
    width = max([len(r["path"]) for r in results] + [4])
    print(f"{'file':{width}}  {'emotion':9}  p")
    for r in results:
        print(f"{r['path']:{width}}  {r['label']:9}  {r['probabilities'][r['label']]:.2f}")
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if args.output:
        write_results(results, predictor.labels, args.output)
        print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
