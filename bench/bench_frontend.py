"""What the pretrained front end costs: per clip on one thread, and the cold extraction of whole corpora beside its
floor (the encoder's and openSMILE's time alone, spread over the extraction threads).

    python bench/bench_frontend.py --data-dir ../shared/datasets ../shared/emodb            # 200 clips, per clip
    python bench/bench_frontend.py --data-dir ../shared/datasets ../shared/emodb --cold     # and a cold extraction

Per clip: decoding and resampling, Whisper's log-mel and encoder (int8), eGeMAPS, and for comparison the pooled
recipe's MFCCs; medians over --clips clips. --cold extracts every clip into a fresh cache folder (and reads it back
once, the cached run), as training does. librosa's first call (numba) is paid before any clock starts.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cache  # noqa: E402
import cli  # noqa: E402
import corpora  # noqa: E402
import features  # noqa: E402
import pretrained  # noqa: E402
from config import RECIPES, WHISPER_FEATURES, extraction_threads  # noqa: E402


def seconds(step, items) -> np.ndarray:
    times = []
    for item in items:
        start = time.perf_counter()
        step(item)
        times.append(time.perf_counter() - start)
    return np.array(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_arguments(p)
    p.add_argument("--clips", type=int, default=200, help="clips timed one by one (default 200)")
    p.add_argument("--cold", action="store_true", help="also extract every clip into a fresh cache, and read it back")
    args = p.parse_args()
    clips = corpora.select_corpora(corpora.index_corpus(args.data_dir)[0], args.corpora)
    sample = clips["path"].sample(n=min(args.clips, len(clips)), random_state=0).tolist()
    config, mfcc = WHISPER_FEATURES, RECIPES["pooled"].features
    encoder = pretrained.config_encoder(config)
    features.waveform_features(features.load_audio(sample[0], config.sample_rate), config)  # numba, loading

    with threadpool_limits(1):
        decode = seconds(lambda path: features.load_audio(path, config.sample_rate), sample)
        audio = [features.load_audio(path, config.sample_rate) for path in sample]
        voices = [features.speech(y, config) for y in audio]
        windows = [features.fix_length(v, config.n_samples) for v in voices]
        encode = seconds(lambda w: pretrained.encoder_frames(w, encoder), windows)
        egemaps = seconds(pretrained.egemaps, voices)
        both = seconds(lambda y: features.waveform_features(y, config), audio)
        mfccs = seconds(lambda path: features.clip_features(path, mfcc), sample)
    rows = [("decode + resample to 16 kHz", decode), ("Whisper log-mel + encoder (int8)", encode),
            ("eGeMAPS (openSMILE)", egemaps), ("both, as features.waveform_features", both),
            ("pooled recipe's MFCCs, from the file", mfccs)]
    for name, t in rows:
        print(f"{name:40} median {np.median(t) * 1000:6.1f} ms  p95 {np.percentile(t, 95) * 1000:6.1f} ms")
    threads = extraction_threads()
    floor = len(clips) * (np.mean(encode) + np.mean(egemaps)) / threads
    print(f"{len(sample)} clips on one thread; floor of {len(clips)} clips on {threads} threads "
          f"(encoder + openSMILE alone): {floor:.0f} s")
    if not args.cold:
        return
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        data = cache.load_features(clips, config, folder)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        cache.load_features(clips, config, folder)
        warm = time.perf_counter() - start
    print(f"cold extraction of {len(data.X)} clips: {cold:.0f} s ({cold / floor:.2f}x the floor); "
          f"cached run: {warm:.1f} s")


if __name__ == "__main__":
    main()
