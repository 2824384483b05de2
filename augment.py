"""Corruptions of speech as a user's microphone, room and line make them, for the robustness benchmark and
for training on corrupted copies.

Each corruption is a pure function of a mono float32 waveform y at sample rate sr (Hz) and a
numpy Generator, and returns a waveform of the same length and rate; the same seed gives the same
output. `corrupt(y, sr, condition, rng, talkers)` applies one by name:

    "white:10"   white noise at 10 dB SNR (also pink, brown, babble, hum50, hum60)
    "reverb:0.6" a simulated room with an RT60 of 0.6 s
    "telephone"  the 300-3400 Hz band through an 8 kHz line
    "mp3:16"     an MP3 round trip at 16 kbps (also opus)
    "gain:-30"   30 dB quieter;  "clip:-20": clipped 20 dB below the peak
"""
from __future__ import annotations

import io
from functools import lru_cache

import librosa
import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

import features

NOISES = ("white", "pink", "brown", "babble", "hum50", "hum60")
BABBLE_TALKERS = 6  # voices summed into babble: few enough that words surface now and then, as in a café
BABBLE_POOL = 40  # clips that babble is drawn from, in training copies and in the robustness benchmark
SPEECH_TOP_DB = 30.0  # speech-active frames: within this of the loudest (librosa.effects.split)
TELEPHONE_RATE, TELEPHONE_BAND = 8000, (300.0, 3400.0)
CODEC_RATES = {"opus": 16000, "mp3": 16000}  # Opus takes 8/12/16/24/48 kHz; both as wideband speech
RIRS_PER_RT60 = 4  # rooms simulated per reverberation time, then drawn from at random

# The benchmark's fixed set of conditions, in the order of its table.
CONDITIONS = ("clean", *(f"{noise}:{snr}" for noise in ("white", "pink", "brown", "babble", "hum50")
                         for snr in (20, 10, 0)),
              "reverb:0.3", "reverb:0.6", "reverb:0.9", "telephone", "mp3:16", "mp3:32", "opus:16", "opus:32",
              "gain:-30", "clip:-20")


class CorruptionError(ValueError):
    """A condition that names no corruption, or a parameter that is not a number."""


# ---------------------------------------------------------------------------------------------
# Noise


def speech_active(y: np.ndarray) -> np.ndarray:
    """Boolean mask (n,) of the samples of y in speech-active intervals (within SPEECH_TOP_DB of the peak)."""
    mask = np.zeros(len(y), dtype=bool)
    for start, stop in librosa.effects.split(y, top_db=SPEECH_TOP_DB):
        mask[start:stop] = True
    return mask if mask.any() else np.ones(len(y), dtype=bool)


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Signal-to-noise ratio in dB of speech and an added noise, both measured over speech's active part."""
    active = speech_active(speech)
    return float(10 * np.log10(np.mean(speech[active] ** 2) / np.mean(noise[active] ** 2)))


