"""Hear emotions live from a microphone, or classify audio files, with a model dir from train_model.py.

    python predict_live.py --model-dir models/seed-cnn                      # default input, until Ctrl-C
    python predict_live.py --list-devices
    python predict_live.py --device 3 --duration 30 --log live.csv
    python predict_live.py --file clip.wav other.flac folder/ --output results.csv
    python predict_live.py --file archive/ --output results.parquet --scheduler tcp://10.0.0.5:8786
    python predict_live.py --tflite            # the model exported by export_model.py, through LiteRT

Live: every --hop seconds the last window (the model's own length) is classified. The
device is opened at its own default rate and resampled to the model's in software, with
the same feature code as training. Windows whose loudest 0.5 s is below --silence-db
show "silence".

Files: with --output, each partition of files is saved as it finishes, and a second run with
the same --output skips the files already in it. --scheduler runs the partitions on a Dask
cluster (or on local:N worker processes) that sees the files at the same paths.
"""
import argparse
import csv
import logging
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from batch import OUTPUT_FORMATS, output_format
from cli import add_encoder_argument, add_scheduler_arguments, output_file
from inference import (
    DEFAULT_HOP_S,
    DEFAULT_SILENCE_DB,
    DEFAULT_SMOOTHING,
    ONNX_FILE,
    SILENCE,
    TFLITE_FILE,
    Hop,
    LiveClassifier,
    LiveError,
    ModelFileError,
    Predictor,
    expand_paths,
)


class RingBuffer:
    """The most recent `size` samples of a stream. `write` is safe to call from the audio callback."""

    def __init__(self, size: int):
        self.data = np.zeros(size, dtype=np.float32)
        self.total = 0  # samples written since the start
        self.heard = False  # whether any sample so far was not exactly zero
        self.lock = threading.Lock()

    def write(self, frames: np.ndarray) -> None:
        self.heard = self.heard or bool(frames.any())
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


# A microphone the system does not let us use (macOS without the terminal's permission) still opens,
# and delivers exact zeros; a real one always has some noise.
ZEROS_WARNING_S = 5.0
ZEROS_WARNING = (f"warning: the input has delivered only exact zeros for {ZEROS_WARNING_S:g} s; on macOS, allow your "
                 "terminal to use the microphone (System Settings > Privacy & Security > Microphone) and start again")


# A stream that delivers nothing for this long has stopped (device unplugged, server gone).
STALL_S = 5.0


