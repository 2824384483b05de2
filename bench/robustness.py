"""How a saved model holds up when its test audio is corrupted: noise, rooms, telephone, codecs, level.

    python train_model.py --data-dir ../shared/datasets --split speaker --model-dir models/speaker
    python bench/robustness.py --model-dir models/speaker --out results/robustness

The model's own test clips (for `--split speaker`, actors 21-24, whom it never heard) are
corrupted before their features are made, each under every condition of augment.CONDITIONS
(or --conditions), seeded per clip and condition so that every model meets the same audio.
Babble is made of clips of the model's training speakers, never of the test speakers. Writes
robustness.json, robustness.md (the table) and robustness.png (accuracy against SNR, one line
per noise, beside the other conditions) into --out.

Over the 5 folds by actor (evaluation.FOLDS, the published ones), a model per fold, each scored on
its own actors; the table gives the mean ± std over the folds, as evaluate_speakers.py does:

    for fold in 2,5,14,15,16 3,6,7,13,18 10,11,12,19,20 8,17,21,23,24 1,4,9,22; do
        python train_model.py --data-dir ../shared/datasets --split speaker --test-speakers $fold \\
            --model-dir models/fold-$fold
    done
    python bench/robustness.py --model-dir models/fold-* --out results/robustness-folds
"""
import argparse
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import augment  # noqa: E402
import cli  # noqa: E402
from config import extraction_threads  # noqa: E402


def condition(text: str) -> str:
    """argparse type: a condition that augment.parse_condition accepts."""
    try:
        augment.parse_condition(text)
    except augment.CorruptionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", nargs="+", default=["models/latest"],
                   help="a saved model, or several (one per fold): the table then gives their mean ± std")
    p.add_argument("--conditions", nargs="+", type=condition, default=list(augment.CONDITIONS),
                   help="e.g. clean white:10 babble:0 reverb:0.6 telephone mp3:16 (default: all of augment.CONDITIONS)")
    p.add_argument("--limit", type=cli.positive_int, help="use only this many test clips per model (a quick look)")
    p.add_argument("--seed", type=int, default=0, help="seeds every corruption")
    p.add_argument("--out", default="results/robustness")
    args = p.parse_args(argv)
    import corpora  # once the arguments are good: TensorFlow takes seconds to load
    import fileio
    import modeldir
    try:  # every model and its clips before any is scored: a bad last dir fails now, not minutes later
        tested = [saved_and_test_clips(model_dir, args.limit, args.seed) for model_dir in args.model_dir]
    except (modeldir.ModelDirError, corpora.CorpusError) as e:
        sys.exit(f"error: {e}")
    results = [model_robustness(model_dir, *saved_clips, args.conditions, args.seed)
               for model_dir, saved_clips in zip(args.model_dir, tested, strict=True)]
    result = results[0] if len(results) == 1 else pooled(results)
    out = Path(args.out)
    fileio.write_json(out / "robustness.json", result)
    with fileio.atomic_output(out / "robustness.md") as tmp:
        tmp.write_text(markdown_table(result) + "\n")
    title = (f"{Path(result['model_dir']).name} on {result['test_clips']} ({result['n']} clips)" if len(results) == 1
             else f"mean of {len(results)} models, each on its own test clips ({result['n']} clips in all)")
    with fileio.atomic_output(out / "robustness.png") as tmp:
        plot_robustness(result["conditions"], tmp, title=title)
    print(markdown_table(result))
    print(f"wrote {out / 'robustness.json'}, {out / 'robustness.md'} and {out / 'robustness.png'}")
    return result


def saved_and_test_clips(model_dir: str, limit: int | None, seed: int):
    """(the modeldir.SavedModel in model_dir, the index rows of its test clips, a description of them); with
    limit, that many of the clips drawn with seed."""
    import evaluation
    import modeldir
    saved = modeldir.load_model_dir(model_dir)
    clips, what = evaluation.clips_to_evaluate(saved, None)
    if limit:
        clips = clips.sample(min(limit, len(clips)), random_state=seed).reset_index(drop=True)
    return saved, clips, what


def model_robustness(model_dir: str, saved, clips, what: str, conditions: list[str], seed: int) -> dict:
    """One saved model's rows (robustness) on its test clips."""
    import features
    sr = saved.config.sample_rate
    clips, waves = readable_waves(clips, sr)
    talkers = readable_waves(training_clips(saved, seed), sr)[1]
    print(f"{model_dir} on {what}: {len(clips)} clips, {len(conditions)} conditions; "
          f"babble from {len(talkers)} clips of training speakers")
    features.waveform_features(waves[0], saved.config)  # librosa's compilation, before the first timing

    rows = robustness(saved, clips, waves, talkers, conditions, seed)
    return {"model_dir": str(model_dir), "test_clips": what, "n": len(clips), "seed": seed, "conditions": rows}