def add_noise(y: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """y plus noise (same length) scaled to `snr` dB below y's speech-active power, over the same samples."""
    active = speech_active(y)
    scale = np.sqrt(np.mean(y[active] ** 2) / (np.mean(noise[active] ** 2) * 10 ** (snr / 10)))
    return (y + scale * noise).astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (n,) whose power falls as 1/f**exponent: 0 white, 1 pink, 2 brown. Unit variance."""
    m = scipy.fft.next_fast_len(max(n, 2))  # a clip's length can have large prime factors, which slow the FFT tenfold
    spectrum = scipy.fft.rfft(rng.standard_normal(m))
    f = scipy.fft.rfftfreq(m)
    f[0] = f[1]  # no infinite gain at DC
    noise = scipy.fft.irfft(spectrum / f ** (exponent / 2), m)[:n]
    return (noise / noise.std()).astype(np.float32)


def hum(n: int, sr: int, mains_hz: float, rng: np.random.Generator, harmonics: int = 8) -> np.ndarray:
    """Mains hum (n,): mains_hz and its harmonics, amplitude falling as 1/k, at random phases."""
    t = np.arange(n) / sr
    k = np.arange(1, harmonics + 1)[:, None]
    k = k[k[:, 0] * mains_hz < sr / 2]
    return (np.sin(2 * np.pi * mains_hz * k * t + rng.uniform(0, 2 * np.pi, (len(k), 1))) / k).sum(0).astype(
        np.float32)


def babble(n: int, talkers: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """BABBLE_TALKERS clips drawn from talkers (waveforms at the same rate), each looped to n samples from a
    random start and brought to equal power, summed."""
    if len(talkers) < BABBLE_TALKERS:
        raise CorruptionError(f"babble needs {BABBLE_TALKERS} clips of other speakers, got {len(talkers)}")
    out = np.zeros(n, dtype=np.float64)
    for i in rng.choice(len(talkers), BABBLE_TALKERS, replace=False):
        voice = np.resize(np.roll(talkers[i], -rng.integers(len(talkers[i]))), n)
        out += voice / (voice.std() + 1e-9)
    return out.astype(np.float32)


def noise_of(kind: str, n: int, sr: int, rng: np.random.Generator, talkers: list[np.ndarray] | None) -> np.ndarray:
    """n samples of one of NOISES."""
    if kind == "babble":
        return babble(n, talkers or [], rng)
    if kind.startswith("hum"):
        return hum(n, sr, float(kind[3:]), rng)
    return coloured_noise(n, {"white": 0, "pink": 1, "brown": 2}[kind], rng)


# ---------------------------------------------------------------------------------------------
# Rooms


def schroeder_rt60(rir: np.ndarray, sr: int) -> float:
    """Reverberation time (s) of an impulse response: Schroeder's backward-integrated energy decay, its
    -5 to -25 dB part fitted by a line and extrapolated to -60 dB (T20)."""
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    decay = 10 * np.log10(energy / energy[0] + 1e-300)
    part = np.flatnonzero((decay <= -5) & (decay >= -25))
    slope = np.polyfit(part / sr, decay[part], 1)[0]  # dB per second
    return float(-60 / slope)


def simulated_rir(rt60: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Impulse response of a shoebox room (4-9 m by 3.5-7 m, 2.5-3.5 m high) whose walls absorb for about
    rt60 s by Sabine's formula, with source and microphone at random places at least 0.5 m from the walls.
    pyroomacoustics' image-source method."""
    import pyroomacoustics as pra  # here: only rooms need it, and it takes a second to import
    dims = rng.uniform((4.0, 3.5, 2.5), (9.0, 7.0, 3.5))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=max_order)
    room.add_source(rng.uniform(0.5, dims - 0.5))
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    return np.asarray(room.rir[0][0], dtype=np.float32)


