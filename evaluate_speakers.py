"""Speaker-independent accuracy: 5-fold cross-validation by RAVDESS actor.

    python evaluate_speakers.py --data-dir ../shared/datasets --out results/speakers
    python evaluate_speakers.py --data-dir ../shared/datasets --folds published --out results/published
    python evaluate_speakers.py --data-dir /shared/corpora --seeds 0 1 2 --scheduler tcp://10.0.0.5:8786

`--folds selection` (default) is how recipes are chosen: 5 folds of 4 over actors 1-20, while
actors 21-24 are left out of the data altogether, so that the speaker split's test actors stay
out of every choice. `--folds published` runs the folds of published RAVDESS work over all 24
actors, to compare with papers.

Each fold trains on the RAVDESS actors outside it plus the other corpora, except two of those
actors (one of each gender) who pick the best epoch, and is tested on the fold's actors, whom it
never heard. Prints accuracy and UAR per fold and their mean ± std, and writes `cv.json` and
`confusion_matrix.png` (summed over folds) into --out.

With --seeds, every fold runs once per seed. With --scheduler, every (fold, seed) pair is a task on a
Dask cluster (or on local:N worker processes); the workers read --data-dir and --cache-dir at the
paths this machine has, so those must be on storage that they share.
"""
import argparse
import logging
import sys

import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_arguments(p)
    cli.add_cross_validation_arguments(p)
    cli.add_recipe_arguments(p)
    cli.add_scheduler_arguments(p, "run the folds")
    args = p.parse_args(argv)
    recipe = cli.recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size, copies=args.copies,
                        label_smoothing=args.label_smoothing, encoder_dir=args.encoder_dir)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import cluster
    import corpora
    import evaluation
    import training
    client = None
    try:
        client = cluster.connect(args.scheduler, args.scheduler_timeout) if args.scheduler else None
        return evaluation.run_cross_validation(recipe, data_dirs=args.data_dir, corpus_names=args.corpora,
                                               cache_dir=args.cache_dir, folds=args.folds,
                                               without_tess=args.without_tess, seeds=args.seeds or [args.seed],
                                               out=args.out, client=client)
    except (corpora.CorpusError, training.SplitError, cluster.ClusterError) as e:
        sys.exit(f"error: {e}")
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    main()
