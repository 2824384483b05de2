"""Per-hop cost of live prediction: resampling + MFCC + model, on real corpus audio at a device rate.

    python bench/bench_live.py --model-dir models/seed-cnn [--device-rate 48000] [--hops 300]

Prints median and p95 milliseconds per hop for the way predict_live.py calls the model
(Keras' compiled predict function), the same hop through the exported TFLite model (LiteRT)
and ONNX model (onnxruntime), and, for comparison, an eager `model(x)` call and
`model.predict`; ratios are to the Keras hop. Missing exports are written first with
export_model.py. First calls (numba, tracing) are paid before timing.
"""
import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpora  # noqa: E402
import features  # noqa: E402
import inference  # noqa: E402


def hop_times_ms(step, windows) -> np.ndarray:
    times = []
    for window in windows:
        start = time.perf_counter()
        step(window)
        times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models/latest")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--device-rate", type=int, default=48000)
    p.add_argument("--hops", type=int, default=300)
    args = p.parse_args()
    import modeldir  # once the arguments are good: TensorFlow takes seconds to load
    model_dir = Path(args.model_dir)
    saved = modeldir.load_model_dir(model_dir)
    if not (model_dir / inference.TFLITE_FILE).exists() or not (model_dir / inference.ONNX_FILE).exists():
        print(f"exporting {model_dir} (export_model.py --onnx)")
        modeldir.export_model_dir(model_dir, onnx=True)
    classifiers = {name: inference.LiveClassifier(inference.Predictor(saved, exported), args.device_rate, smoothing=0)
                   for name, exported in [("predict_live (Keras predict_on_batch)", None),
                                          ("predict_live --tflite (LiteRT)", model_dir / inference.TFLITE_FILE),
                                          ("predict_live --onnx (onnxruntime)", model_dir / inference.ONNX_FILE)]}
    for classify in classifiers.values():
        classify.warm_up()

    clips, _ = corpora.index_corpus(args.data_dir)
    paths = clips["path"].sample(n=min(args.hops, len(clips)), random_state=0, replace=args.hops > len(clips))
    window_samples = round(saved.config.window_s * args.device_rate)
    windows = [features.fix_length(features.load_audio(p, args.device_rate), window_samples) for p in paths]

    rows = [(name, hop_times_ms(functools.partial(classify, time_s=0.0), windows))
            for name, classify in classifiers.items()]
    direct = rows[0][1]

    def hop_with(call):
        def step(window):
            y = features.resample(window, args.device_rate, saved.config.sample_rate)
            call(features.normalised(features.waveform_features(y, saved.config)[np.newaxis], saved.norm))
        step(windows[0])
        return hop_times_ms(step, windows)

    rows += [("eager model(x)", hop_with(lambda x: saved.model(x, training=False))),
             ("model.predict", hop_with(lambda x: saved.model.predict(x, verbose=0)))]
    for name, t in rows:
        print(f"{name:40} median {np.median(t):6.2f} ms  p95 {np.percentile(t, 95):6.2f} ms  "
              f"({np.median(t) / np.median(direct):4.1f}x)")
    print(f"{len(direct)} hops of real clips at {args.device_rate} Hz; "
          f"hop budget {inference.DEFAULT_HOP_S * 1000:.0f} ms")


if __name__ == "__main__":
    main()
