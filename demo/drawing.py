"""The demo's clips and pictures: espeak-ng clips, and one figure a file of what the model hears.

Every picture is FIGSIZE at DPI. make_demo.py is the command line over these functions.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import librosa.display  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import features  # noqa: E402
import inference  # noqa: E402
import pretrained  # noqa: E402
from config import DEFAULT_RECIPE, RECIPES, FeatureConfig  # noqa: E402
from fileio import atomic_output  # noqa: E402

DPI = 100
FIGSIZE = (10, 4)  # inches: every picture is 1000 x 400 pixels

# (file stem, espeak-ng voice, pitch 0-99, words per minute, amplitude 0-200, text)
CLIPS = [
    ("plain", "en-us", 50, 160, 100, "Kids are talking by the door."),
    ("high-fast-loud", "en-us", 85, 230, 190, "Kids are talking by the door!"),
    ("low-slow-quiet", "en-us", 15, 110, 40, "Kids are talking by the door."),
    ("female-voice", "en-us+f3", 60, 170, 120, "Dogs are sitting by the door."),
    ("deep-emphatic", "en-us+m3", 25, 140, 170, "Dogs are sitting by the door!"),
    ("say-the-word", "en-gb", 45, 150, 100, "Say the word youth."),
]


class DemoError(Exception):
    """Something the user has to fix: a missing tool or file."""


def synthesise_clips(out_dir: Path) -> list[Path]:
    """CLIPS as 16-bit mono WAV files at espeak-ng's own 22,050 Hz in out_dir. Raises DemoError without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        raise DemoError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, voice, pitch, rate, amplitude, text in CLIPS:
        path = out_dir / f"{stem}.wav"
        with atomic_output(path) as tmp:
            subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "-a", str(amplitude),
                            "-w", str(tmp), text], check=True, capture_output=True)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Pictures: each takes arrays of known shape and writes one PNG of FIGSIZE at DPI.


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def plot_waveform(y: np.ndarray, sample_rate: int, path: Path, title: str = "",
                  window: tuple[float, float] | None = None) -> Path:
    """y (n,) at sample_rate against seconds; `window` (start s, end s) is shaded."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    librosa.display.waveshow(y, sr=sample_rate, ax=ax, color="tab:blue")
    if window is not None:
        ax.axvspan(*window, color="tab:orange", alpha=0.15, label="the model's window")
        ax.legend(loc="upper right")
    ax.set(xlabel="time (s)", ylabel="amplitude", title=title or "waveform")
    return save(fig, path)


def plot_mfcc(mfcc: np.ndarray, config: FeatureConfig, path: Path, title: str = "") -> Path:
    """MFCCs (frames, n_mfcc), as features.mfcc_sequence returns them, against seconds."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    image = librosa.display.specshow(mfcc.T, sr=config.sample_rate, hop_length=config.hop_length, x_axis="s",
                                     ax=ax, cmap="coolwarm")
    ax.set(xlabel="time (s)", ylabel="MFCC coefficient",
           title=title or f"{mfcc.shape[1]} MFCCs, as the model sees them")
    ax.set_yticks(np.arange(mfcc.shape[1]) + 0.5, labels=[str(i) for i in range(mfcc.shape[1])])
    fig.colorbar(image, ax=ax, label="value")
    return save(fig, path)


def plot_log_mel(log_mel: np.ndarray, config: FeatureConfig, path: Path, title: str = "") -> Path:
    """A log-mel spectrogram (n_mels, frames) in dB, as features.log_mel_spectrogram returns it, against
    seconds and Hz."""
    return plot_mel_bands(log_mel, config, path, title or f"log-mel spectrogram, {log_mel.shape[0]} bands",
                          cmap="magma", format="%+.0f dB")


def plot_mel_bands(bands: np.ndarray, config: FeatureConfig, path: Path, title: str, cmap: str,
                   **colorbar) -> Path:
    """An image of mel bands (n_mels, frames) against seconds and Hz; colorbar: matplotlib's colorbar options."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    image = librosa.display.specshow(bands, sr=config.sample_rate, hop_length=config.hop_length, x_axis="s",
                                     y_axis="mel", ax=ax, cmap=cmap)
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)", title=title)
    fig.colorbar(image, ax=ax, **colorbar)
    return save(fig, path)


def plot_probabilities(probabilities: dict[str, float], path: Path, title: str = "") -> Path:
    """A bar per class, the most likely one highlighted."""
    labels, p = list(probabilities), np.array(list(probabilities.values()))
    fig, ax = plt.subplots(figsize=FIGSIZE)
    colours = ["tab:orange" if i == p.argmax() else "tab:blue" for i in range(len(p))]
    ax.bar(labels, p, color=colours)
    for i, value in enumerate(p):
        ax.text(i, value + 0.01, f"{value:.2f}", ha="center", va="bottom")
    ax.set(ylim=(0, 1.1), ylabel="probability", title=title or "class probabilities")
    return save(fig, path)


def plot_encoder_frames(frames: np.ndarray, config: FeatureConfig, path: Path, title: str) -> Path:
    """The Whisper encoder's frames (frames, width), 50 a second, against seconds: each feature standardised over
    the window, since their scales differ."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    z = (frames - frames.mean(axis=0)) / (frames.std(axis=0) + 1e-6)
    image = ax.imshow(z.T, aspect="auto", origin="lower", cmap="coolwarm", vmin=-3, vmax=3,
                      extent=(0, len(frames) * 2 * config.hop_length / config.sample_rate, 0, frames.shape[1]))
    ax.set(xlabel="time (s)", ylabel="encoder feature", title=title)
    fig.colorbar(image, ax=ax, format="%+.0f σ")
    return save(fig, path)


