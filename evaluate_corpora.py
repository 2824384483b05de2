"""Across corpora: each corpus held out in turn, trained on the others, scored on it (leave one corpus out).

    python evaluate_corpora.py --data-dir ../shared/datasets ../shared/emodb --out results/corpora
    python evaluate_corpora.py --data-dir ../shared/datasets --corpora ravdess,tess   # RAVDESS <-> TESS

Each held-out corpus is scored twice: over all eight emotions the model knows, and with the
prediction restricted to the emotions that corpus has (TESS has no calm; EMO-DB has neither calm
nor surprised), the usual cross-corpus protocol. A tenth of the training corpora, stratified by
corpus and emotion, picks the best epoch. Prints a table and writes `loco.json` into --out.
"""
import argparse
import logging
import sys

import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_arguments(p)
    p.add_argument("--out", default="results/corpora")
    cli.add_recipe_arguments(p)
    args = p.parse_args(argv)
    recipe = cli.recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size, copies=args.copies,
                        label_smoothing=args.label_smoothing, encoder_dir=args.encoder_dir)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import corpora
    import evaluation
    import training
    try:
        return evaluation.run_leave_one_corpus_out(recipe, data_dirs=args.data_dir, corpus_names=args.corpora,
                                                   cache_dir=args.cache_dir, seed=args.seed, out=args.out)
    except (corpora.CorpusError, training.SplitError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
