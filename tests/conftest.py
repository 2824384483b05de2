"""Shared fixtures: the real corpora beside the checkout, small corpora built from them, and trained models; the
markers of pytest.ini, set by what a test uses."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
ORIGINALS = SHARED / "audio-originals"
EMODB = SHARED / "emodb"


# A test that uses one of these fixtures is marked so: -m "not slow" leaves out every test that needs a model trained.
MARKED_BY_FIXTURE = {"full_model": "slow", "brief_model": "slow", "trained": "slow", "trained_pooled": "slow",
                     "scheduler": "cluster", "pulse": "audio", "server": "network"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture in MARKED_BY_FIXTURE.keys() & set(item.fixturenames):
            item.add_marker(MARKED_BY_FIXTURE[fixture])
        if item.get_closest_marker("cluster"):
            item.add_marker("slow")


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not (DATASETS / "ravdess").is_dir() or not (DATASETS / "tess").is_dir():
        pytest.skip(f"the shared corpora are not at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def emodb() -> Path:
    if not EMODB.is_dir():
        pytest.skip(f"the shared EMO-DB copy is not at {EMODB}")
    return EMODB


@pytest.fixture(scope="session")
def originals() -> Path:
    if not ORIGINALS.is_dir():
        pytest.skip(f"the shared original files are not at {ORIGINALS}")
    return ORIGINALS


def link_subset(datasets: Path, target: Path, actors=(1, 2, 21, 22, 23, 24), tess_per_folder=8) -> Path:
    """A corpus folder of symlinks: all clips of some RAVDESS actors and a few clips of every TESS folder."""
    for actor in actors:
        src = datasets / "ravdess" / f"Actor_{actor:02d}"
        dst = target / "ravdess" / src.name
        dst.mkdir(parents=True)
        for f in sorted(src.iterdir()):
            (dst / f.name).symlink_to(f)
    for folder in sorted((datasets / "tess").iterdir()):
        dst = target / "tess" / folder.name
        dst.mkdir(parents=True)
        for f in sorted(folder.iterdir())[:tess_per_folder]:
            (dst / f.name).symlink_to(f)
    return target


@pytest.fixture(scope="session")
def sparse_corpus(datasets, tmp_path_factory) -> Path:
    """Every tenth clip of each of the 24 RAVDESS actors, and ten of TESS's: every fold set, quickly."""
    corpus = tmp_path_factory.mktemp("sparse-corpus")
    for actor in range(1, 25):
        folder = corpus / "ravdess" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for clip in sorted((datasets / "ravdess" / folder.name).iterdir())[::10]:
            (folder / clip.name).symlink_to(clip)
    (corpus / "tess").mkdir()
    for clip in sorted((datasets / "tess" / "OAF_sad").iterdir())[:10]:
        (corpus / "tess" / clip.name).symlink_to(clip)
    return corpus


@pytest.fixture(scope="session")
def small_corpus(datasets, tmp_path_factory) -> Path:
    return link_subset(datasets, tmp_path_factory.mktemp("small-corpus"))


def run_script(*args, env_extra=None, timeout=600):
    """Run one of the project's scripts as a user would; returns the CompletedProcess."""
    import subprocess
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def full_model(datasets, tmp_path_factory):
    """The default model trained as a user would, on the full shared corpora with the random split."""
    import train_model
    out = tmp_path_factory.mktemp("full-model")
    model_dir = train_model.main(["--data-dir", str(datasets), "--model-dir", str(out / "model"),
                                  "--cache-dir", str(out / "cache")])
    return model_dir, out / "cache"


@pytest.fixture(scope="session")
def brief_model(small_corpus, tmp_path_factory):
    """The default recipe trained for three epochs on the small corpus, without corrupted copies (quick to make)."""
    import train_model
    out = tmp_path_factory.mktemp("brief-model")
    model_dir = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(out / "model"),
                                  "--cache-dir", str(out / "cache"), "--split", "speaker", "--epochs", "3",
                                  "--copies", "0"])
    return model_dir, out / "cache"


def separable_features(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features whose class is told by the level of one coefficient: (n, 130, 13) and labels 0..7."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 8
    X = rng.normal(size=(n, 130, 13)).astype(np.float32)
    X[:, :, 0] += 4 * y[:, None]
    return X, y
