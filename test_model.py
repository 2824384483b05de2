"""Evaluate a saved model: accuracy, macro-F1, unweighted average recall, per-class report, confusion matrix.

    python test_model.py --model-dir models/seed-cnn                 # its own held-out test split
    python test_model.py --model-dir models/seed-cnn --data-dir my/  # every clip of another corpus folder

Prints the figures overall and per corpus. On its own test split it writes evaluation.json and
confusion_matrix.png into the model dir (or --out); on other folders, evaluation-on-<folders>.json
and confusion_matrix-on-<folders>.png beside them, so the model's own figures stay.
"""
import argparse
import logging
import sys
from pathlib import Path

import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/latest",
                   help="model dir from train_model.py (default: models/latest)")
    p.add_argument("--data-dir", nargs="+", default=None,
                   help="evaluate on every clip of these folders instead of the model's test split")
    p.add_argument("--out", help="folder for the result files (default: the model dir)")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    cli.add_encoder_argument(p)
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    return run(args)


def run(args) -> dict:
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import corpora
    import evaluation
    import fileio
    import modeldir
    try:
        saved = modeldir.load_model_dir(args.model_dir, args.encoder_dir)
        X, clips, what = evaluation.model_features(saved, args.data_dir, args.cache_dir)
    except (modeldir.ModelDirError, corpora.CorpusError) as e:
        sys.exit(f"error: {e}")
    result = evaluation.evaluate_saved(saved, X, clips)
    print(f"{args.model_dir} on {what}:")
    print(evaluation.report_text(result))

    json_path, png_path = evaluation.result_paths(args.out or args.model_dir, args.data_dir)
    fileio.write_json(json_path, result)
    with fileio.atomic_output(png_path) as tmp:
        evaluation.plot_confusion_matrix(result["confusion_matrix"], saved.labels, tmp,
                                         title=f"{Path(args.model_dir).name} on {what}: accuracy "
                                               f"{result['accuracy']:.3f}, UAR {result['uar']:.3f}")
    print(f"wrote {json_path} and {png_path}")
    return result


if __name__ == "__main__":
    main()
