"""Evaluate a saved model: accuracy, macro-F1, unweighted average recall, per-class report, confusion matrix.

    python test_model.py --model-dir models/seed-cnn                 # its own held-out test split
    python test_model.py --model-dir models/seed-cnn --data-dir my/  # every clip of another corpus folder

Prints the figures overall and per corpus, and writes evaluation.json and confusion_matrix.png
into the model dir.
"""
import argparse
import logging
import sys
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/latest",
                   help="model dir from train_model.py (default: models/latest)")
    p.add_argument("--data-dir", nargs="+", default=None,
                   help="evaluate on every clip of these folders instead of the model's test split")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    return run(args)


def run(args) -> dict:
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import evaluation
    import features
    import model as models
    try:
        saved = models.load_model_dir(args.model_dir)
        X, clips, what = evaluation.model_inputs(saved, args.data_dir, args.cache_dir)
    except (models.ModelDirError, features.CorpusError) as e:
        sys.exit(f"error: {e}")
    probabilities = saved.model.predict(X, batch_size=256, verbose=0)
    result = evaluation.evaluate(probabilities, clips, saved.labels)
    print(f"{args.model_dir} on {what}:")
    print(evaluation.report_text(result))

    model_dir = Path(args.model_dir)
    features.write_json(model_dir / "evaluation.json", result)
    with features.atomic_output(model_dir / "confusion_matrix.png") as tmp:
        evaluation.plot_confusion_matrix(result["confusion_matrix"], saved.labels, tmp,
                                         title=f"{model_dir.name} on {what}: accuracy {result['accuracy']:.3f}, "
                                               f"UAR {result['uar']:.3f}")
    print(f"wrote {model_dir / 'evaluation.json'} and {model_dir / 'confusion_matrix.png'}")
    return result


if __name__ == "__main__":
    main()
