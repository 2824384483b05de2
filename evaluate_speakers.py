"""Speaker-independent accuracy: 5-fold cross-validation by RAVDESS actor, the folds of published work.

    python evaluate_speakers.py --data-dir ../shared/datasets --out results/speakers
    python evaluate_speakers.py --data-dir ../shared/datasets --recipe reference --out results/speakers-seed

Each fold trains on the RAVDESS actors outside it plus all of TESS, except two of those actors
(one of each gender) who pick the best epoch, and is tested on the fold's actors, whom it
never heard. Prints accuracy and UAR per fold and their mean ± std, and writes
`cv.json` and `confusion_matrix.png` (summed over folds) into --out.
"""
import argparse
import logging
import sys

import recipes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recipes.add_data_arguments(p)
    p.add_argument("--out", default="results/speakers")
    p.add_argument("--without-tess", action="store_true", help="train on RAVDESS alone")
    recipes.add_recipe_arguments(p)
    args = recipes.apply_recipe(p.parse_args(argv))
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import evaluation
    import features
    import training
    try:
        return evaluation.run_cross_validation(args)
    except (features.CorpusError, training.SplitError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
