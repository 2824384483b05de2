"""Example clips and pictures: what the model hears, and what it says.

    python demo/make_demo.py                                  # demo/clips/*.wav and their pictures
    python demo/make_demo.py --model-dir models/latest        # and each clip's class probabilities
    python demo/make_demo.py --plot path/to/clip.wav --out pictures/ [--model-dir M]
    python demo/make_demo.py --readme --data-dir data         # every picture of the README, anew

The clips are synthesised with espeak-ng at several pitches, rates and loudnesses; they are
not acted emotions, so what the model says of them is a demonstration, not a score. For each
clip it writes, one figure a file: the waveform (the model's window shaded), the 13 MFCCs as
the model sees them (resampled, normalised, the same window), and the log-mel spectrogram of
that window; with a model, the class probabilities too.

--readme trains the default recipe on the random and on the speaker split (train_model.py),
evaluates both (test_model.py) and copies their training curves and confusion matrices, with
a demo clip's waveform and MFCC, into demo/figures/: a few minutes on two cores.
"""
import argparse
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plot", nargs="+", type=Path, metavar="FILE", help="plot these files instead of the demo clips")
    p.add_argument("--out", type=Path, default=DEMO / "pictures", help="where pictures go (default: demo/pictures)")
    p.add_argument("--clips", type=Path, default=DEMO / "clips", help="where demo clips go (default: demo/clips)")
    p.add_argument("--model-dir", type=Path, help="also plot this model's class probabilities for each clip")
    p.add_argument("--readme", action="store_true", help="train, evaluate and redraw the README's figures")
    p.add_argument("--data-dir", default="data", help="with --readme: the corpora (default: data)")
    p.add_argument("--work-dir", type=Path, default=Path("models/readme"),
                   help="with --readme: where its models go (default: models/readme)")
    args = p.parse_args(argv)
    # Imported once the arguments are good: plotting and TensorFlow take seconds to load.
    import drawing
    import modeldir
    try:
        if args.readme:
            written = drawing.readme_figures(args.data_dir, args.work_dir, DEMO / "figures", args.clips)
        else:
            missing = [str(path) for path in args.plot or [] if not path.is_file()]
            if missing:
                raise drawing.DemoError(f"no such file: {', '.join(missing)}")
            saved = modeldir.load_model_dir(args.model_dir) if args.model_dir is not None else None
            paths = args.plot or drawing.synthesise_clips(args.clips)
            written = drawing.clip_pictures(paths, args.out, saved, args.model_dir.name if saved else "")
    except (drawing.DemoError, modeldir.ModelDirError) as e:
        sys.exit(f"error: {e}")
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
