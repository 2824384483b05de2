"""How fast each script answers --help and a bad argument: before TensorFlow loads, so well under 1 s.

    python bench/bench_help.py [--runs 5]

Runs every script as a user would (a new Python process each time) and prints the median wall
time of `--help` and of an unknown option, and the slowest script.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["train_model.py", "test_model.py", "predict_live.py", "evaluate_speakers.py", "evaluate_corpora.py",
           "export_model.py", "download_data.py", "demo/make_demo.py", "bench/bench_pipeline.py",
           "bench/bench_live.py", "bench/bench_help.py"]


def seconds(args: list[str]) -> float:
    """Wall time of one run of the project's Python with args, from the repository root."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    medians = {}
    print(f"{'script':28} {'--help':>8} {'bad option':>11}   (median of {args.runs} runs)")
    for script in SCRIPTS:
        helps = [seconds([script, "--help"]) for _ in range(args.runs)]
        errors = [seconds([script, "--no-such-option"]) for _ in range(args.runs)]
        medians[script] = max(statistics.median(helps), statistics.median(errors))
        print(f"{script:28} {statistics.median(helps):7.2f}s {statistics.median(errors):10.2f}s")
    slowest = max(medians, key=medians.get)
    print(f"slowest: {slowest}, {medians[slowest]:.2f} s")


if __name__ == "__main__":
    main()
