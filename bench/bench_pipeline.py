"""Benchmark of the training pipeline on the full corpora: extraction speed, cache speed, epoch time, accuracy.

    python bench/bench_pipeline.py --data-dir ../shared/datasets [--seeds 0 1 2] [recipe options of train_model.py]

Cold extraction uses a fresh cache folder (the audio files themselves may be in the OS page
cache); librosa's one-off numba compilation is paid before the clock starts. The recipe's corrupted
training copies are made in the same fresh cache and timed: the cost that training copies made on
the fly would pay again in every epoch.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402
from config import DEFAULT_TEST_SPEAKERS  # noqa: E402


def main(argv=None, recipe_change=None):
    """recipe_change: a function of the Recipe that bench/ablations.py uses to put its variants in."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--splits", nargs="+", choices=["random", "speaker"], default=["random", "speaker"])
    cli.add_recipe_arguments(p)
    args = p.parse_args(argv)
    recipe = cli.recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size, copies=args.copies,
                        label_smoothing=args.label_smoothing, encoder_dir=args.encoder_dir)
    recipe = recipe_change(recipe) if recipe_change else recipe
    config = recipe.features
    import cache  # once the arguments are good: TensorFlow takes seconds to load
    import corpora
    import evaluation
    import features
    import training

    clips = corpora.select_corpora(corpora.index_corpus(args.data_dir)[0], args.corpora)
    features.clip_features(clips["path"][0], config)  # numba compilation, outside the timings
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        data = cache.load_features(clips, config, folder)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        clips = corpora.select_corpora(corpora.index_corpus(args.data_dir)[0], args.corpora)
        data = cache.load_features(clips, config, folder)
        cached = time.perf_counter() - start
        start = time.perf_counter()
        copies = training.corrupted_copies(data.X, data.clips, recipe, folder)
        made = time.perf_counter() - start
    print(f"clips: {len(data.X)} ({len(data.skipped)} skipped)")
    print(f"cold extraction: {cold:.1f} s, {len(data.X) / cold:.0f} files/s")
    print(f"cached load (index + cache): {cached:.2f} s")
    if copies:  # made once and cached; made on the fly, every epoch would pay this again for its clips
        print(f"corrupted copies, made once: {made:.1f} s, {1000 * made / (len(copies) * len(data.X)):.0f} ms a clip")
    print(f"recipe: {recipe}")
    for split in args.splits:
        results = []
        for seed in args.seeds:
            side = training.split(data.clips, recipe, split, seed, DEFAULT_TEST_SPEAKERS)
            start = time.perf_counter()
            fit, ev = evaluation.fit_and_evaluate(data.X, data.clips, side, recipe, seed, copies)
            per_epoch = (time.perf_counter() - start) / recipe.epochs
            results.append(ev)
            parts = "  ".join(f"{c} {s['accuracy']:.3f}" for c, s in ev["per_corpus"].items())
            print(f"{split:7} seed {seed}: accuracy {ev['accuracy']:.3f}  macro-F1 {ev['macro_f1']:.3f}  "
                  f"UAR {ev['uar']:.3f}  ({parts})  best epoch {fit.best_epoch}, {per_epoch:.2f} s/epoch")
        acc = np.array([r["accuracy"] for r in results])
        f1 = np.array([r["macro_f1"] for r in results])
        print(f"{split:7} mean over {len(acc)} seed(s): accuracy {acc.mean():.3f} ± {acc.std():.3f}, "
              f"macro-F1 {f1.mean():.3f} ± {f1.std():.3f}")


if __name__ == "__main__":
    main()
