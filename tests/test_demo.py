"""demo/make_demo.py: example clips, per-clip pictures and probability charts, on synthesised audio."""
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import features as F
from config import EMOTIONS, WHISPER_FEATURES, FeatureConfig
from conftest import ROOT, run_script

sys.path.insert(0, str(ROOT / "demo"))
import drawing  # noqa: E402

PICTURE_PIXELS = (drawing.FIGSIZE[0] * drawing.DPI, drawing.FIGSIZE[1] * drawing.DPI)
CONFIG = FeatureConfig()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def vowel(seconds: float, sample_rate: int = 22050, f0: float = 140.0) -> np.ndarray:
    """A voiced, vowel-like sound: harmonics of f0 under a smooth envelope, peak 0.5."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 15)) * np.hanning(len(t))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def test_each_plot_writes_one_picture_of_the_expected_size(tmp_path):
    y = vowel(1.5)
    window = F.model_window(y, CONFIG)
    mfcc, log_mel = F.mfcc_sequence(window, CONFIG), F.log_mel_spectrogram(window, CONFIG)
    assert mfcc.shape == (130, 13) and log_mel.shape == (128, 130)
    pictures = [
        drawing.plot_waveform(y, 22050, tmp_path / "w.png", window=(-0.75, 2.25)),
        drawing.plot_mfcc(mfcc, CONFIG, tmp_path / "m.png"),
        drawing.plot_log_mel(log_mel, CONFIG, tmp_path / "l.png"),
        drawing.plot_probabilities(dict(zip(EMOTIONS, np.full(8, 1 / 8), strict=True)), tmp_path / "p.png"),
    ]
    for picture in pictures:
        assert picture.stat().st_size > 5_000 and png_size(picture) == PICTURE_PIXELS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.png", "m.png", "p.png", "w.png"]


def test_clip_pictures_show_the_frames_the_model_hears(tmp_path):
    clip = tmp_path / "v.wav"
    sf.write(clip, vowel(2.0), 22050)
    pictures = drawing.plot_clip(clip, tmp_path, FeatureConfig(n_mels=64))
    assert [p.name for p in pictures] == [f"v_{kind}.png" for kind in ("waveform", "mfcc", "logmel")]
    assert all(png_size(p) == PICTURE_PIXELS for p in pictures)
    # The pretrained front end: the log-mel Whisper hears, and its encoder's frames.
    pictures = drawing.plot_clip(clip, tmp_path / "whisper", WHISPER_FEATURES)
    assert [p.name for p in pictures] == [f"v_{kind}.png" for kind in ("waveform", "whisper_logmel", "encoder")]
    assert all(png_size(p) == PICTURE_PIXELS and p.stat().st_size > 5_000 for p in pictures)


def test_the_shaded_window_is_the_one_the_model_hears():
    sr = CONFIG.sample_rate
    y = np.concatenate([np.zeros(sr), vowel(1.0), np.zeros(2 * sr)])
    for config in [CONFIG, FeatureConfig(trim_db=30)]:
        window = F.model_window(y, config)
        start = round(drawing.window_start_s(y, window, config) * sr)
        heard = window != 0  # trimming drops the quiet ends, which the shaded span of the clip still shows
        assert heard.sum() > 0.25 * config.n_samples
        assert np.array_equal(window[heard], (y / np.abs(y).max())[start:start + config.n_samples][heard])
    short = vowel(1.0)  # padded: the window starts before the clip
    assert drawing.window_start_s(short, F.model_window(short, CONFIG), CONFIG) == pytest.approx(-1.0, abs=1e-3)


def test_demo_plots_a_users_file_with_a_models_probabilities(brief_model, tmp_path):
    clip = tmp_path / "my clip.wav"
    sf.write(clip, vowel(2.0, 48000), 48000)
    out = tmp_path / "pictures"
    result = run_script("demo/make_demo.py", "--plot", clip, "--out", out, "--model-dir", brief_model[0])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"my clip_{kind}.png" for kind in ["encoder", "probabilities", "waveform", "whisper_logmel"]]
    for name in names:
        assert png_size(out / name) == PICTURE_PIXELS
    assert result.stdout.splitlines() == [f"wrote {out / name}" for name in
                                          ["my clip_waveform.png", "my clip_whisper_logmel.png", "my clip_encoder.png",
                                           "my clip_probabilities.png"]]


@pytest.mark.slow
def test_demo_clips_are_synthesised_small_and_pictured(tmp_path):
    if drawing.shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it)")
    clips, out = tmp_path / "clips", tmp_path / "pictures"
    result = run_script("demo/make_demo.py", "--clips", clips, "--out", out)
    assert result.returncode == 0, result.stderr
    wavs = sorted(clips.iterdir())
    assert [p.stem for p in wavs] == sorted(stem for stem, *_ in drawing.CLIPS)
    assert sum(p.stat().st_size for p in wavs) < 1_000_000
    for wav in wavs:
        info = sf.info(wav)
        assert info.samplerate == 22050 and info.channels == 1 and 1.0 < info.duration < 3.5
        y = F.load_audio(wav, 22050)
        assert np.abs(y).max() > 0.05  # speech, not silence
    assert len(list(out.glob("*.png"))) == 3 * len(wavs)
    # Louder and quieter settings give louder and quieter files.
    peak = {p.stem: np.abs(sf.read(p)[0]).max() for p in wavs}
    assert peak["high-fast-loud"] > peak["plain"] > peak["low-slow-quiet"]


def test_committed_demo_clips_stay_under_a_megabyte():
    wavs = list((ROOT / "demo" / "clips").glob("*.wav"))
    assert len(wavs) == len(drawing.CLIPS)
    assert sum(p.stat().st_size for p in wavs) < 1_000_000


@pytest.mark.slow
def test_missing_and_unreadable_files_are_one_line(tmp_path):
    result = run_script("demo/make_demo.py", "--plot", tmp_path / "nope.wav", "--out", tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: no such file: {tmp_path / 'nope.wav'}"]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    result = run_script("demo/make_demo.py", "--plot", broken, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"skipped {broken}: unreadable"]


def coloured_columns(picture: Path, rgb: tuple[int, int, int]) -> dict[int, int]:
    """{pixel column: how many pixels of that colour it holds} of a PNG."""
    import matplotlib.image
    pixels = (matplotlib.image.imread(picture)[:, :, :3] * 255).round().astype(int)
    mask = (np.abs(pixels - rgb) <= 2).all(axis=2)
    return {int(c): int(n) for c, n in enumerate(mask.sum(axis=0)) if n}


def test_probability_chart_draws_each_probability_as_its_bar(tmp_path):
    """The highlighted bar is the most probable emotion's, in its place, and bar heights keep the ratios."""
    p = np.array([0.05, 0.05, 0.1, 0.05, 0.45, 0.1, 0.15, 0.05])
    picture = drawing.plot_probabilities(dict(zip(EMOTIONS, p, strict=True)), tmp_path / "p.png")
    orange, blue = coloured_columns(picture, (255, 127, 14)), coloured_columns(picture, (31, 119, 180))
    assert orange and blue and not set(orange) & set(blue)
    # Eight bars 0.8 wide at 0..7 span 7.8 units: the orange one is centred on slot 4, angry's.
    left, right = min(orange | blue), max(orange | blue)
    slot = (np.mean(list(orange)) - left) / ((right - left) / 7.8) - 0.4
    assert slot == pytest.approx(list(EMOTIONS).index("angry"), abs=0.1)
    # Heights: the tallest blue bar is disgust (0.15), the orange bar 0.45: three times as tall.
    assert max(orange.values()) / max(blue.values()) == pytest.approx(0.45 / 0.15, rel=0.05)
