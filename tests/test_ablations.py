"""bench/ablations.py: its model variants train, mixup blends clips and labels alike, ensembles average."""
import dataclasses
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, separable_features

sys.path.insert(0, str(ROOT / "bench"))
import ablations  # noqa: E402
from config import EMOTIONS, RECIPES  # noqa: E402


@pytest.mark.slow
def test_every_variant_builds_and_learns_a_separable_task():
    X, y = separable_features(256)
    ablations.models.MODELS.update(ablations.VARIANTS)
    for name in ablations.VARIANTS:  # the variants are --model choices of ablations.py only
        recipe = dataclasses.replace(RECIPES["pooled"], epochs=8, augment=False, model=name)
        model, history, _ = ablations.training.train(X, y, X, y, recipe, seed=0, verbose=0)
        assert model.output_shape == (None, len(EMOTIONS)), name
        assert history["accuracy"].max() > 0.5, name  # chance is 1/8; BatchNorm's moving statistics lag on val


def test_mixup_blends_each_clip_and_its_label_by_the_same_weight():
    n = 64
    X = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, 130, 13), np.float32)
    y = np.eye(n, dtype=np.float32)
    xm, ym = (t.numpy() for t in ablations.mixup(X, y, alpha=0.4))
    assert xm.shape == X.shape and np.allclose(ym.sum(axis=1), 1)
    assert np.allclose(xm[:, 0, 0], ym @ np.arange(n))  # the clip's level is the label-weighted mix of levels
    assert (ym.max(axis=1) < 1).any()  # some clips are blended


def test_an_ensemble_averages_models_of_different_seeds():
    X, y = separable_features(64)
    recipe = dataclasses.replace(RECIPES["pooled"], epochs=1, augment=False)
    ensemble, history, best_epoch = ablations.with_ensemble(2)(X, y, X, y, recipe, seed=0, verbose=0)
    members = [layer for layer in ensemble.layers if isinstance(layer, ablations.keras.Model)]
    assert len(members) == 2 and len(history) == 1
    each = [m.predict(X, verbose=0) for m in members]
    assert not np.allclose(each[0], each[1])  # different seeds, different models
    assert np.allclose(ensemble.predict(X, verbose=0), (each[0] + each[1]) / 2, atol=1e-6)


def test_call_times_cover_the_default_and_every_variant():
    times = ablations.call_times_ms(n_calls=3)
    assert set(times) == {"pooled", *ablations.VARIANTS}
    # The clock times the call it is given: never less than a 2 ms sleep.
    slept = ablations.bench_live.hop_times_ms(lambda _: time.sleep(0.002), range(5))
    assert len(slept) == 5 and slept.min() >= 2.0