def corrupted_features(waves: list[np.ndarray], config, condition: str, seed: int,
                       talkers: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(features (n_ok, *config.shape), mask (n,) of the waves that gave features) of waveforms at
    config.sample_rate under one augment condition. Clip i's corruption is seeded by (seed, i, condition),
    so every model meets the same corrupted audio."""
    import features
    tag = zlib.crc32(condition.encode())

    def one(i: int):
        y = augment.corrupt(waves[i], config.sample_rate, condition, np.random.default_rng([seed, i, tag]), talkers)
        try:
            return features.waveform_features(y, config)
        except features.SkipClip:
            return None

    with threadpool_limits(1), ThreadPoolExecutor(extraction_threads()) as pool:
        results = list(pool.map(one, range(len(waves))))
    ok = np.array([r is not None for r in results])
    X = np.stack([r for r in results if r is not None]) if ok.any() else np.zeros((0, *config.shape), np.float32)
    return X, ok


def robustness(saved, clips, waves: list[np.ndarray], talkers: list[np.ndarray],
               conditions=augment.CONDITIONS, seed: int = 0) -> list[dict]:
    """A row per condition: a modeldir.SavedModel's accuracy and UAR (evaluate_saved) on the clips' waveforms
    (at the model's rate) corrupted so. talkers: clips of speakers outside the test set, for babble. Clips
    that a corruption leaves silent are counted in "skipped" and scored as wrong in the accuracy; the UAR is
    over the clips that gave features."""
    import evaluation
    rows = []
    for condition in conditions:
        start = time.perf_counter()
        X, ok = corrupted_features(waves, saved.config, condition, seed, talkers)
        result = evaluation.evaluate_saved(saved, X, clips[ok].reset_index(drop=True))
        rows.append({"condition": condition, "accuracy": result["accuracy"] * ok.mean(), "uar": result["uar"],
                     "n": len(waves), "skipped": int((~ok).sum())})
        print(f"{condition:12} accuracy {rows[-1]['accuracy']:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    return rows


def pooled(results: list[dict]) -> dict:
    """Several models' results (model_robustness) as one: per condition the mean and the standard deviation
    over the models of each figure, as the folds of evaluate_speakers.py are reported, and the clip counts
    summed."""
    rows = []
    for per_model in zip(*(r["conditions"] for r in results), strict=True):
        row = {"condition": per_model[0]["condition"]}
        for key in ("accuracy", "uar"):
            values = [r[key] for r in per_model]
            row[key], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
        row["n"], row["skipped"] = sum(r["n"] for r in per_model), sum(r["skipped"] for r in per_model)
        rows.append(row)
    return {"model_dirs": [r["model_dir"] for r in results], "n": sum(r["n"] for r in results),
            "seed": results[0]["seed"], "conditions": rows, "models": results}


def readable_waves(clips, sr: int):
    """(the rows of clips whose audio loads, their waveforms at sr)."""
    import features
    keep, waves = [], []
    for i, path in enumerate(clips["path"]):
        try:
            waves.append(features.load_audio(path, sr))
            keep.append(i)
        except features.SkipClip:
            continue
    return clips.iloc[keep].reset_index(drop=True), waves


def training_clips(saved, seed: int):
    """The model's training clips, shuffled: the voices that babble may use."""
    import corpora
    clips, _ = corpora.index_corpus(saved.metadata.get("data_dirs") or saved.metadata["data_dir"])
    train = clips[clips["relpath"].isin(saved.metadata["split"]["train"])]
    return train.sample(frac=1, random_state=seed).head(augment.BABBLE_POOL).reset_index(drop=True)


def figure(row: dict, key: str) -> str:
    """A row's figure to three places, with its spread over models when it has one."""
    return f"{row[key]:.3f}" + (f" ± {row[key + '_std']:.3f}" if key + "_std" in row else "")


def markdown_table(result: dict) -> str:
    lines = ["| condition | accuracy | UAR |", "|---|---|---|"]
    for r in result["conditions"]:
        lines.append(f"| {r['condition']} | {figure(r, 'accuracy')} | {figure(r, 'uar')} |")
    return "\n".join(lines)


def plot_robustness(rows: list[dict], path, title: str) -> None:
    """Accuracy against SNR, a line per noise (clean at the right), and a bar per other condition; error bars
    of one standard deviation where the rows pool several models."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by = {r["condition"]: r["accuracy"] for r in rows}
    spread = {r["condition"]: r.get("accuracy_std", 0.0) for r in rows}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for noise in augment.NOISES:
        points = sorted((augment.parse_condition(c)[1], a, spread[c]) for c, a in by.items()
                        if c.startswith(f"{noise}:"))
        if points:
            snrs, accs, stds = zip(*points, strict=True)
            left.errorbar(snrs, accs, yerr=stds, marker="o", capsize=3, label=noise)
    if "clean" in by:
        left.axhline(by["clean"], color="grey", linestyle=":", label=f"clean ({by['clean']:.2f})")
    left.set(xlabel="SNR over the speech (dB)", ylabel="accuracy", ylim=(0, 1), title="additive noise")
    left.legend(fontsize=8)
    others = [c for c in by if c.split(":")[0] not in augment.NOISES]
    right.barh(others, [by[c] for c in others], xerr=[spread[c] for c in others], color="tab:blue", capsize=3)
    right.set(xlim=(0, 1), xlabel="accuracy", title="rooms, lines, codecs, level")
    right.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
