"""The command-line options the scripts share.

    p = argparse.ArgumentParser()
    cli.add_recipe_arguments(p)
    args = p.parse_args()
    recipe = cli.recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size, copies=args.copies,
                        label_smoothing=args.label_smoothing, encoder_dir=args.encoder_dir)

Standard library only, so a script answers `--help` and argument errors before TensorFlow loads.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import DEFAULT_RECIPE, RECIPES, SCHEDULER_TIMEOUT_S, Recipe, make_recipe


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


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def unit_interval(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, not {text}")
    return value


def output_file(text: str) -> Path:
    """argparse type: a file to write, whose folder must exist (so a typo fails now, not after the work)."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; name a file")
    return path


def parse_corpora(text: str) -> tuple[str, ...]:
    """'ravdess, emodb' -> ('ravdess', 'emodb')."""
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--data-dir (one folder or several: corpora may live apart), --corpora (which of those found to use) and
    --cache-dir."""
    p.add_argument("--data-dir", nargs="+", default=["data"],
                   help="folders holding RAVDESS, TESS, EMO-DB and/or emotion folders (default: data)")
    p.add_argument("--corpora", type=parse_corpora,
                   help="comma-separated corpora to use of those found, e.g. ravdess,tess,emodb (default: all)")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """--recipe, and the few settings a user changes beside it; config.make_recipe makes the Recipe of them."""
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help=f"how the model is made (config.RECIPES; default: {DEFAULT_RECIPE}): whisper is a small head "
                        f"over Whisper tiny.en's encoder and eGeMAPS; pooled a CNN on MFCCs learnt from scratch; "
                        f"reference the seed's CNN")
    p.add_argument("--epochs", type=positive_int, help="training epochs (default: the recipe's, 40 or 50)")
    p.add_argument("--batch-size", type=positive_int, help="clips per batch (default: the recipe's, 32)")
    p.add_argument("--copies", type=non_negative_int,
                   help="corrupted copies of each training clip (noise, rooms, telephone, codecs, level), made once "
                        "and cached (default: the recipe's: pooled 1, the others 0)")
    p.add_argument("--label-smoothing", type=unit_interval, help="label smoothing of the cross-entropy (default 0)")
    p.add_argument("--seed", type=int, default=0, help="fixes the split and the initial weights (default 0)")
    add_encoder_argument(p, "whisper recipe: another CTranslate2 Whisper model folder in place of the shipped "
                            "tiny.en (one made by ct2-transformers-converter, or a faster-whisper model)")


def add_encoder_argument(p: argparse.ArgumentParser, help: str = "where the model's Whisper encoder lies, if not "
                         "where it was trained (its SHA-256 must match)") -> None:
    """--encoder-dir: the pretrained front end's CTranslate2 Whisper folder (pretrained.py)."""
    p.add_argument("--encoder-dir", metavar="DIR", help=help)


def recipe(name: str, *, encoder_dir: str | None = None, **settings) -> Recipe:
    """config.make_recipe(name, **settings), with its encoder in encoder_dir if given (pretrained.with_encoder). A
    folder that is not a Whisper model, or a recipe without an encoder, exits with a one-line error."""
    made = make_recipe(name, **settings)
    if encoder_dir is None:
        return made
    import pretrained  # only here: it loads openSMILE and CTranslate2
    try:
        return pretrained.with_encoder(made, encoder_dir)
    except (pretrained.EncoderError, ValueError) as e:
        sys.exit(f"error: {e}")


def add_cross_validation_arguments(p: argparse.ArgumentParser) -> None:
    """evaluate_speakers.py's own options (bench/ablations.py takes them too): --folds, --without-tess, --seeds,
    --out."""
    p.add_argument("--folds", choices=["selection", "published"], default="selection",
                   help="selection (default): 5 folds of 4 over actors 1-20, with actors 21-24 left out, to choose "
                        "recipes by; published: the 5 folds of published work over all 24 actors, to compare with "
                        "papers")
    p.add_argument("--without-tess", action="store_true", help="train on RAVDESS alone")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="run the folds once per seed (fold k of seed s trains with seed s + k), and report the "
                        "mean and std over all folds and seeds (default: --seed alone)")
    p.add_argument("--out", default="results/speakers")


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