def plot_heard(window: np.ndarray, config: FeatureConfig, out_dir: Path, stem: str, name: str) -> list[Path]:
    """What the model hears of the window (config.n_samples) of the file called name: its MFCCs and log-mel
    spectrogram, or Whisper's own log-mel and the encoder's frames for the pretrained front end. Files
    <stem>_mfcc.png and <stem>_logmel.png, or <stem>_whisper_logmel.png and <stem>_encoder.png, in out_dir."""
    if config.frontend == "whisper":
        frames = pretrained.encoder_frames(window, pretrained.config_encoder(config))
        return [plot_mel_bands(pretrained.log_mel(window), config, out_dir / f"{stem}_whisper_logmel.png",
                               f"{name}: Whisper's log-mel ({config.n_mels} bands) of the model's "
                               f"{config.window_s:g} s window", cmap="magma"),
                plot_encoder_frames(frames, config, out_dir / f"{stem}_encoder.png",
                                    f"{name}: the Whisper encoder's {frames.shape[1]} features, 50 a second "
                                    f"(eGeMAPS beside them)")]
    sees = f"the model's {config.window_s:g} s window" + (" (it also sees their deltas)" if config.deltas else "")
    return [plot_mfcc(features.mfcc_sequence(window, config), config, out_dir / f"{stem}_mfcc.png",
                      f"{name}: {config.n_mfcc} MFCCs of {sees}"),
            plot_log_mel(features.log_mel_spectrogram(window, config), config, out_dir / f"{stem}_logmel.png",
                         f"{name}: log-mel spectrogram ({config.n_mels} bands) of the same window")]


def plot_clip(path: Path, out_dir: Path, config: FeatureConfig) -> list[Path]:
    """The waveform and what the model hears of one audio file (plot_heard), as <stem>_<kind>.png in out_dir.

    Raises features.SkipClip for a file that is unreadable or silent.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    y = features.load_audio(path, config.sample_rate)
    window = features.model_window(y, config)
    start = window_start_s(y, window, config)
    name, stem = Path(path).name, Path(path).stem
    waveform = plot_waveform(y / np.max(np.abs(y)), config.sample_rate, out_dir / f"{stem}_waveform.png",
                             f"{name}: waveform at {config.sample_rate} Hz, peak-normalised",
                             window=(start, start + config.window_s))
    return [waveform, *plot_heard(window, config, out_dir, stem, name)]


def window_start_s(y: np.ndarray, window: np.ndarray, config: FeatureConfig) -> float:
    """Where in y (seconds) features.model_window starts: after trimming, centred; negative if padded."""
    start, stop = features.trimmed_span(y, config)
    return (start + features.centred_start(stop - start, len(window))) / config.sample_rate


def plot_predictions(paths: list[Path], out_dir: Path, predictor, model_name: str) -> list[Path]:
    """<stem>_probabilities.png for each file: what an inference.Predictor says, as predict_live.py --file."""
    results, skipped = inference.classify_files(paths, predictor)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    return [plot_probabilities(r["probabilities"], out_dir / f"{Path(r['path']).stem}_probabilities.png",
                               f"{Path(r['path']).name}: {r['label']} ({model_name})") for r in results]


# ---------------------------------------------------------------------------------------------
# README figures


def run_script(script: str, *args) -> None:
    """Run one of the project's scripts as a user would, its output shown. Raises DemoError if it fails."""
    done = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)])
    if done.returncode != 0:
        raise DemoError(f"{script} {' '.join(map(str, args))} failed (exit status {done.returncode})")


def clip_pictures(paths: list[Path], out_dir: Path, saved=None, model_name: str = "") -> list[Path]:
    """plot_clip's pictures of each file in out_dir, and with a model.SavedModel (called model_name) its
    probabilities too. Unreadable or silent files are skipped and named."""
    config = saved.config if saved is not None else RECIPES[DEFAULT_RECIPE].features
    written = []
    for path in paths:
        try:
            written += plot_clip(path, out_dir, config)
        except features.SkipClip as skip:
            print(f"skipped {path}: {skip}")
    if saved is not None:
        written += plot_predictions(paths, out_dir, inference.Predictor(saved), model_name)
    return written


def readme_figures(data_dir: str, work_dir: Path, out_dir: Path, clips_dir: Path) -> list[Path]:
    """Train and evaluate the default recipe on both splits and copy the README's pictures to out_dir,
    with the first demo clip's waveform and what the model hears of it (plot_heard)."""
    import modeldir
    clip = clips_dir / f"{CLIPS[0][0]}.wav"
    if not clip.is_file():
        raise DemoError(f"no demo clip at {clip}; make the clips first: python demo/make_demo.py")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in ["random", "speaker"]:
        model_dir = work_dir / f"default-{split}"
        run_script("train_model.py", "--data-dir", data_dir, "--model-dir", model_dir, "--split", split,
                   "--overwrite")
        run_script("test_model.py", "--model-dir", model_dir)
        for name in ["training_curves.png", "confusion_matrix.png"]:
            target = out_dir / f"{Path(name).stem}_{split}.png"
            shutil.copyfile(model_dir / name, target)
            written.append(target)
    config = modeldir.load_model_dir(work_dir / "default-random").config
    for picture in plot_clip(clip, work_dir / "pictures", config):
        target = out_dir / picture.name.replace(f"{clip.stem}_", "")
        shutil.copyfile(picture, target)
        written.append(target)
    return written
