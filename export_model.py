"""Export a trained model for runtimes without Keras: TensorFlow Lite (LiteRT) and ONNX.

    python export_model.py --model-dir models/latest           # model.tflite, float32
    python export_model.py --model-dir models/latest --int8    # and model-int8.tflite (dynamic-range int8)
    python export_model.py --model-dir models/latest --onnx    # and model.onnx (tf2onnx)

The files go next to model.keras. What a runtime needs to make the input (labels, feature
config, standardisation) stays in metadata.json; `predict_live.py --tflite` and `--onnx`
use it. Each export is then checked against Keras on the model's own test clips (or every
clip of --data-dir): largest probability difference, top-label agreement, and accuracy.
"""
import argparse
import logging
import sys
from pathlib import Path

import cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("models/latest"))
    p.add_argument("--int8", action="store_true", help="also write model-int8.tflite, int8 weights")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx")
    p.add_argument("--data-dir", nargs="+",
                   help="check on every clip of these folders instead of the model's test split")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: cache)")
    cli.add_encoder_argument(p)
    p.add_argument("--no-check", action="store_true", help="skip the comparison with Keras")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")  # warnings only: libraries log at INFO on their first run
    return run(args)


def run(args) -> dict:
    # Imported once the arguments are good: TensorFlow takes seconds to load.
    import corpora
    import evaluation
    import features
    import inference
    import modeldir
    import training
    try:
        written = modeldir.export_model_dir(args.model_dir, int8=args.int8, onnx=args.onnx)
        for path in written:
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
        if args.no_check:
            return {}
        saved = modeldir.load_model_dir(args.model_dir, args.encoder_dir)
        X, clips, what = evaluation.model_features(saved, args.data_dir, args.cache_dir)
    except (modeldir.ModelDirError, corpora.CorpusError, modeldir.ExportError) as e:
        sys.exit(f"error: {e}")
    X = features.normalised(X, saved.norm)  # the exported model, like the Keras one, takes standardised input
    y = training.labels_of(clips, saved.labels)
    reference = saved.model.predict(X, batch_size=256, verbose=0)
    print(f"checked against Keras on {what} ({len(X)} clips):")
    checks = {}
    for path in written:
        checks[path.name] = a = evaluation.agreement(reference, inference.load_exported(path)(X), y)
        print(f"  {path.name:18} max |Δp| {a['max_abs_diff']:.1e}  top labels agree {a['top_label_agreement']:.3f}  "
              f"accuracy {a['accuracy_exported']:.3f} (Keras {a['accuracy_keras']:.3f})")
    return checks


if __name__ == "__main__":
    main()