def room_impulse_response(rt60: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A simulated_rir whose measured RT60 (schroeder_rt60) is within 10% of rt60.

    Sabine's formula overestimates absorption's effect in the image-source model (here by 10-35%), so the
    room is simulated again with the target corrected by what was measured, up to four times.
    """
    target = rt60
    for _ in range(4):
        rir = simulated_rir(target, sr, rng)
        measured = schroeder_rt60(rir, sr)
        if abs(measured - rt60) <= 0.1 * rt60:
            break
        target *= rt60 / measured
    return rir


@lru_cache(maxsize=16)
def rir_bank(rt60: float, sr: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """RIRS_PER_RT60 room impulse responses of one reverberation time, the same for a seed in every process.
    Simulating a room takes up to seconds, so clips draw from this bank."""
    rng = np.random.default_rng([seed, round(rt60 * 1000), sr])
    return tuple(room_impulse_response(rt60, sr, rng) for _ in range(RIRS_PER_RT60))


def reverberate(y: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """y heard through a room: convolved with rir, cut to y's length (the tail past the end is dropped)."""
    return scipy.signal.fftconvolve(y, rir)[:len(y)].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Lines and codecs


def telephone(y: np.ndarray, sr: int) -> np.ndarray:
    """y through a narrowband telephone line: down to 8 kHz, the 300-3400 Hz band (4th-order Butterworth),
    and back up to sr, so that nothing above 4 kHz is left."""
    narrow = features.resample(y, sr, TELEPHONE_RATE)
    band = scipy.signal.butter(4, TELEPHONE_BAND, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    return librosa.util.fix_length(features.resample(scipy.signal.sosfiltfilt(band, narrow).astype(np.float32),
                                                     TELEPHONE_RATE, sr), size=len(y))


def codec_level(codec: str, kbps: float) -> float:
    """libsndfile's compression level (0-1) that gives about kbps: it maps the level linearly onto the
    codec's bitrates (Opus 6-256 kbps; MP3 at 16 kHz 8-160 kbps, constant)."""
    low, high = (6.0, 256.0) if codec == "opus" else (8.0, 160.0)
    return float(np.clip((high - kbps) / (high - low), 0.0, 0.99))


def codec_round_trip(y: np.ndarray, sr: int, codec: str, kbps: float) -> np.ndarray:
    """y encoded (Opus in Ogg, or MP3) at about kbps by libsndfile, decoded, and brought back to sr."""
    rate = CODEC_RATES[codec]
    narrow = np.clip(features.resample(y / max(np.abs(y).max(), 1e-9), sr, rate), -1, 1) * 0.9
    buffer = io.BytesIO()
    kind = {"opus": ("OGG", "OPUS", {}), "mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT"})}
    container, subtype, extra = kind[codec]
    sf.write(buffer, narrow, rate, format=container, subtype=subtype, compression_level=codec_level(codec, kbps),
             **extra)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    decoded = decoded[encoder_delay(decoded, narrow, rate // 10):]
    return librosa.util.fix_length(features.resample(decoded, rate, sr), size=len(y)) * max(np.abs(y).max(), 1e-9) / 0.9


def encoder_delay(decoded: np.ndarray, original: np.ndarray, max_lag: int) -> int:
    """The samples (0 to max_lag) that a codec put before the audio: where decoded best matches original."""
    n = min(len(decoded), len(original))
    correlation = scipy.signal.correlate(decoded[:n], original[:n], mode="full", method="fft")[n - 1:n + max_lag]
    return int(np.argmax(correlation))


# ---------------------------------------------------------------------------------------------
# By name


def parse_condition(condition: str) -> tuple[str, float | None]:
    """'white:10' -> ('white', 10.0); 'telephone' -> ('telephone', None). Raises CorruptionError."""
    kind, _, value = condition.partition(":")
    takes_value = {*NOISES, "reverb", "mp3", "opus", "gain", "clip"}
    if kind not in takes_value | {"clean", "telephone"}:
        raise CorruptionError(f"unknown corruption {kind!r}; known: clean, telephone, "
                              + ", ".join(f"{k}:VALUE" for k in sorted(takes_value)))
    if kind in takes_value and not value:
        raise CorruptionError(f"{kind} needs a value, e.g. {kind}:10")
    if kind not in takes_value and value:
        raise CorruptionError(f"{kind} takes no value")
    try:
        number = float(value) if value else None
    except ValueError:
        raise CorruptionError(f"{condition}: {value!r} is not a number") from None
    if number is not None and not np.isfinite(number):
        raise CorruptionError(f"{condition}: the value must be finite")
    if kind in ("reverb", "mp3", "opus") and number <= 0:
        raise CorruptionError(f"{condition}: the value must be positive")
    return kind, number


def corrupt(y: np.ndarray, sr: int, condition: str, rng: np.random.Generator,
            talkers: list[np.ndarray] | None = None) -> np.ndarray:
    """y (n,) at sr Hz under one named condition (see the module's docstring). talkers: other speakers' clips
    at sr, for babble. Raises CorruptionError for a condition that names no corruption."""
    kind, value = parse_condition(condition)
    if kind == "clean":
        return y
    if kind in NOISES:
        return add_noise(y, noise_of(kind, len(y), sr, rng, talkers), value)
    if kind == "reverb":
        bank = rir_bank(value, sr)
        return reverberate(y, bank[rng.integers(len(bank))])
    if kind == "telephone":
        return telephone(y, sr)
    if kind in ("mp3", "opus"):
        return codec_round_trip(y, sr, kind, value)
    if kind == "gain":
        return (y * 10 ** (value / 20)).astype(np.float32)
    limit = np.abs(y).max() * 10 ** (value / 20)  # clip
    return np.clip(y, -limit, limit).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Training copies

# Bump when training_corruption would give other audio for the same seed: cached copies are named after it.
TRAINING_VERSION = 1
TRAINING_RT60S = (0.25, 0.5, 0.75, 1.0)  # rooms of training copies: other rooms (bank seed 1) than the benchmark's
TRAINING_ROOM_SEED = 1


def training_corruption(y: np.ndarray, sr: int, rng: np.random.Generator, talkers: list[np.ndarray]) -> np.ndarray:
    """y under one corruption drawn at random, as users' conditions vary: half the time noise (one of NOISES
    at an SNR uniform in 0-30 dB), a fifth a room (RT60 of TRAINING_RT60S), a tenth a telephone line, a
    tenth a codec (MP3 or Opus at 16-64 kbps), and a tenth a level change (-40 to 0 dB) or clipping
    (6-20 dB below the peak)."""
    u = rng.random()
    if u < 0.5:
        kind = NOISES[rng.integers(len(NOISES))]
        return add_noise(y, noise_of(kind, len(y), sr, rng, talkers), rng.uniform(0, 30))
    if u < 0.7:
        bank = rir_bank(TRAINING_RT60S[rng.integers(len(TRAINING_RT60S))], sr, TRAINING_ROOM_SEED)
        return reverberate(y, bank[rng.integers(len(bank))])
    if u < 0.8:
        return telephone(y, sr)
    if u < 0.9:
        return codec_round_trip(y, sr, ("mp3", "opus")[rng.integers(2)], rng.uniform(16, 64))
    if rng.random() < 0.5:
        return (y * 10 ** (rng.uniform(-40, 0) / 20)).astype(np.float32)
    limit = np.abs(y).max() * 10 ** (-rng.uniform(6, 20) / 20)
    return np.clip(y, -limit, limit).astype(np.float32)
