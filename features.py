"""Audio to model input: loading, the window the model hears, its MFCCs (or the pretrained front end's frames,
pretrained.py), and per-clip standardisation.

    X = features.clip_features("clip.wav", config)              # (frames, features) for a config.FeatureConfig
    X = features.waveform_features(y, config)                   # the same for a waveform at config.sample_rate

Training, evaluation and live prediction all make model input through these two, under the one FeatureConfig
that is saved with every model, so the three can never disagree.
"""
from __future__ import annotations

import functools
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

import pretrained
from config import FeatureConfig
from fileio import is_special_file

# Peak below -80 dBFS: nothing a microphone or corpus would call a voice.
SILENCE_PEAK = 1e-4


class SkipClip(Exception):
    """A clip that cannot become features. The message is the reason: unreadable, empty, non-finite, silent."""


# ---------------------------------------------------------------------------------------------
# Audio


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file that libsndfile reads (detected by content, not extension) as mono float32 at sample_rate.

    Channels are averaged; other rates are resampled with soxr. Raises SkipClip("not a regular file") (a FIFO,
    socket or device, which is never opened), SkipClip("unreadable"), SkipClip("empty") or SkipClip("non-finite").
    """
    if is_special_file(path):
        raise SkipClip("not a regular file")
    try:
        y, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError):
        raise SkipClip("unreadable") from None
    if y.size == 0:
        raise SkipClip("empty")
    if not np.isfinite(y).all():
        raise SkipClip("non-finite")
    return resample(y.mean(axis=1), sr, sample_rate)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """y (n,) at orig_sr Hz as float32 at target_sr Hz (soxr, high quality)."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def peak_normalise(y: np.ndarray) -> np.ndarray:
    """y scaled to a peak of 1. Raises SkipClip("silent") below SILENCE_PEAK."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak < SILENCE_PEAK:
        raise SkipClip("silent")
    return y / peak


def centred_start(length: int, n: int) -> int:
    """Where a centred n-sample window starts in `length` samples: negative when it is zero-padded."""
    return (length - n) // 2 if length >= n else -((n - length) // 2)


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """The centre n samples of y, or y centred in n samples of zeros if shorter."""
    start = centred_start(len(y), n)
    if start >= 0:
        return y[start:start + n]
    out = np.zeros(n, dtype=y.dtype)
    out[-start:-start + len(y)] = y
    return out


# ---------------------------------------------------------------------------------------------
# MFCC


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa's mel filterbank (n_mels, 1 + n_fft // 2). Cached: building it costs as much as an MFCC."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def log_mel_spectrogram(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Mel power spectrogram of y (n,) at config.sample_rate in dB (ref 1.0, floored 80 dB below its loudest bin,
    librosa's default), as (n_mels, frames)."""
    power = np.abs(librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length)) ** 2
    return librosa.power_to_db(mel_basis(config.sample_rate, config.n_fft, config.n_mels) @ power)


def mfcc_sequence(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """MFCCs of y (n,) at config.sample_rate, as (frames, n_mfcc) float32.

    Equal to `librosa.feature.mfcc(y=y, sr=..., n_mfcc=..., n_fft=..., hop_length=...)` transposed,
    with the mel filterbank cached across calls.
    """
    return librosa.feature.mfcc(S=log_mel_spectrogram(y, config), n_mfcc=config.n_mfcc).T.astype(np.float32)


def trimmed_span(y: np.ndarray, config: FeatureConfig) -> tuple[int, int]:
    """(start, stop) samples of y left after trimming silence at both ends; all of y without config.trim_db."""
    if config.trim_db is None:
        return 0, len(y)
    # Without trimming, how much silence pads a clip says which corpus (and so which emotions) it is from.
    start, stop = librosa.effects.trim(y, top_db=config.trim_db)[1]
    return int(start), int(stop)


def long_enough(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """y (n,) at config.sample_rate, if it has at least config.min_samples; else raises SkipClip("too short")."""
    if len(y) < config.min_samples:
        raise SkipClip("too short")
    return y


def speech(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """What the model hears of a mono waveform y at config.sample_rate, before padding: peak-normalised, silence
    at both ends trimmed (trimmed_span), at most config.window_s around the centre. Raises SkipClip("too short")
    or SkipClip("silent")."""
    y = peak_normalise(long_enough(y, config))
    start, stop = trimmed_span(y, config)
    y = y[start:stop]
    return fix_length(y, config.n_samples) if len(y) > config.n_samples else y


def model_window(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The config.n_samples the model hears of a mono waveform y at config.sample_rate: its speech, centred in
    zeros where shorter. Raises SkipClip("too short") or SkipClip("silent")."""
    return fix_length(speech(y, config), config.n_samples)


def waveform_features(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Model input config.shape = (frames, features) for a mono waveform y (n,) already at config.sample_rate.

    "mfcc": the MFCCs of its model_window (float32), and their deltas if config.deltas. "whisper": the encoder's
    frames of its model_window with the eGeMAPS of its speech (unpadded) beside each, as float16 (what the cache
    stores; the model computes in float32). Raises SkipClip("silent") or SkipClip("too short").
    """
    if config.frontend == "whisper":
        voice = speech(y, config)
        return pretrained.pretrained_features(window=fix_length(voice, config.n_samples), speech=voice, config=config)
    frames = mfcc_sequence(model_window(y, config), config)
    if not config.deltas:
        return frames
    d1 = librosa.feature.delta(frames, axis=0)
    return np.concatenate([frames, d1, librosa.feature.delta(frames, axis=0, order=2)], axis=1).astype(np.float32)


def clip_features(path: str | Path, config: FeatureConfig) -> np.ndarray:
    """Model input config.shape for one audio file. Raises SkipClip with the reason."""
    return waveform_features(load_audio(path, config.sample_rate), config)


def standardise_per_clip(X: np.ndarray) -> np.ndarray:
    """X (clips, frames, features) with each clip standardised by its own mean and standard deviation of
    each feature over its frames (cepstral mean and variance normalisation).

    What a fixed channel (microphone, room, telephone line) or level adds to every frame of a clip
    cancels, and one clip needs nothing but itself, as a stranger's single file or a live window does.
    """
    mean, std = X.mean(axis=1, keepdims=True), X.std(axis=1, keepdims=True)
    return ((X - mean) / (std + 1e-6)).astype(np.float32)


def normalised(X: np.ndarray, norm: str) -> np.ndarray:
    """X (clips, frames, features) as a model trained with `norm` (config.NORMS) takes it: each clip standardised by
    itself (standardise_per_clip) for "clip", unchanged for "none"."""
    return standardise_per_clip(X) if norm == "clip" else X