def import_sounddevice():
    """The sounddevice module, or LiveError if PortAudio is missing."""
    try:
        import sounddevice
    except OSError:
        # sounddevice's macOS and Windows wheels carry their own PortAudio; Linux uses the system's.
        raise LiveError("PortAudio library not found; install it "
                        "(Debian/Ubuntu: apt-get install libportaudio2)") from None
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
    bars = [f"  {name:10} {'█' * round(v * width):{width}} {v:4.2f}" for name, v in zip(labels, p, strict=True)]
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
    hops, drawn, warned, stalled = [], 0, False, False
    print(f"listening on {info['name']} at {rate} Hz, hop {args.hop} s; Ctrl-C to stop", flush=True)
    try:
        with sd.InputStream(device=info["index"], channels=1, samplerate=rate, dtype="float32", callback=callback):
            next_hop, last_total, last_news = live.hop_samples, 0, time.monotonic()
            while args.duration is None or ring.total < args.duration * rate:
                if ring.total != last_total:
                    last_total, last_news = ring.total, time.monotonic()
                elif time.monotonic() - last_news > STALL_S:
                    stalled = True
                    break
                if not warned and not ring.heard and ring.total >= ZEROS_WARNING_S * rate:
                    print(ZEROS_WARNING, file=sys.stderr, flush=True)
                    warned = True
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
    if stalled:
        raise LiveError(f"the input stream delivered no audio for {STALL_S:g} s; was {info['name']} unplugged "
                        f"or taken by another program?")
    return hops


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/latest")
    add_encoder_argument(p)
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--device", help="input device index or part of its name (default: the system default)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--hop", type=float, default=DEFAULT_HOP_S, help="seconds between predictions (default 0.5)")
    p.add_argument("--silence-db", type=float, default=DEFAULT_SILENCE_DB,
                   help=f"windows whose loudest 0.5 s is below this RMS level show silence "
                        f"(default {DEFAULT_SILENCE_DB} dBFS)")
    p.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING,
                   help="weight of past hops in the shown probabilities, 0 = raw (default 0.5)")
    p.add_argument("--log", type=output_file, help="write a CSV row per hop")
    p.add_argument("--file", nargs="+", help="classify these files and folders instead of listening")
    p.add_argument("--output", type=results_file,
                   help="with --file: write results as .csv, .json or .parquet; files already in it are skipped")
    add_scheduler_arguments(p, "with --file: classify")
    runtime = p.add_mutually_exclusive_group()
    runtime.add_argument("--tflite", nargs="?", type=Path, const=TFLITE_FILE, metavar="FILE",
                         help="run the exported TFLite model through LiteRT instead of Keras "
                              f"(default file: {TFLITE_FILE} in --model-dir)")
    runtime.add_argument("--onnx", nargs="?", type=Path, const=ONNX_FILE, metavar="FILE",
                         help=f"run the exported ONNX model through onnxruntime (default: {ONNX_FILE})")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    if not 0 <= args.smoothing < 1:
        p.error("--smoothing must be in [0, 1)")
    if args.scheduler and not args.file:
        p.error("--scheduler needs --file")
    try:
        paths = expand_paths(args.file) if args.file else None  # before the model loads: a typo fails at once
    except LiveError as e:
        sys.exit(f"error: {e}")
    import modeldir  # once the arguments are good: TensorFlow takes seconds to load
    errors = (LiveError, modeldir.ModelDirError, ModelFileError)
    if args.file:
        import batch
        import cluster
        errors += (batch.ResultsFileError, cluster.ClusterError)
    try:
        if args.list_devices:
            devices = import_sounddevice().query_devices()
            print(devices if any(d["max_input_channels"] > 0 for d in devices) else "no input devices")
            return None
        if args.file:
            return run_files(args, paths, load_predictor(args))
        sd = import_sounddevice()
        info = input_device(sd, args.device)  # before the model loads, so a bad device fails fast
        return run_live(args, sd, info, load_predictor(args))
    except errors as e:
        sys.exit(f"error: {e}")


def results_file(text: str) -> Path:
    """argparse type: an output_file whose suffix says its format (batch.output_format)."""
    path = output_file(text)
    if output_format(path) is None:
        raise argparse.ArgumentTypeError(f"{path.name}: name a {', '.join(OUTPUT_FORMATS)} file")
    return path


def load_predictor(args) -> Predictor:
    """The Predictor of --model-dir, run by Keras or the runtime that --tflite/--onnx name (exported_file)."""
    import modeldir
    return Predictor(modeldir.load_model_dir(args.model_dir, args.encoder_dir), exported_file(args))


def exported_file(args) -> Path | None:
    """The exported model that --tflite/--onnx name: a bare file name is in --model-dir, a path is as given."""
    exported = args.tflite or args.onnx
    if exported is not None and exported.parent == Path("."):
        exported = Path(args.model_dir) / exported
    return exported


def run_files(args, paths: list[Path], predictor: Predictor):
    """Classify the files (batch.classify_many) and print a line per file, or, on a cluster, a summary.
    Returns the results table. Ctrl-C saves what is done, says so in one line, and exits with status 130."""
    import batch
    import cluster
    client = cluster.connect(args.scheduler, args.scheduler_timeout) if args.scheduler else None
    try:
        table, skipped = batch.classify_many(paths, predictor, args.model_dir, exported_file(args), args.output,
                                             client)
    except batch.Interrupted as e:
        print(e, file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if client is not None:
            client.close()
    if client is None:
        width = max([len(p) for p in table["path"]] + [4])
        print(f"{'file':{width}}  {'emotion':9}  p")
        for path, label, p in zip(table["path"], table["label"], table[predictor.labels].max(axis=1), strict=True):
            print(f"{path:{width}}  {label:9}  {p:.2f}")
    else:
        print(f"classified {len(table)} of {len(paths)} files on {args.scheduler}")
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if args.output:
        print(f"wrote {args.output}")
    return table


if __name__ == "__main__":
    main()
