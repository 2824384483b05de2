"""How a model is made, by name, and the command-line options that pick or override a recipe.

A recipe is a plain dict of options (RECIPES). `add_recipe_arguments` puts them on a parser,
`apply_recipe` fills in every option the user did not give from the chosen recipe. Standard
library only, so a script answers `--help` and argument errors before TensorFlow loads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

RECIPES = {
    # The seed's recipe exactly: its CNN on untrimmed MFCCs, Adam at 1e-3, nothing else.
    "reference": {"model": "seed", "trim_db": None, "frontend": "mfcc", "n_mfcc": 13,
                  "n_mels": 128, "floor_db": 80.0, "deltas": False, "norm": "none",
                  "augment": False, "lr_schedule": "constant", "label_smoothing": 0.0, "class_weights": False,
                  "balance": "none", "copies": 0, "epoch_copies": "all", "perturb_voice": False,
                  "mix_speaker_norm": False, "clip_view": False},
    # The most robust on speakers never heard without losing on clean speech (README, Results).
    "pooled": {"model": "pooled", "trim_db": 30.0, "frontend": "mfcc", "n_mfcc": 13,
               "n_mels": 128, "floor_db": 80.0, "deltas": True, "norm": "clip",
               "augment": True, "lr_schedule": "cosine", "label_smoothing": 0.0, "class_weights": False,
               "balance": "none", "copies": 1, "epoch_copies": "all", "perturb_voice": False,
               "mix_speaker_norm": False, "clip_view": False},
}
DEFAULT_RECIPE = "pooled"
NORMS = ("none", "clip", "speech", "mean", "speaker")  # how features are standardised: features.normalised
PER_CLIP_NORMS = ("clip", "speech", "mean")  # the norms that need nothing but the clip (or live window) itself
FRONTENDS = ("mfcc", "logmel", "pcen")  # what a frame of audio becomes: features.frame_features
# The architectures model.MODELS builds, in the order the recipes name them.
MODEL_NAMES = tuple(dict.fromkeys(r["model"] for r in RECIPES.values()))

DEFAULT_TEST_SPEAKERS = ("ravdess-21", "ravdess-22", "ravdess-23", "ravdess-24")  # two male, two female


def optional_db(text: str) -> float | None:
    """'30' -> 30.0; 'none' -> None (no trimming)."""
    return None if text.lower() == "none" else float(text)


def parse_speakers(text: str) -> list[str]:
    """'21,22' -> ['ravdess-21', 'ravdess-22']; corpus-qualified names ('tess-OAF') pass through."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    return [f"ravdess-{int(s):02d}" if s.isdigit() else s for s in names]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def output_file(text: str):
    """argparse type: a file to write, whose folder must exist (so a typo fails now, not after the work)."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; name a file")
    return path


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def parse_corpora(text: str) -> list[str]:
    """'ravdess, emodb' -> ['ravdess', 'emodb']."""
    return [name.strip().lower() for name in text.split(",") if name.strip()]


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--data-dir (one folder or several: corpora may live apart) and --corpora (which of those found to use)."""
    p.add_argument("--data-dir", nargs="+", default=["data"],
                   help="folders holding RAVDESS, TESS, EMO-DB and/or emotion folders (default: data)")
    p.add_argument("--corpora", type=parse_corpora,
                   help="comma-separated corpora to use of those found, e.g. ravdess,tess,emodb (default: all)")


def add_cross_validation_arguments(p: argparse.ArgumentParser) -> None:
    """evaluate_speakers.py's own options (bench/ablations.py takes them too): --folds, --without-tess, --out."""
    p.add_argument("--folds", choices=["selection", "published"], default="selection",
                   help="selection (default): 5 folds of 4 over actors 1-20, with actors 21-24 left out, to choose "
                        "recipes by; published: the 5 folds of published work over all 24 actors, to compare with "
                        "papers")
    p.add_argument("--without-tess", action="store_true", help="train on RAVDESS alone")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="run the folds once per seed (fold k of seed s trains with seed s + k), and report the "
                        "mean and std over all folds and seeds (default: --seed alone)")
    p.add_argument("--out", default="results/speakers")


SCHEDULER_TIMEOUT_S = 10.0  # how long a Dask scheduler, and its first worker, may take to answer


def scheduler_address(text: str) -> str:
    """argparse type: "local:N" (N at least 1), or a Dask scheduler's address such as tcp://host:8786."""
    if text.startswith("local:"):
        n = text.removeprefix("local:")
        if not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"local:N needs a number of workers of at least 1, not {n!r}")
    elif ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is neither local:N nor a scheduler address such as "
                                         f"tcp://host:8786")
    return text


