"""The feature cache: features of every clip by the hash of its bytes, in a folder per feature config and
library versions, extracted on all cores where missing.

    data = cache.load_features(clips, config, cache_dir="cache")   # data.X (clips, frames, features)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import features
from config import FeatureConfig, extraction_threads, library_versions
from corpora import content_digest
from fileio import atomic_output, is_special_file

log = logging.getLogger("ser")

# Bump when the feature code changes in a way FeatureConfig does not capture, to retire old caches.
CACHE_FORMAT = 2
# The libraries whose versions can change the features: a new version means a new cache.
FEATURE_LIBRARIES = ("librosa", "soxr", "soundfile", "numpy", "scipy", "ctranslate2", "opensmile")
# A cache folder holding more shards than this is merged into one.
MAX_CACHE_SHARDS = 8


def config_digest(config: FeatureConfig) -> str:
    """Short hash of the config's identity (with the encoder's SHA-256, not its folder), the cache format and the
    feature libraries' versions: features made under equal digests are equal."""
    text = json.dumps({"config": config.identity(), "format": CACHE_FORMAT,
                       "versions": library_versions(FEATURE_LIBRARIES, python=False)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class FeatureSet:
    """Features of the clips that could be read, aligned with their index rows."""

    X: np.ndarray  # (n_clips, *config.shape): float32 MFCCs, or float16 pretrained features
    clips: pd.DataFrame  # the index rows of X, in order
    skipped: pd.DataFrame  # columns path, reason: clips that gave no features
    n_extracted: int  # clips computed in this call; the rest came from the cache

    def skip_line(self) -> str | None:
        if self.skipped.empty:
            return None
        counts = self.skipped["reason"].value_counts()
        names = ", ".join(Path(p).name for p in self.skipped["path"][:5])
        more = " ..." if len(self.skipped) > 5 else ""
        return (f"skipped {len(self.skipped)} clips (" + ", ".join(f"{n} {r}" for r, n in counts.items())
                + f"): {names}{more}")


def cache_key(path: str | Path) -> str | None:
    """The cache's name for a file: the hash of its bytes, so that an edit is seen whatever its
    modification time says (`cp -p`, `rsync -t` keep it), and a file moved or linked elsewhere is still
    known. None if the file cannot be read, or must not be opened (fileio.is_special_file)."""
    if is_special_file(path):
        return None
    try:
        return content_digest(path)
    except OSError:
        return None


@dataclass(frozen=True)
class Variant:
    """A seeded change to every clip's audio before its features are made (a corrupted copy), cached apart.

    name: what the cache folder is called after, to be changed whenever the function would give other audio;
    function(y, key): y (n,) at the config's rate, changed, seeded by key (the file's cache_key).
    """

    name: str
    function: object


def _features_or_reason(path: str, key: str | None, config: FeatureConfig, variant: Variant | None) -> np.ndarray | str:
    try:
        y = features.long_enough(features.load_audio(path, config.sample_rate), config)
        return features.waveform_features(variant.function(y, key) if variant else y, config)
    except features.SkipClip as skip:
        return str(skip)


def read_cache(folder: Path, config: FeatureConfig) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(features by cache key, skip reason by cache key) from the shards in a cache folder. A shard that
    cannot be read is deleted, with a warning, and its clips are extracted again."""
    features, skips = {}, {}
    for shard in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        try:
            with np.load(shard, allow_pickle=False) as z:
                keys, X = z["keys"], z["features"]
                skip_keys, reasons = z["skip_keys"], z["skip_reasons"]
                if X.shape[1:] != config.shape or len(keys) != len(X) or len(skip_keys) != len(reasons):
                    raise ValueError("shapes do not match its config")
                features.update(zip(keys.tolist(), X, strict=True))
                skips.update(zip(skip_keys.tolist(), reasons.tolist(), strict=True))
        except Exception as e:  # noqa: BLE001 - any failure to read means the same thing: rebuild
            log.warning(f"feature cache {shard} is unreadable ({type(e).__name__}: {e}); rebuilding it")
            shard.unlink(missing_ok=True)
    return features, skips


def write_shard(folder: Path, config: FeatureConfig, features: dict[str, np.ndarray], skips: dict[str, str]) -> Path:
    """A new shard file in the cache folder holding these entries, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    X = np.stack(list(features.values())) if features else np.zeros((0, *config.shape), np.float32)
    shard = folder / f"{time.time_ns()}-{os.getpid()}.npz"
    with atomic_output(shard) as tmp, open(tmp, "wb") as f:
        np.savez(f, keys=np.array(list(features), dtype=str), features=X,
                 skip_keys=np.array(list(skips), dtype=str), skip_reasons=np.array(list(skips.values()), dtype=str))
    return shard


def add_to_cache(folder: Path, config: FeatureConfig, features: dict[str, np.ndarray], skips: dict[str, str]) -> None:
    """Append new entries to a cache folder as one more shard, so that a few new clips do not rewrite the
    rest; past MAX_CACHE_SHARDS, every shard is merged into one."""
    old = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    if len(old) < MAX_CACHE_SHARDS:
        write_shard(folder, config, features, skips)
        return
    cached, cached_skips = read_cache(folder, config)
    write_shard(folder, config, {**cached, **features}, {**cached_skips, **skips})
    for shard in old:
        shard.unlink(missing_ok=True)


def load_features(clips: pd.DataFrame, config: FeatureConfig, cache_dir: str | Path | None = "cache",
                  workers: int | None = None, variant: Variant | None = None) -> FeatureSet:
    """Features of every clip in an index table, from the cache where it has them.

    The cache is a folder per config digest in cache_dir (None: no cache), keyed by the hash of each
    file's bytes (cache_key), so edited files are recomputed and a second run extracts nothing. Skips
    are cached too, except "unreadable", which may pass (a disk or network share that comes back).
    Missing clips are extracted on `workers` threads (default: all cores) with a progress bar.
    variant: features of changed audio instead (a Variant), cached in a folder of their own.
    """
    name = f"{config.frontend}-{config_digest(config)}" + (f"-{variant.name}" if variant else "")
    folder = Path(cache_dir) / name if cache_dir is not None else None
    cached, cached_skips = read_cache(folder, config) if folder else ({}, {})
    keys = [cache_key(p) for p in clips["path"]]
    todo = [(k, p) for k, p in zip(keys, clips["path"], strict=True)
            if k is None or (k not in cached and k not in cached_skips)]
    reasons = {}  # row path -> skip reason, for files unreadable in this call
    new, new_skips = {}, {}
    if todo:
        # Each thread runs its own FFTs; a multi-threaded BLAS underneath only fights them for cores.
        with threadpool_limits(1), ThreadPoolExecutor(workers or extraction_threads()) as pool:
            results = pool.map(_features_or_reason, [p for _, p in todo], [k for k, _ in todo], [config] * len(todo),
                               [variant] * len(todo))
            desc = variant.name if variant else config.frontend
            for (key, path), result in tqdm(zip(todo, results, strict=True), total=len(todo), desc=desc, unit="clip",
                                            disable=None):
                if isinstance(result, str) and (key is None or result == "unreadable"):
                    reasons[path] = result
                elif isinstance(result, str):
                    new_skips[key] = result
                else:
                    new[key] = result
        cached.update(new)
        cached_skips.update(new_skips)
        if folder and (new or new_skips):
            add_to_cache(folder, config, new, new_skips)
    ok = np.array([k in cached for k in keys], dtype=bool)
    X = np.stack([cached[k] for k in keys if k in cached]) if ok.any() else np.zeros((0, *config.shape), np.float32)
    skipped = pd.DataFrame({"path": clips["path"][~ok].tolist(),
                            "reason": [reasons.get(p) or cached_skips[k]
                                       for p, k, good in zip(clips["path"], keys, ok, strict=True) if not good]})
    return FeatureSet(X=X, clips=clips[ok].reset_index(drop=True), skipped=skipped, n_extracted=len(todo))

