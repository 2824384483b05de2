"""Finding and labelling corpus files, loading audio, the frames the model sees (MFCCs, log-mel or PCEN
bands), and feature caching.

Training, evaluation and live prediction all turn audio into model input through
`clip_features` / `waveform_features` here, under one frozen `FeatureConfig` that is
saved with every model, so the three can never disagree.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import soundfile as sf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recipes import FRONTENDS

log = logging.getLogger("ser")

# The model's classes, in output order. RAVDESS numbers its emotions 01..08 in this order.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"})

# MM-VV-EE-II-SS-RR-AA: modality, vocal channel, emotion, intensity, statement, repetition, actor.
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
RAVDESS_AUDIO_ONLY, RAVDESS_SPEECH = "03", "01"

# SPK_word_emotion. "OA" is an upstream typo for OAF in one file name.
TESS_NAME = re.compile(r"^(OAF|YAF|OA)_([a-z]+)_([a-z_]+)$", re.IGNORECASE)
TESS_EMOTIONS = {
    "neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry", "fear": "fearful",
    "disgust": "disgust", "ps": "surprised", "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
}

# EMO-DB SSTTTEV: speaker, sentence (a01 .. b10), emotion letter (German names), version. Only its ten
# speakers and ten sentences match, so that no other corpus's or user's file is taken for EMO-DB.
EMODB_NAME = re.compile(r"^(03|08|09|10|11|12|13|14|15|16)(a0[12457]|b0[1239]|b10)([WLEAFTN])([a-z])$")
EMODB_MALE_SPEAKERS = frozenset({"03", "10", "11", "12", "15"})
EMODB_EMOTIONS = {"W": "angry", "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}
EMODB_BOREDOM = "L"  # Langeweile: none of the eight emotions (and not calm), left out and counted

# A user's own corpus: DIR/<emotion>/*.wav, folder names matched case-insensitively.
EMOTION_FOLDERS = {
    **{e: e for e in EMOTIONS}, "anger": "angry", "fear": "fearful", "happiness": "happy", "sadness": "sad",
    "surprise": "surprised", "disgusted": "disgust",
}

# Peak below -80 dBFS: nothing a microphone or corpus would call a voice.
SILENCE_PEAK = 1e-4

# Bump when the feature code changes in a way FeatureConfig does not capture, to retire old caches.
CACHE_FORMAT = 2
# The libraries whose versions can change the features: a new version means a new cache.
FEATURE_LIBRARIES = ("librosa", "soxr", "soundfile", "numpy", "scipy")
# A cache folder holding more shards than this is merged into one.
MAX_CACHE_SHARDS = 8


@dataclass(frozen=True)
class FeatureConfig:
    """Every parameter that turns a waveform into model input. Saved with each model."""

    sample_rate: int = 22050  # Hz, every clip is resampled to this
    window_s: float = 3.0  # seconds the model sees: longer clips are centre-cropped, shorter zero-padded
    n_mfcc: int = 13
    n_fft: int = 2048  # samples, ~93 ms at 22,050 Hz
    hop_length: int = 512  # samples, ~23 ms
    n_mels: int = 128
    # dB: the log-mel spectrogram (of mfcc and logmel) is floored this far below its loudest bin, librosa's
    # top_db. 80 keeps the near-silence between a studio's words, where a noisy room has noise; 40 fills both in.
    floor_db: float = 80.0
    trim_db: float | None = None  # drop leading/trailing audio this many dB below the peak; None keeps it
    deltas: bool = False  # append first and second differences of each feature (3 times as many per frame)
    frontend: str = "mfcc"  # one of FRONTENDS: n_mfcc MFCCs, or the n_mels mel bands in dB or through PCEN

    def __post_init__(self):
        if self.frontend not in FRONTENDS:
            raise ValueError(f"unknown frontend {self.frontend!r}: one of {', '.join(FRONTENDS)}")

    @property
    def n_features(self) -> int:
        return (self.n_mfcc if self.frontend == "mfcc" else self.n_mels) * (3 if self.deltas else 1)

    @property
    def n_samples(self) -> int:
        return round(self.sample_rate * self.window_s)

    @property
    def n_frames(self) -> int:
        # librosa centres frames, so a window of n samples gives 1 + n // hop frames.
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one clip's features: (frames, features per frame)."""
        return (self.n_frames, self.n_features)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown feature config keys: {sorted(unknown)}")
        return cls(**d)

    def digest(self) -> str:
        """Short hash of the config, the cache format and the feature libraries' versions: features made
        under equal digests are equal."""
        text = json.dumps({"config": self.to_dict(), "format": CACHE_FORMAT, "versions": feature_library_versions()},
                          sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@functools.cache
def feature_library_versions() -> dict[str, str]:
    """{package: installed version} of FEATURE_LIBRARIES."""
    return {name: version(name) for name in FEATURE_LIBRARIES}


class CorpusError(Exception):
    """No usable corpus where the user pointed."""


class SkipClip(Exception):
    """A clip that cannot become features. The message is the reason: unreadable, empty, non-finite, silent."""


# ---------------------------------------------------------------------------------------------
# Indexing


@dataclass
class IndexSummary:
    """What `index_corpus` found besides the clips it kept."""

    excluded: dict[str, int] = field(default_factory=dict)  # reason -> count, e.g. RAVDESS song
    unmatched: list[str] = field(default_factory=list)  # audio files whose name and folder fit no corpus
    duplicates: list[list[str]] = field(default_factory=list)  # groups of byte-identical files

    def lines(self) -> list[str]:
        out = [f"left out {n} {reason}" for reason, n in sorted(self.excluded.items())]
        if self.unmatched:
            shown = ", ".join(self.unmatched[:5]) + (" ..." if len(self.unmatched) > 5 else "")
            folders = sorted({Path(p).parent.name for p in self.unmatched})
            out.append(f"skipped {len(self.unmatched)} audio files whose names match no corpus and whose folders "
                       f"name no emotion (folders: {', '.join(folders[:10])}): {shown}")
        for group in self.duplicates:
            out.append(f"identical audio, kept on one side of every split: {' = '.join(group)}")
        return out


def parse_ravdess_name(stem: str) -> dict | str | None:
    """Fields of a RAVDESS file name, the reason it is left out (e.g. "RAVDESS song"), or None if not RAVDESS."""
    m = RAVDESS_NAME.match(stem)
    if not m:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
    if channel != RAVDESS_SPEECH:
        return "RAVDESS song clips (they repeat the speech statements)"
    if modality != RAVDESS_AUDIO_ONLY:
        return "RAVDESS audio-visual clips (same performances as the audio-only ones)"
    actor_n = int(actor)
    return {
        "corpus": "ravdess",
        "speaker": f"ravdess-{actor_n:02d}",
        "gender": "male" if actor_n % 2 else "female",
        "emotion": EMOTIONS[int(emotion) - 1],
        "intensity": "strong" if intensity == "02" else "normal",
        "statement": int(statement),
        "repetition": int(repetition),
    }


def parse_tess_name(stem: str) -> dict | None:
    """Fields of a TESS file name (`OAF_back_ps`), or None if not TESS."""
    m = TESS_NAME.match(stem)
    if not m or m.group(3).lower() not in TESS_EMOTIONS:
        return None
    speaker = "OAF" if m.group(1).upper() == "OA" else m.group(1).upper()
    return {
        "corpus": "tess",
        "speaker": f"tess-{speaker}",
        "gender": "female",
        "emotion": TESS_EMOTIONS[m.group(3).lower()],
        "word": m.group(2).lower(),
    }


def parse_emodb_name(stem: str) -> dict | str | None:
    """Fields of an EMO-DB file name (`03a01Fa`), the reason it is left out (boredom), or None if not EMO-DB."""
    m = EMODB_NAME.match(stem)
    if not m:
        return None
    speaker, sentence, letter, version = m.groups()
    if letter == EMODB_BOREDOM:
        return "EMO-DB boredom clips (no counterpart among the eight emotions)"
    return {
        "corpus": "emodb",
        "speaker": f"emodb-{speaker}",
        "gender": "male" if speaker in EMODB_MALE_SPEAKERS else "female",
        "emotion": EMODB_EMOTIONS[letter],
        "sentence": sentence,
        "version": version,
    }


def parse_corpus_name(stem: str) -> dict | str | None:
    """Fields of a RAVDESS, TESS or EMO-DB file name, the reason such a file is left out, or None."""
    return parse_ravdess_name(stem) or parse_tess_name(stem) or parse_emodb_name(stem)


def parse_emotion_folder(path: Path, data_dir: Path) -> dict | None:
    """Fields of a file in a folder-per-emotion corpus under data_dir, or None.

    `DIR/<speaker>/<emotion>/clip.wav` names its speaker (custom-<speaker>). Where the emotion folders
    sit right in data_dir, nothing tells who speaks: each clip counts as a speaker of its own
    (custom-<emotion>/<file name>), so that no statistics pool strangers as one voice.
    """
    emotion = EMOTION_FOLDERS.get(path.parent.name.lower())
    if emotion is None:
        return None
    speaker = path.parent.parent.name if path.parent.parent != data_dir else f"{path.parent.name}/{path.name}"
    return {"corpus": "custom", "speaker": f"custom-{speaker}", "gender": "unknown", "emotion": emotion}


def audio_files(data_dir: Path) -> list[Path]:
    """Every file under data_dir with an audio extension, sorted, hidden folders (caches) excluded.

    Folders reached through symbolic links are followed (corpora kept on another disk); a folder
    reached twice, through a loop or two links, is read once, and so is a file.
    """
    found, seen_dirs, seen_files = [], set(), set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        info = os.stat(root)
        identity = (info.st_dev, info.st_ino)
        if identity in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(identity)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.resolve() not in seen_files:
                seen_files.add(path.resolve())
                found.append(path)
    return found


def content_digest(path: str | Path) -> str:
    """A hash of a file's bytes (BLAKE2b, 128 bits as hex): equal for byte-identical files. Raises OSError."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def duplicate_groups(paths: list[Path]) -> list[list[Path]]:
    """Groups of byte-identical files. Only files that share a size are hashed."""
    by_size = defaultdict(list)
    for p in paths:
        by_size[p.stat().st_size].append(p)
    groups = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash = defaultdict(list)
        for p in same_size:
            by_hash[content_digest(p)].append(p)
        groups += [g for g in by_hash.values() if len(g) > 1]
    return groups


def index_corpus(data_dirs) -> tuple[pd.DataFrame, IndexSummary]:
    """Find and label every RAVDESS, TESS and EMO-DB clip under data_dirs (a folder or a list of them)
    by file name, and other clips by folder.

    Files named like no corpus are taken from folder-per-emotion layouts (`DIR/<emotion>/*.wav`,
    see EMOTION_FOLDERS) as corpus "custom".

    Returns one row per clip with columns path (absolute), relpath (to its data dir), corpus,
    speaker (corpus-qualified: ravdess-07, tess-OAF, emodb-03), gender, emotion, group (equal for
    byte-identical files, so that splits can keep them together), and the corpus fields
    intensity, statement, repetition (RAVDESS), word (TESS), sentence and version (EMO-DB),
    missing elsewhere. Raises CorpusError if the folders hold no clip, or two of them hold the
    same relative path.
    """
    dirs = [Path(d).resolve() for d in ([data_dirs] if isinstance(data_dirs, str | Path) else data_dirs)]
    for data_dir in dirs:
        if not data_dir.is_dir():
            raise CorpusError(f"no corpus found: {data_dir} is not a folder. Put RAVDESS, TESS and/or EMO-DB there "
                              f"(see README, 'Getting the corpora') or pass --data-dir")
    summary = IndexSummary()
    rows = []
    for data_dir in dirs:
        for path in audio_files(data_dir):
            fields = parse_corpus_name(path.stem) or parse_emotion_folder(path, data_dir)
            if isinstance(fields, str):
                summary.excluded[fields] = summary.excluded.get(fields, 0) + 1
            elif fields is None:
                summary.unmatched.append(str(path.relative_to(data_dir)))
            else:
                rows.append({"path": str(path), "relpath": str(path.relative_to(data_dir)), **fields})
    where = " or ".join(map(str, dirs))
    if not rows:
        raise CorpusError(f"no RAVDESS, TESS, EMO-DB or emotion-folder clips found under {where}. Put the corpora "
                          f"there (see README, 'Getting the corpora') or pass --data-dir")
    clips = pd.DataFrame(rows)
    twice = clips["relpath"][clips["relpath"].duplicated()]
    if len(twice):
        raise CorpusError(f"{len(twice)} files have the same path under two of {where} (e.g. {twice.iloc[0]}); "
                          f"pass each corpus folder once")
    clips["group"] = clips["relpath"]
    relpath_of = dict(zip(clips["path"], clips["relpath"], strict=True))
    for group in duplicate_groups([Path(p) for p in clips["path"]]):
        members = sorted(relpath_of[str(p)] for p in group)
        clips.loc[clips["relpath"].isin(members), "group"] = members[0]
        summary.duplicates.append(members)
    columns = ["path", "relpath", "corpus", "speaker", "gender", "emotion", "group",
               "intensity", "statement", "repetition", "word", "sentence", "version"]
    return clips.reindex(columns=columns), summary


def select_corpora(clips: pd.DataFrame, corpora: list[str] | None) -> pd.DataFrame:
    """The index rows of the named corpora (all rows for None). Raises CorpusError for a corpus not found."""
    if not corpora:
        return clips
    found = sorted(set(clips["corpus"]))
    missing = sorted(set(corpora) - set(found))
    if missing:
        raise CorpusError(f"corpus {', '.join(missing)} not found; the data folders hold {', '.join(found)}")
    return clips[clips["corpus"].isin(corpora)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Audio


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file that libsndfile reads (detected by content, not extension) as mono float32 at sample_rate.

    Channels are averaged; other rates are resampled with soxr. Raises SkipClip("unreadable"),
    SkipClip("empty") or SkipClip("non-finite").
    """
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


def stft_magnitude(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """|STFT| of y (n,) with config's n_fft and hop_length, as (1 + n_fft // 2, frames)."""
    return np.abs(librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length))


def log_mel_spectrogram(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Mel power spectrogram of y (n,) at config.sample_rate in dB (ref 1.0), as (n_mels, frames), no bin lower
    than config.floor_db below the loudest."""
    power = stft_magnitude(y, config) ** 2
    mel = mel_basis(config.sample_rate, config.n_fft, config.n_mels) @ power
    return librosa.power_to_db(mel, top_db=config.floor_db)


def mfcc_sequence(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """MFCCs of y (n,) at config.sample_rate, as (frames, n_mfcc) float32.

    Equal to `librosa.feature.mfcc(y=y, sr=..., n_mfcc=..., n_fft=..., hop_length=...)` transposed,
    with the mel filterbank cached across calls.
    """
    return librosa.feature.mfcc(S=log_mel_spectrogram(y, config), n_mfcc=config.n_mfcc).T.astype(np.float32)


def pcen_sequence(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Per-channel energy normalisation (librosa.pcen, its defaults) of the mel magnitude spectrogram of y
    (n,) at config.sample_rate, as (frames, n_mels) float32.

    PCEN divides each band by its own energy smoothed over the last 0.4 s and compresses by a root, not a
    log: a steady noise floor or channel colour in a band is largely divided out, where the log-mel keeps it
    as a level. The scale 2**31 is librosa's advice for audio in [-1, 1], which its defaults assume.
    """
    mel = mel_basis(config.sample_rate, config.n_fft, config.n_mels) @ stft_magnitude(y, config)
    return librosa.pcen(mel * 2**31, sr=config.sample_rate, hop_length=config.hop_length).T.astype(np.float32)


def frame_features(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(frames, n_mfcc or n_mels) float32 of y (n,) at config.sample_rate, as config.frontend asks: its
    MFCCs (mfcc_sequence), its log-mel spectrogram in dB, or its PCEN (pcen_sequence)."""
    if config.frontend == "mfcc":
        return mfcc_sequence(y, config)
    if config.frontend == "logmel":
        return log_mel_spectrogram(y, config).T.astype(np.float32)
    return pcen_sequence(y, config)


def trimmed_span(y: np.ndarray, config: FeatureConfig) -> tuple[int, int]:
    """(start, stop) samples of y left after trimming silence at both ends; all of y without config.trim_db."""
    if config.trim_db is None:
        return 0, len(y)
    # Without trimming, how much silence pads a clip says which corpus (and so which emotions) it is from.
    start, stop = librosa.effects.trim(y, top_db=config.trim_db)[1]
    return int(start), int(stop)


def model_window(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The config.n_samples the model hears of a mono waveform y at config.sample_rate.

    Peak-normalises, trims silence at both ends (trimmed_span), and fixes the length to
    config.window_s around the centre. Raises SkipClip("silent").
    """
    y = peak_normalise(y)
    start, stop = trimmed_span(y, config)
    return fix_length(y[start:stop], config.n_samples)


def waveform_features(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Model input config.shape = (frames, features) for a mono waveform already at config.sample_rate:
    the frame_features of its model_window, and their deltas if config.deltas. Raises SkipClip("silent").
    """
    frames = frame_features(model_window(y, config), config)
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


def remove_clip_mean(X: np.ndarray) -> np.ndarray:
    """X (clips, frames, features) less each clip's own mean of each feature over its frames (cepstral mean
    normalisation).

    What a fixed channel adds to every frame cancels, as with standardise_per_clip, but each feature keeps its
    spread over time (how far a clip's loudness and timbre swing, a cue to arousal), which the model's
    Normalization layer then scales alike for every clip.
    """
    return (X - X.mean(axis=1, keepdims=True)).astype(np.float32)


PADDING_ATOL = 1e-3  # feature units: padding rows agree within 3e-5, the first row with sound differs by over 0.01


def padding_frames(X: np.ndarray) -> np.ndarray:
    """(clips, frames) bool: the frames of each clip in X (clips, frames, features) made of digital silence at
    either end: the zeros that fix_length pads a short clip with, or that a recording starts or ends with.

    Those frames are all alike (every frontend floors silence at one value): a run of at least two rows at the
    start equal to the first row, or at the end equal to the last, is padding. A window with sound, however
    quiet, to both ends (a live window, most long clips) has none.
    """
    def leading_run(Z):
        same = np.all(np.abs(Z - Z[:, :1]) <= PADDING_ATOL, axis=2)
        run = np.cumprod(same, axis=1).astype(bool)
        return run & (run.sum(axis=1, keepdims=True) >= 2)
    return leading_run(X) | leading_run(X[:, ::-1])[:, ::-1]


def standardise_speech_frames(X: np.ndarray) -> np.ndarray:
    """X (clips, frames, features) with each clip standardised like standardise_per_clip, but by the mean
    and standard deviation of its frames that are not zero padding (padding_frames); the padding becomes 0.

    How much padding a clip gets depends on how long it is (a TESS word is shorter than a RAVDESS sentence),
    and padding frames sit far below any speech: counted in, they set the statistics by the clip's length,
    not its sound. A window that is all padding (silence) becomes all 0.
    """
    active = ~padding_frames(X)[..., np.newaxis]
    n = np.maximum(active.sum(axis=1, keepdims=True), 1)
    mean = np.where(active, X, 0).sum(axis=1, keepdims=True) / n
    std = np.sqrt(np.where(active, (X - mean) ** 2, 0).sum(axis=1, keepdims=True) / n)
    return np.where(active, (X - mean) / (std + 1e-6), 0).astype(np.float32)


def speaker_statistics(X: np.ndarray, speakers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{speaker: (mean, std)} of each feature (features,) over all frames of that speaker's clips in X
    (clips, frames, features)."""
    speakers = np.asarray(speakers)
    return {str(s): (X[speakers == s].mean(axis=(0, 1)), X[speakers == s].std(axis=(0, 1)))
            for s in np.unique(speakers)}


def standardise_per_speaker(X: np.ndarray, speakers, statistics: dict | None = None) -> np.ndarray:
    """X (clips, frames, features) with each speaker's clips standardised by statistics[speaker] (from
    speaker_statistics), or, for a speaker not in statistics, by that speaker's own clips in X.

    This removes much of what a voice adds to every frame (vocal tract, microphone, level), which a model
    would otherwise learn as identity. Pass the statistics of the training side so that test clips never
    shape them; a speaker the model never heard can only be standardised by their own clips (enrolment).
    """
    speakers, statistics = np.asarray(speakers), dict(statistics or {})
    unseen = ~np.isin(speakers, list(statistics))
    statistics.update(speaker_statistics(X[unseen], speakers[unseen]))
    out = np.empty_like(X)
    for speaker in np.unique(speakers):
        mean, std = statistics[str(speaker)]
        mine = speakers == speaker
        out[mine] = (X[mine] - mean) / (std + 1e-6)
    return out


def normalised(X: np.ndarray, speakers, norm: str, statistics: dict | None = None) -> np.ndarray:
    """X (clips, frames, features) as a model trained with `norm` (one of recipes.NORMS) takes it: unchanged,
    standardise_per_clip, standardise_speech_frames, remove_clip_mean, or standardise_per_speaker with the given
    training-side statistics."""
    if norm == "clip":
        return standardise_per_clip(X)
    if norm == "mean":
        return remove_clip_mean(X)
    if norm == "speech":
        return standardise_speech_frames(X)
    if norm == "speaker":
        return standardise_per_speaker(X, speakers, statistics)
    return X


# ---------------------------------------------------------------------------------------------
# Extraction and cache


@dataclass
class FeatureSet:
    """Features of the clips that could be read, aligned with their index rows."""

    X: np.ndarray  # (n_clips, *config.shape) float32
    clips: pd.DataFrame  # the index rows of X, in order
    skipped: pd.DataFrame  # columns path, reason: clips that gave no features
    n_extracted: int  # clips computed in this call; the rest came from the cache

    def skip_line(self) -> str | None:
        if self.skipped.empty:
            return None
        counts = self.skipped["reason"].value_counts()
        names = ", ".join(Path(p).name for p in self.skipped["path"][:5])
        more = " ..." if len(self.skipped) > 5 else ""
        return (f"skipped {len(self.skipped)} clips (" + ", ".join(f"{n} {r}" for r, n in counts.items())
                + f"): {names}{more}")


@contextmanager
def atomic_output(path: str | Path):
    """Yield a temporary path beside `path` to write; on success it replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # same suffix: Keras checks it
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data) -> Path:
    """data as indented JSON at path, written atomically, its folder made if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return path


def cache_key(path: str | Path) -> str | None:
    """The cache's name for a file: the hash of its bytes, so that an edit is seen whatever its
    modification time says (`cp -p`, `rsync -t` keep it), and a file moved or linked elsewhere is still
    known. None if the file cannot be read."""
    try:
        return content_digest(path)
    except OSError:
        return None


@dataclass(frozen=True)
class Variant:
    """A seeded change to every clip's audio before its features are made (a corrupted copy), cached apart.

    name: what the cache folder is called after, to be changed whenever the function would give other audio;
    function(y, key): y (n,) at the config's rate, changed, seeded by key (the file's cache_key).
    """

    name: str
    function: object


def extraction_threads() -> int:
    """Threads to extract features on: every core, or a cluster worker's share of them (SER_THREADS, which
    cluster.limit_threads sets)."""
    return int(os.environ.get("SER_THREADS", 0)) or os.cpu_count() or 1


def _features_or_reason(path: str, key: str | None, config: FeatureConfig, variant: Variant | None) -> np.ndarray | str:
    try:
        y = load_audio(path, config.sample_rate)
        return waveform_features(variant.function(y, key) if variant else y, config)
    except SkipClip as skip:
        return str(skip)


def read_cache(folder: Path, config: FeatureConfig) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(features by cache key, skip reason by cache key) from the shards in a cache folder. A shard that
    cannot be read is deleted, with a warning, and its clips are extracted again."""
    features, skips = {}, {}
    for shard in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(shard, allow_pickle=False) as z:
                keys, X = z["keys"], z["features"]
                skip_keys, reasons = z["skip_keys"], z["skip_reasons"]
                if X.shape[1:] != config.shape or len(keys) != len(X) or len(skip_keys) != len(reasons):
                    raise ValueError("shapes do not match its config")
                features.update(zip(keys.tolist(), X, strict=True))
                skips.update(zip(skip_keys.tolist(), reasons.tolist(), strict=True))
        except Exception as e:  # noqa: BLE001 - any failure to read means the same thing: rebuild
            log.warning(f"feature cache {shard} is unreadable ({type(e).__name__}: {e}); rebuilding it")
            shard.unlink(missing_ok=True)
    return features, skips


def write_shard(folder: Path, config: FeatureConfig, features: dict[str, np.ndarray], skips: dict[str, str]) -> Path:
    """A new shard file in the cache folder holding these entries, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    X = np.stack(list(features.values())) if features else np.zeros((0, *config.shape), np.float32)
    shard = folder / f"{time.time_ns()}-{os.getpid()}.npz"
    with atomic_output(shard) as tmp, open(tmp, "wb") as f:
        np.savez(f, keys=np.array(list(features), dtype=str), features=X,
                 skip_keys=np.array(list(skips), dtype=str), skip_reasons=np.array(list(skips.values()), dtype=str))
    return shard


def add_to_cache(folder: Path, config: FeatureConfig, features: dict[str, np.ndarray], skips: dict[str, str]) -> None:
    """Append new entries to a cache folder as one more shard, so that a few new clips do not rewrite the
    rest; past MAX_CACHE_SHARDS, every shard is merged into one."""
    old = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if len(old) < MAX_CACHE_SHARDS:
        write_shard(folder, config, features, skips)
        return
    cached, cached_skips = read_cache(folder, config)
    write_shard(folder, config, {**cached, **features}, {**cached_skips, **skips})
    for shard in old:
        shard.unlink(missing_ok=True)


def load_features(clips: pd.DataFrame, config: FeatureConfig, cache_dir: str | Path | None = "cache",
                  workers: int | None = None, variant: Variant | None = None) -> FeatureSet:
    """Features of every clip in an index table, from the cache where it has them.

    The cache is a folder per config digest in cache_dir (None: no cache), keyed by the hash of each
    file's bytes (cache_key), so edited files are recomputed and a second run extracts nothing. Skips
    are cached too, except "unreadable", which may pass (a disk or network share that comes back).
    Missing clips are extracted on `workers` threads (default: all cores) with a progress bar.
    variant: features of changed audio instead (a Variant), cached in a folder of their own.
    """
    name = f"{config.frontend}-{config.digest()}" + (f"-{variant.name}" if variant else "")
    folder = Path(cache_dir) / name if cache_dir is not None else None
    cached, cached_skips = read_cache(folder, config) if folder else ({}, {})
    keys = [cache_key(p) for p in clips["path"]]
    todo = [(k, p) for k, p in zip(keys, clips["path"], strict=True)
            if k is None or (k not in cached and k not in cached_skips)]
    reasons = {}  # row path -> skip reason, for files unreadable in this call
    new, new_skips = {}, {}
    if todo:
        # Each thread runs its own FFTs; a multi-threaded BLAS underneath only fights them for cores.
        with threadpool_limits(1), ThreadPoolExecutor(workers or extraction_threads()) as pool:
            results = pool.map(_features_or_reason, [p for _, p in todo], [k for k, _ in todo], [config] * len(todo),
                               [variant] * len(todo))
            for (key, path), result in tqdm(zip(todo, results, strict=True), total=len(todo),
                                            desc=variant.name if variant else "MFCC", unit="clip", disable=None):
                if isinstance(result, str) and (key is None or result == "unreadable"):
                    reasons[path] = result
                elif isinstance(result, str):
                    new_skips[key] = result
                else:
                    new[key] = result
        cached.update(new)
        cached_skips.update(new_skips)
        if folder and (new or new_skips):
            add_to_cache(folder, config, new, new_skips)
    ok = np.array([k in cached for k in keys], dtype=bool)
    X = np.stack([cached[k] for k in keys if k in cached]) if ok.any() else np.zeros((0, *config.shape), np.float32)
    skipped = pd.DataFrame({"path": clips["path"][~ok].tolist(),
                            "reason": [reasons.get(p) or cached_skips[k]
                                       for p, k, good in zip(clips["path"], keys, ok, strict=True) if not good]})
    return FeatureSet(X=X, clips=clips[ok].reset_index(drop=True), skipped=skipped, n_extracted=len(todo))