def add_scheduler_arguments(p: argparse.ArgumentParser, job: str) -> None:
    """--scheduler and --scheduler-timeout: run `job` on a Dask cluster (cluster.py)."""
    p.add_argument("--scheduler", type=scheduler_address, metavar="ADDRESS",
                   help=f"{job} on the Dask cluster of this scheduler (tcp://host:8786), or on local:N, N worker "
                        f"processes on this machine (default: in this process)")
    p.add_argument("--scheduler-timeout", type=float, default=SCHEDULER_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the scheduler and its first worker (default {SCHEDULER_TIMEOUT_S:g})")


def add_recipe_arguments(p: argparse.ArgumentParser, model_names=MODEL_NAMES) -> None:
    """The options that define how a model is made, shared by train_model.py, evaluate_speakers.py and
    the benchmarks. model_names: what --model accepts (the benchmarks add their own variants).

    Call apply_recipe on the parsed arguments: options not given take the --recipe's value.
    """
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help=f"a named set of the options below (default: {DEFAULT_RECIPE}); "
                        + "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r.items())
                                    for name, r in RECIPES.items()))
    given = {"default": argparse.SUPPRESS}  # so apply_recipe can tell an option given from one left out
    p.add_argument("--model", choices=list(model_names), **given,
                   help="seed: the reference CNN; pooled: BatchNorm + global average pooling")
    p.add_argument("--trim-db", type=optional_db, **given,
                   help="trim leading/trailing audio this many dB below the peak before fixing the window; "
                        "none: no trimming")
    p.add_argument("--frontend", choices=FRONTENDS, **given,
                   help="what a frame is: --n-mfcc MFCCs of the log-mel spectrogram, its --n-mels bands in dB "
                        "(logmel), or their per-channel energy normalisation (pcen)")
    p.add_argument("--n-mfcc", type=positive_int, **given, help="MFCCs per frame")
    p.add_argument("--n-mels", type=positive_int, **given, help="mel bands the MFCCs or PCEN are made from")
    p.add_argument("--floor-db", type=positive_float, **given,
                   help="with the mfcc or logmel frontend: floor the log-mel spectrogram this many dB below its "
                        "loudest bin (80: librosa's default; lower fills in the quiet a noisy room would)")
    p.add_argument("--deltas", action=argparse.BooleanOptionalAction, **given,
                   help="append the deltas and delta-deltas of a frame's features")
    p.add_argument("--norm", choices=NORMS, **given,
                   help="standardise features per clip (each clip by itself, as one file or a live window is), "
                        "per clip by its speech (the same, without the zero padding of a short clip), per clip "
                        "by its mean alone (each feature's spread over time kept), per speaker "
                        "(by statistics of the speaker's training clips; live: running statistics of the session), "
                        "or not at all")
    p.add_argument("--mix-speaker-norm", action=argparse.BooleanOptionalAction, **given,
                   help="with a per-clip --norm: standardise a random half of the training clips by their "
                        "speaker's statistics instead (training.mixed_standardisation); validation, tests and "
                        "inference stay per clip")
    p.add_argument("--clip-view", action=argparse.BooleanOptionalAction, **given,
                   help="with --model pooled: the model sees each clip's features as --norm gives them and, beside "
                        "them, the same standardised per clip (model.BesideClipStandardised)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, **given,
                   help="time shift and SpecAugment-style masks while training")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], **given,
                   help="Adam's learning rate: constant 1e-3 (the reference), or cosine decay from 1e-3 to 0")
    p.add_argument("--label-smoothing", type=float, **given, help="label smoothing of the cross-entropy")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, **given,
                   help="weigh classes inversely to their frequency")
    p.add_argument("--balance", choices=["none", "speaker", "corpus"], **given,
                   help="weigh training clips so that every speaker (or every corpus) counts the same in the loss, "
                        "however many clips it has")
    p.add_argument("--copies", type=non_negative_int, **given,
                   help="train also on this many corrupted copies of each training clip (noise, rooms, telephone, "
                        "codecs, level: augment.training_corruption), made once and cached")
    p.add_argument("--epoch-copies", choices=["all", "one"], **given,
                   help="all: every epoch trains on each clip and on all its copies; one: every epoch trains on "
                        "each clip once, as itself or as one of its copies, drawn afresh (an epoch as short as "
                        "without copies)")
    p.add_argument("--perturb-voice", action=argparse.BooleanOptionalAction, **given,
                   help="shift each corrupted copy's pitch (up to 2 semitones) and tempo (0.9-1.1) before its "
                        "corruption, as another speaker might say it (augment.other_voice)")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seed", type=int, default=0, help="fixes the split and the initial weights")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")


def apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """args with every recipe option that was not given set from RECIPES[args.recipe]; exits with a one-line
    error where the options do not go together."""
    given = set(vars(args))
    for name, value in RECIPES[args.recipe].items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.mix_speaker_norm and args.norm not in PER_CLIP_NORMS:
        raise SystemExit(f"error: --mix-speaker-norm needs --norm {', '.join(PER_CLIP_NORMS)}, not {args.norm}")
    if "floor_db" in given and args.frontend == "pcen":
        raise SystemExit("error: --floor-db applies to the mfcc and logmel frontends, not pcen")
    if args.clip_view and args.model != "pooled":
        raise SystemExit(f"error: --clip-view needs --model pooled, not {args.model}")
    return args


def default_recipe() -> argparse.Namespace:
    """The options of the default recipe, as a script gets them with no option given."""
    p = argparse.ArgumentParser()
    add_recipe_arguments(p)
    return apply_recipe(p.parse_args([]))


def recipe_config(args):
    """The features.FeatureConfig that the recipe options ask for."""
    from features import FeatureConfig  # here, not at the top: this module stays free of the audio stack
    return FeatureConfig(trim_db=args.trim_db, frontend=args.frontend, n_mfcc=args.n_mfcc, n_mels=args.n_mels,
                         floor_db=args.floor_db, deltas=args.deltas)


def training_options(args) -> dict:
    """The recipe options that concern training alone."""
    return {"augment": args.augment, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr_schedule": args.lr_schedule, "label_smoothing": args.label_smoothing,
            "class_weights": args.class_weights, "balance": args.balance, "copies": args.copies,
            "epoch_copies": args.epoch_copies, "perturb_voice": args.perturb_voice,
            "mix_speaker_norm": args.mix_speaker_norm, "seed": args.seed}


def recipe_record(args) -> dict:
    """The recipe options, as cross-validation and benchmark results record them."""
    return {"recipe": args.recipe, "model": args.model, "clip_view": args.clip_view, "norm": args.norm,
            **training_options(args),
            "feature_config": recipe_config(args).to_dict()}
