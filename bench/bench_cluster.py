"""Benchmark of the two cluster jobs against the same job in one process: end-to-end wall time of the
scripts, as a user waits for them (TensorFlow's import, the cluster's start and shut-down included).

    python bench/bench_cluster.py batch --model-dir models/latest --data-dir ../shared/datasets
    python bench/bench_cluster.py folds --data-dir ../shared/datasets --schedulers local:2 -- --seeds 0

batch: `predict_live.py --file DATA_DIR... --output` into a fresh file, so every file is classified
from its audio (batch classification keeps no feature cache; the audio may be in the OS page cache).
folds: `evaluate_speakers.py` with the options after `--`, with its feature cache as it is.
Each of --schedulers ("in-process", or a --scheduler value such as local:2) runs in turn; the
figures are printed as a table and written to --out as JSON.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    """Seconds that a command took; exits with its error output if it failed."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", choices=["batch", "folds"])
    p.add_argument("--data-dir", nargs="+", required=True)
    p.add_argument("--model-dir", default="models/latest", help="batch: the model that classifies")
    p.add_argument("--schedulers", nargs="+", default=["in-process", "local:2"])
    p.add_argument("--out", default="results/bench-cluster.json")
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # folds: evaluate_speakers.py's options follow "--"
    args, rest = p.parse_args(argv[:cut]), argv[cut + 1:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheduler in args.schedulers:
            where = [] if scheduler == "in-process" else ["--scheduler", scheduler]
            out = Path(tmp) / scheduler.replace(":", "-")
            if args.job == "batch":
                output = out.with_suffix(".parquet")
                seconds = timed(["predict_live.py", "--model-dir", args.model_dir, "--file", *args.data_dir,
                                 "--output", str(output), *where])
                n = len(pd.read_parquet(output))
                row = {"scheduler": scheduler, "files": n, "seconds": round(seconds, 1),
                       "files_per_s": round(n / seconds, 1)}
            else:
                seconds = timed(["evaluate_speakers.py", "--data-dir", *args.data_dir, "--out", str(out), *rest,
                                 *where])
                cv = json.loads((out / "cv.json").read_text())
                row = {"scheduler": scheduler, "folds": len(cv["folds"]), "minutes": round(seconds / 60, 1),
                       "longest_fold_minutes": round(max(f["seconds"] for f in cv["folds"]) / 60, 1),
                       "accuracy_mean": round(cv["accuracy_mean"], 3)}
            rows.append(row)
            print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    base = rows[0]
    for row in rows[1:]:
        key = "seconds" if args.job == "batch" else "minutes"
        print(f"{row['scheduler']}: {row[key] / base[key]:.2f} x the time of {base['scheduler']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"job": args.job, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
