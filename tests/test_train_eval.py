"""Splits, a short real training run with every artifact, evaluation, and the scripts' one-line errors."""
import argparse
import json

import numpy as np
import pandas as pd
import pytest

import evaluation
import features as F
import model as models
import recipes
import test_model
import train_model
import training
from conftest import run_script

# ---------------------------------------------------------------------------------------------
# Splits


@pytest.fixture(scope="module")
def clips(datasets):
    return F.index_corpus(datasets)[0]


def test_random_split_is_stratified_reproducible_and_keeps_duplicates_together(clips):
    side = training.random_split(clips, seed=0)
    assert np.array_equal(side, training.random_split(clips, seed=0))
    assert not np.array_equal(side, training.random_split(clips, seed=1))
    shares = pd.Series(side).value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.01 and abs(shares["val"] - 0.1) < 0.01
    by_class = pd.crosstab(clips["corpus"] + clips["emotion"], side, normalize="index")
    assert by_class["test"].between(0.17, 0.23).all()
    assert (pd.Series(side).groupby(clips["group"].to_numpy()).nunique() == 1).all()


def test_speaker_split_holds_out_whole_speakers(clips):
    side = training.speaker_split(clips, list(recipes.DEFAULT_TEST_SPEAKERS), seed=0)
    assert sorted(clips.loc[side == "test", "speaker"].unique()) == list(recipes.DEFAULT_TEST_SPEAKERS)
    val = clips[side == "val"].drop_duplicates("speaker")
    assert len(val) == 2 and set(val["gender"]) == {"male", "female"} and set(val["corpus"]) == {"ravdess"}
    assert {"tess-OAF", "tess-YAF"} <= set(clips.loc[side == "train", "speaker"])
    assert np.array_equal(side, training.speaker_split(clips, list(recipes.DEFAULT_TEST_SPEAKERS), 0))


def test_no_speaker_on_two_sides_for_random_fold_choices(clips):
    rng = np.random.default_rng(0)
    ravdess = sorted(clips.loc[clips["corpus"] == "ravdess", "speaker"].unique())
    for trial in range(25):
        test = list(rng.choice(ravdess, size=rng.integers(1, 8), replace=False))
        side = training.speaker_split(clips, test, seed=trial)
        sides_per_speaker = pd.Series(side).groupby(clips["speaker"].to_numpy()).nunique()
        assert (sides_per_speaker == 1).all(), test
        assert set(clips.loc[side == "test", "speaker"]) == set(test)
        assert (pd.Series(side).groupby(clips["group"].to_numpy()).nunique() == 1).all()


def test_speaker_split_rejects_unknown_speakers(clips):
    with pytest.raises(training.SplitError, match="ravdess-99"):
        training.speaker_split(clips, ["ravdess-99"], seed=0)
    assert recipes.parse_speakers("1, 22,tess-OAF") == ["ravdess-01", "ravdess-22", "tess-OAF"]


def test_random_split_of_too_few_clips_is_a_clear_error(clips):
    with pytest.raises(training.SplitError, match="too few clips for a stratified random split"):
        training.random_split(clips.groupby("emotion").head(3), seed=0)


def test_identical_files_move_to_the_side_furthest_from_training():
    side = training.keep_groups_together(np.array(["train", "test", "val", "train"]),
                                            pd.Series(["a", "a", "b", "c"]))
    assert side.tolist() == ["test", "test", "val", "train"]


# ---------------------------------------------------------------------------------------------
# A short real training run, then its evaluation


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    model_dir = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(out / "m"), "--epochs", "2",
                                  "--cache-dir", str(out / "cache"), "--split", "speaker"])
    return model_dir, out / "cache"


def test_short_train_writes_every_artifact(trained, small_corpus):
    model_dir, _ = trained
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "history.csv", "metadata.json", "model.keras", "training_curves.png"]
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["labels"] == list(F.EMOTIONS)
    assert F.FeatureConfig.from_dict(meta["feature_config"]) == recipes.recipe_config(recipe_options())
    assert meta["recipe"] == recipes.DEFAULT_RECIPE
    split = meta["split"]
    assert split["method"] == "speaker" and split["test_speakers"] == list(recipes.DEFAULT_TEST_SPEAKERS)
    n_clips = len(F.index_corpus(small_corpus)[0])
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == n_clips
    assert not set(split["train"]) & set(split["test"])
    assert {"keras", "librosa", "numpy", "python"} <= set(meta["versions"])
    history = pd.read_csv(model_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2] and {"loss", "val_accuracy"} <= set(history.columns)
    # The kept epoch is the first with the best validation accuracy, and the metadata quotes it.
    best = int(history["epoch"][history["val_accuracy"].idxmax()])
    assert meta["training"]["epochs"] == 2 and meta["training"]["best_epoch"] == best
    assert meta["validation"]["accuracy"] == pytest.approx(history["val_accuracy"].max())
    assert meta["validation"]["n"] == len(split["val"])
    assert (model_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(model_dir.parent.glob(".m.*")), "staging folders left behind"


def test_test_model_evaluates_the_saved_test_split(trained):
    model_dir, cache = trained
    result = test_model.main(["--model-dir", str(model_dir), "--cache-dir", str(cache)])
    saved = json.loads((model_dir / "evaluation.json").read_text())
    assert saved == result
    assert set(saved) == {"accuracy", "macro_f1", "uar", "n", "per_class", "per_corpus", "confusion_matrix",
                          "labels"}
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert saved["n"] == len(meta["split"]["test"]) == 240  # four actors, 60 clips each
    assert list(saved["per_corpus"]) == ["ravdess"]
    assert np.array(saved["confusion_matrix"]).sum() == 240
    assert saved["labels"] == list(F.EMOTIONS) and list(saved["per_class"]) == list(F.EMOTIONS)
    assert (model_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_test_model_on_another_folder_keeps_known_labels(trained, datasets, tmp_path):
    model_dir, cache = trained
    folder = tmp_path / "mine"
    folder.mkdir()
    tess, ravdess = datasets / "tess" / "YAF_sad", datasets / "ravdess" / "Actor_03"
    for f in sorted(tess.iterdir())[:6] + sorted(ravdess.iterdir())[:6]:
        (folder / f.name).symlink_to(f)
    result = test_model.main(["--model-dir", str(model_dir), "--data-dir", str(folder), "--cache-dir", str(cache)])
    assert result["n"] == 12 and set(result["per_corpus"]) == {"ravdess", "tess"}
    assert result["per_corpus"]["tess"]["n"] == 6


def test_metrics_average_over_present_classes():
    s = evaluation.scores(np.array([0, 0, 2, 2]), np.array([0, 1, 2, 2]))
    assert s == {"accuracy": 0.75, "macro_f1": pytest.approx((2 / 3 + 1) / 2), "uar": 0.75, "n": 4}


def test_existing_model_dir_is_kept_without_overwrite(trained, small_corpus, tmp_path):
    model_dir, cache = trained
    before = (model_dir / "model.keras").read_bytes()
    result = run_script("train_model.py", "--data-dir", small_corpus, "--model-dir", model_dir, "--epochs", "1",
                        "--cache-dir", cache)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {model_dir} already exists; pass --overwrite to replace it"]
    assert (model_dir / "model.keras").read_bytes() == before


def test_improved_recipe_options_travel_with_the_model(small_corpus, tmp_path):
    model_dir = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(tmp_path / "m"), "--epochs", "2",
                                  "--cache-dir", str(tmp_path / "cache"), "--split", "speaker", "--model", "pooled",
                                  "--trim-db", "30", "--norm", "speaker", "--augment", "--n-mfcc", "20"])
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["model"] == "pooled" and meta["norm"] == "speaker" and meta["training"]["augment"] is True
    # Statistics of the training side only travel with the model: none of the test speakers'.
    assert set(meta["speaker_statistics"]) == {"ravdess-01", "ravdess-02", "tess-OAF", "tess-YAF"}
    assert meta["split"]["test_speakers"] == ["ravdess-21", "ravdess-22", "ravdess-23", "ravdess-24"]
    config = F.FeatureConfig.from_dict(meta["feature_config"])
    assert config.trim_db == 30 and config.shape == (130, 60)  # 20 MFCCs with deltas and delta-deltas
    result = test_model.main(["--model-dir", str(model_dir), "--cache-dir", str(tmp_path / "cache")])
    assert result["n"] == 240 and result["enrolled_speakers"] == meta["split"]["test_speakers"]
    assert 0 < result["each_clip_alone"]["n"] == 240
    # Speakers the model never heard: standardised by their own clips (enrolment), as the split's training did.
    saved = models.load_model_dir(model_dir)
    clips = F.index_corpus(small_corpus)[0]
    test = clips[clips["relpath"].isin(meta["split"]["test"])].reset_index(drop=True)
    X = F.standardise_per_speaker(F.load_features(test, config, tmp_path / "cache").X, test["speaker"])
    assert X.shape[1:] == saved.model.input_shape[1:] == (130, 60)
    expected = evaluation.evaluate(saved.model.predict(X, verbose=0), test, saved.labels)
    assert expected["accuracy"] == result["accuracy"]


def test_speaker_statistics_come_from_the_training_side_only():
    """Standardising must not let a test clip shape the statistics: change the test clips, and nothing else moves."""
    rng = np.random.default_rng(0)
    X = rng.normal(3, 2, size=(12, 5, 4)).astype("float32")
    clips = pd.DataFrame({"speaker": ["a"] * 6 + ["b"] * 6})
    side = np.array(["train", "train", "val", "train", "test", "test"] * 2)
    Xn, statistics = training.normalised_split(X, clips, side, "speaker")
    changed = X.copy()
    changed[side == "test"] *= 10
    Xc, _ = training.normalised_split(changed, clips, side, "speaker")
    np.testing.assert_array_equal(Xn[side != "test"], Xc[side != "test"])
    mine = (clips["speaker"] == "a").to_numpy() & (side != "test")
    np.testing.assert_allclose(statistics["a"][0], X[mine].mean(axis=(0, 1)), rtol=1e-5)
    a_test = (clips["speaker"] == "a").to_numpy() & (side == "test")
    np.testing.assert_allclose(Xc[a_test], (changed[a_test] - statistics["a"][0]) / (statistics["a"][1] + 1e-6),
                               rtol=1e-5)
    # An unseen speaker can only be standardised by their own clips; a clip standardised alone needs nothing else.
    unseen = np.where(clips["speaker"] == "b", "test", side)
    Xu, statistics = training.normalised_split(X, clips, unseen, "speaker")
    assert set(statistics) == {"a"}
    b = X[6:]
    np.testing.assert_allclose(Xu[6:], (b - b.mean(axis=(0, 1))) / (b.std(axis=(0, 1)) + 1e-6), rtol=1e-4, atol=1e-5)
    one = training.normalised_split(X, clips, side, "clip")[0][0]
    np.testing.assert_allclose(one, (X[0] - X[0].mean(0)) / (X[0].std(0) + 1e-6), rtol=1e-4, atol=1e-5)


def test_overwrite_replaces_the_model_dir(small_corpus, tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "old.txt").write_text("old")
    train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(model_dir), "--epochs", "1",
                      "--cache-dir", str(tmp_path / "cache"), "--overwrite"])
    assert not (model_dir / "old.txt").exists() and (model_dir / "model.keras").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_replacing_a_model_dir_is_one_atomic_exchange(tmp_path):
    """On Linux the new model dir takes the old one's place in one step: the path never stops existing."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "which").write_text("old")
    (new / "which").write_text("new")
    assert models.exchange_paths(new, old)
    assert (old / "which").read_text() == "new" and (new / "which").read_text() == "old"
    assert not models.exchange_paths(new, tmp_path / "missing")  # both must exist; nothing moves
    assert (new / "which").read_text() == "old"


# ---------------------------------------------------------------------------------------------
# What a user sees when something is wrong: one line, non-zero exit


def test_train_without_corpus_says_where_it_looked(tmp_path):
    result = run_script("train_model.py", "--data-dir", tmp_path / "nothing", "--model-dir", tmp_path / "m")
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no corpus found:") and str(tmp_path / "nothing") in line and "README" in line
    assert result.stdout == ""


def test_test_model_errors_for_missing_and_broken_model_dirs(trained, tmp_path):
    result = run_script("test_model.py", "--model-dir", tmp_path / "none")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: no model directory at {tmp_path / 'none'}; "
                                                  f"train one with train_model.py or pass --model-dir"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in trained[0].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    result = run_script("test_model.py", "--model-dir", broken)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot load {broken / 'model.keras'}")
    (broken / "metadata.json").write_text("{")
    result = run_script("test_model.py", "--model-dir", broken)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {broken / 'metadata.json'} is broken")


def test_zero_epochs_and_batch_size_are_argument_errors(tmp_path):
    for option in ("--epochs", "--batch-size"):
        result = run_script("train_model.py", option, "0", "--model-dir", tmp_path / "m")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].endswith(f"argument {option}: must be at least 1, not 0")


def test_other_folders_are_scored_beside_the_models_own_results(trained, small_corpus, tmp_path):
    model_dir, cache = trained
    own = test_model.main(["--model-dir", str(model_dir), "--cache-dir", str(cache)])
    before = (model_dir / "evaluation.json").read_bytes()
    other = test_model.main(["--model-dir", str(model_dir), "--data-dir", str(small_corpus / "tess"),
                             "--cache-dir", str(cache)])
    assert (model_dir / "evaluation.json").read_bytes() == before  # the model's own figures stay
    assert json.loads((model_dir / "evaluation-on-tess.json").read_text()) == other
    assert (model_dir / "confusion_matrix-on-tess.png").exists() and other["n"] != own["n"]
    out = tmp_path / "elsewhere"
    test_model.main(["--model-dir", str(model_dir), "--data-dir", str(small_corpus / "tess"), "--cache-dir",
                     str(cache), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix-on-tess.png", "evaluation-on-tess.json"]


def test_a_folder_without_known_emotions_is_one_line(trained, tmp_path):
    (tmp_path / "mine" / "bored").mkdir(parents=True)
    F.sf.write(tmp_path / "mine" / "bored" / "take.wav", np.zeros(22050, np.float32), 22050)
    result = run_script("test_model.py", "--model-dir", trained[0], "--data-dir", tmp_path / "mine")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no RAVDESS, TESS, EMO-DB or emotion-folder clips found under")


# ---------------------------------------------------------------------------------------------
# The seed's own claim, on the full shared corpora


def test_default_model_on_the_random_split_holds_each_corpus(full_model):
    """Floors near what the README measures, per corpus: TESS alone (560 of the 848 clips, almost all right)
    would carry the overall figure past the seed's 0.76 even with RAVDESS at 0.30."""
    model_dir, cache = full_model
    result = test_model.main(["--model-dir", str(model_dir), "--cache-dir", str(cache)])
    assert result["n"] == 848
    assert result["per_corpus"]["ravdess"]["n"] == 288 and result["per_corpus"]["tess"]["n"] == 560
    assert result["per_corpus"]["ravdess"]["accuracy"] >= 0.65  # 0.733 in the README, seed 0
    assert result["per_corpus"]["tess"]["accuracy"] >= 0.97


def test_a_folder_per_emotion_corpus_trains_and_evaluates_alone(datasets, tmp_path):
    sources = {"Anger": "tess/YAF_angry", "happiness": "tess/YAF_happy", "sad": "tess/OAF_sad",
               "neutral": "tess/OAF_neutral", "Fear": "tess/YAF_fear", "disgust": "tess/OAF_disgust",
               "surprise": "tess/YAF_pleasant_surprise", "calm": "ravdess/Actor_09"}
    for folder, source in sources.items():
        (tmp_path / "mine" / folder).mkdir(parents=True)
        pattern = "03-01-02-*" if folder == "calm" else "*"  # Actor 09 has 8 calm clips
        for i, clip in enumerate(sorted((datasets / source).glob(pattern))[:10]):
            (tmp_path / "mine" / folder / f"take{i}.flac").symlink_to(clip)
    model_dir = train_model.main(["--data-dir", str(tmp_path / "mine"), "--model-dir", str(tmp_path / "m"),
                                  "--epochs", "1", "--cache-dir", str(tmp_path / "cache")])
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert len(meta["split"]["test"]) == 16 and all(p.startswith(tuple(sources)) for p in meta["split"]["test"])
    result = test_model.main(["--model-dir", str(model_dir), "--data-dir", str(tmp_path / "mine"),
                                  "--cache-dir", str(tmp_path / "cache")])
    assert result["n"] == 78 and list(result["per_corpus"]) == ["custom"]


def test_augmentation_changes_the_signal_but_not_shape_or_label(datasets):
    clips, _ = F.index_corpus(datasets)
    subset = clips.groupby("emotion").head(2)
    X = F.load_features(subset, F.FeatureConfig(), cache_dir=None).X
    training.tf.random.set_seed(0)
    augmented = training.spec_augment(X).numpy()
    assert augmented.shape == X.shape and augmented.dtype == X.dtype
    changed = np.abs(augmented - X).reshape(len(X), -1).max(axis=1) > 0
    assert changed.mean() > 0.8  # a zero shift and empty masks can be drawn, rarely
    assert not np.array_equal(augmented, training.spec_augment(X).numpy())  # fresh every call
    # Only a shift: the same frames, rolled; the original is untouched.
    rolled = training.spec_augment(X, max_time_mask=0, max_feature_mask=0).numpy()
    for original, moved in zip(X, rolled, strict=True):
        assert any(np.array_equal(np.roll(original, s, axis=0), moved) for s in range(-16, 17))
    assert np.array_equal(X, F.load_features(subset, F.FeatureConfig(), cache_dir=None).X)
    # Only masks: every changed cell is in one block of frames or of features, at the clip's mean.
    masked = training.spec_augment(X, max_shift=0).numpy()
    for original, out in zip(X, masked, strict=True):
        changed = out != original
        frames, feats = np.flatnonzero(changed.all(axis=1)), np.flatnonzero(changed.all(axis=0))
        assert changed[~np.isin(np.arange(len(out)), frames)][:, ~np.isin(np.arange(out.shape[1]), feats)].sum() == 0
        assert len(frames) <= 16 and len(feats) <= 3
        np.testing.assert_allclose(out[changed], np.broadcast_to(original.mean(axis=0), out.shape)[changed], rtol=1e-5)


def test_training_batches_keep_labels_with_their_clips_and_reshuffle():
    X = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 130, 13), np.float32)
    y = np.arange(10)
    batches = training.training_batches(X, y, batch_size=4, seed=0)
    orders = []
    for _ in range(2):
        seen = []
        for xb, yb in batches:
            assert xb.shape[1:] == (130, 13)
            assert np.allclose(xb.numpy().mean(axis=(1, 2)), yb.numpy())  # each clip is still its own label's clip
            seen += yb.numpy().tolist()
        assert sorted(seen) == list(range(10)) and [len(b) for b, _ in batches] == [4, 4, 2]
        orders.append(seen)
    assert orders[0] != orders[1]  # a new order each epoch


def test_training_batches_draw_one_version_of_each_clip_afresh_each_epoch():
    """With --epoch-copies one, X is (clips, versions, frames, features): every epoch holds each clip once, as
    one of its versions, and the versions drawn change from one epoch to the next."""
    clip, version = np.meshgrid(np.arange(40), np.arange(3), indexing="ij")
    X = (clip * 10 + version).astype(np.float32)[:, :, None, None] * np.ones((1, 1, 130, 13), np.float32)
    batches = training.training_batches(X, np.arange(40), batch_size=8, seed=0, augment=False)
    drawn = []
    for _ in range(2):
        epoch = {}
        for xb, yb in batches:
            assert xb.shape[1:] == (130, 13)
            values = xb.numpy()[:, 0, 0]
            assert np.array_equal(values // 10, yb.numpy())  # a version of the clip of its own label
            epoch.update(zip(yb.numpy().tolist(), (values % 10).astype(int).tolist(), strict=True))
        assert sorted(epoch) == list(range(40))
        assert set(epoch.values()) == {0, 1, 2}
        drawn.append([epoch[c] for c in range(40)])
    assert drawn[0] != drawn[1]


def test_epoch_copies_one_trains_epochs_as_short_as_without_copies(small_corpus, tmp_path):
    clips = F.index_corpus(small_corpus)[0]
    args = recipe_options("--copies", "2", "--epochs", "1", "--cache-dir", str(tmp_path))
    X = F.load_features(clips, recipes.recipe_config(args), tmp_path).X
    side = training.speaker_split(clips, sorted(clips["speaker"].unique())[:1], seed=0)
    copies = training.corrupted_copies(X, clips, args)
    steps = {}
    for mode in ("all", "one"):
        args.epoch_copies = mode
        fit = training.fit_split(X, clips, side, args, seed=0, copies=copies)
        steps[mode] = fit.model.optimizer.iterations.numpy()
    assert steps["one"] == -(-(side == "train").sum() // args.batch_size)
    assert steps["all"] == -(-3 * (side == "train").sum() // args.batch_size)


def test_cross_validation_folds_cover_every_actor_once():
    actors = sorted(a for fold in evaluation.FOLDS for a in fold)
    assert actors == list(range(1, 25))
    chosen_on = sorted(a for fold in evaluation.SELECTION_FOLDS for a in fold)
    assert chosen_on == list(range(1, 21))  # never the speaker split's test actors 21-24
    assert all(sum(a % 2 for a in fold) == 2 for fold in evaluation.SELECTION_FOLDS)  # two men, two women


def test_evaluate_speakers_needs_the_fold_actors(small_corpus, tmp_path):
    result = run_script("evaluate_speakers.py", "--data-dir", small_corpus, "--cache-dir", tmp_path / "cache",
                        "--out", tmp_path / "cv", "--epochs", "1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: test speakers ['ravdess-11', 'ravdess-12'] are not in the data")


def test_cross_validation_runs_every_fold_on_unseen_actors(sparse_corpus, tmp_path):
    import evaluate_speakers
    result = evaluate_speakers.main(["--data-dir", str(sparse_corpus), "--cache-dir", str(tmp_path / "cache"),
                                     "--out", str(tmp_path / "cv"), "--epochs", "1", "--model", "pooled"])
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [tuple(f["actors"]) for f in saved["folds"]] == evaluation.SELECTION_FOLDS
    for fold in saved["folds"]:
        validating = {int(s[-2:]) for s in fold["val_speakers"]}
        assert not validating & set(fold["actors"]) and not validating & {21, 22, 23, 24}
        assert fold["n"] == 6 * len(fold["actors"])
    # Every RAVDESS clip of actors 1-20 tested once, no TESS; actors 21-24 are out of every choice.
    assert np.array(saved["confusion_matrix"]).sum() == 20 * 6 and saved["folds_of"] == "selection"
    assert saved["recipe"]["model"] == "pooled"
    assert (tmp_path / "cv" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def recipe_options(*argv: str):
    p = argparse.ArgumentParser()
    recipes.add_recipe_arguments(p)
    return recipes.apply_recipe(p.parse_args(list(argv)))


def separable_features(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features whose class is told by the level of one coefficient: (n, 130, 13) and labels 0..7."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 8
    X = rng.normal(size=(n, 130, 13)).astype(np.float32)
    X[:, :, 0] += 4 * y[:, None]
    return X, y


def test_cosine_schedule_decays_to_zero_and_constant_stays(tmp_path):
    X, y = separable_features()
    for schedule, final in [("cosine", 0.0), ("constant", 1e-3)]:
        args = recipe_options("--model", "pooled", "--epochs", "3", "--lr-schedule", schedule)
        model, history, _ = training.train(X, y, X[:16], y[:16], args, seed=0, verbose=0)
        lr = model.optimizer.learning_rate
        assert float(lr.numpy() if hasattr(lr, "numpy") else lr) == pytest.approx(final, abs=1e-6)
        assert len(history) == 3


def test_label_smoothing_keeps_the_loss_above_the_smoothed_targets_entropy():
    X, y = separable_features(512)
    target = np.full(8, 0.2 / 8) + np.eye(8)[0] * 0.8  # what smoothing 0.2 makes of a one-hot label
    floor = -(target * np.log(target)).sum()  # no prediction has a lower cross-entropy with it (0.80)
    losses = {}
    for smoothing in ["0", "0.2"]:
        args = recipe_options("--recipe", "reference", "--epochs", "6", "--label-smoothing", smoothing)
        model, history, _ = training.train(X, y, X[:16], y[:16], args, seed=0, verbose=0)
        losses[smoothing] = history["loss"].min()
        assert model.loss.get_config()["label_smoothing"] == pytest.approx(float(smoothing))
    assert losses["0"] < floor - 0.2  # the task is learnt well past the floor without smoothing
    assert losses["0.2"] >= floor - 1e-3


def test_balanced_class_weights_make_every_class_weigh_the_same():
    y = np.array([0] * 10 + [1] * 30 + [3] * 60)  # classes 2, 4.. absent, as calm is from TESS
    weights = training.balanced_class_weights(y)
    assert sorted(weights) == [0, 1, 3]
    totals = [weights[c] * (y == c).sum() for c in weights]
    assert np.allclose(totals, totals[0]) and np.isclose(sum(totals), len(y))


def test_a_training_mix_standardises_some_clips_by_their_speaker_and_the_rest_alone(small_corpus, tmp_path):
    clips = F.index_corpus(small_corpus)[0]
    X, speakers = F.load_features(clips, F.FeatureConfig(), tmp_path).X, clips["speaker"].to_numpy()
    alone, by_speaker = F.standardise_per_clip(X), F.standardise_per_speaker(X, speakers)
    mixed = training.mixed_standardisation(X, speakers, "clip", np.random.default_rng(0))
    is_alone = np.isclose(mixed, alone, atol=1e-5).all(axis=(1, 2))
    is_speaker = np.isclose(mixed, by_speaker, atol=1e-5).all(axis=(1, 2))
    assert (is_alone != is_speaker).all()  # each clip one way, and the two ways differ
    assert 0.3 < is_speaker.mean() < 0.7
    np.testing.assert_array_equal(mixed, training.mixed_standardisation(X, speakers, "clip", np.random.default_rng(0)))
    assert not np.array_equal(mixed, training.mixed_standardisation(X, speakers, "clip", np.random.default_rng(1)))
    np.testing.assert_allclose(training.mixed_standardisation(X, speakers, "clip", np.random.default_rng(0), share=0),
                               alone, atol=1e-6)
    # The model standardises per clip at test time; the mix needs a per-clip norm to go with.
    assert recipe_options("--mix-speaker-norm").norm == "clip"
    result = run_script("train_model.py", "--norm", "speaker", "--mix-speaker-norm", "--model-dir", tmp_path / "m")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: --mix-speaker-norm needs --norm clip, speech, mean, not speaker")


def test_training_options_are_recorded_in_the_model_dir(small_corpus, tmp_path):
    model_dir = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(tmp_path / "m"), "--epochs", "1",
                                  "--cache-dir", str(tmp_path / "cache"), "--split", "speaker", "--model", "pooled",
                                  "--lr-schedule", "cosine", "--label-smoothing", "0.1", "--class-weights",
                                  "--mix-speaker-norm", "--norm", "mean", "--clip-view", "--floor-db", "60"])
    metadata = json.loads((model_dir / "metadata.json").read_text())
    training = metadata["training"]
    assert training["lr_schedule"] == "cosine" and training["label_smoothing"] == 0.1
    assert training["class_weights"] is True and training["mix_speaker_norm"] is True
    assert metadata["norm"] == "mean" and metadata["clip_view"] is True
    assert metadata["feature_config"]["floor_db"] == 60
    # The clip view is a layer of the saved model: it loads in safe mode and runs without this recipe.
    saved = models.load_model_dir(model_dir)
    assert any(isinstance(layer, models.BesideClipStandardised) for layer in saved.model.layers)


def test_the_clip_view_sets_each_clip_beside_itself_standardised(small_corpus, tmp_path):
    clips = F.index_corpus(small_corpus)[0]
    X = F.normalised(F.load_features(clips, F.FeatureConfig(), tmp_path).X, None, "mean")
    both = np.asarray(models.BesideClipStandardised()(X))
    assert both.shape == (*X.shape[:2], 2 * X.shape[2])
    np.testing.assert_array_equal(both[..., :X.shape[2]], X)
    np.testing.assert_allclose(both[..., X.shape[2]:], F.standardise_per_clip(X), atol=1e-4)
    model = models.build_pooled_cnn(X.shape[1:], 8, clip_view=True)
    assert model.get_layer(index=1).input.shape[-1] == 2 * X.shape[2]  # the first convolution sees both
    result = run_script("train_model.py", "--recipe", "reference", "--clip-view", "--model-dir", tmp_path / "m")
    assert result.returncode == 1 and result.stderr.strip() == "error: --clip-view needs --model pooled, not seed"


def first_epoch_loss(X, y, *options, sample_weight=None) -> float:
    args = recipe_options("--recipe", "reference", "--epochs", "1", *options)
    _, history, _ = training.train(X, y, X[:16], y[:16], args, seed=0, verbose=0, sample_weight=sample_weight)
    return float(history["loss"].iloc[0])


def test_class_and_balance_weights_change_the_loss():
    """Weights must reach the loss: on imbalanced classes, weighing them changes the first epoch's loss, and
    weights of 1 change nothing."""
    X, y = separable_features(96)
    keep = (y != 0) | (np.arange(len(y)) < 4)  # class 0 rare
    X, y = X[keep], y[keep]
    plain = first_epoch_loss(X, y)
    assert first_epoch_loss(X, y, "--class-weights") != pytest.approx(plain, rel=1e-3)
    assert first_epoch_loss(X, y, sample_weight=np.ones(len(y), np.float32)) == pytest.approx(plain, rel=1e-5)
    skewed = np.where(y == 1, 5.0, 0.5).astype(np.float32)
    assert first_epoch_loss(X, y, sample_weight=skewed) != pytest.approx(plain, rel=1e-3)


def test_corrupted_copies_differ_per_clip_and_are_cached(small_corpus, tmp_path):
    clips = F.index_corpus(small_corpus)[0].groupby("speaker").head(2).reset_index(drop=True)
    args = recipe_options("--copies", "2", "--cache-dir", str(tmp_path))
    X = F.load_features(clips, recipes.recipe_config(args), tmp_path).X
    copies = training.corrupted_copies(X, clips, args)
    assert len(copies) == 2 and all(c.shape == X.shape for c in copies)
    for copy in copies:  # every clip's copy is another sound than the clip
        assert (np.abs(copy - X).reshape(len(X), -1).max(axis=1) > 1e-3).all()
    assert (np.abs(copies[0] - copies[1]).reshape(len(X), -1).max(axis=1) > 1e-3).mean() > 0.8
    assert len(list(tmp_path.glob("mfcc-*-copy*"))) == 2
    again = training.corrupted_copies(X, clips, args)
    for first, second in zip(copies, again, strict=True):
        np.testing.assert_array_equal(first, second)
    assert training.corrupted_copies(X, clips, recipe_options("--copies", "0")) == []
    # --perturb-voice: other copies (another voice, then the same corruption), cached apart.
    voiced = training.corrupted_copies(X, clips, recipe_options("--copies", "1", "--perturb-voice",
                                                                "--cache-dir", str(tmp_path)))
    assert (np.abs(voiced[0] - copies[0]).reshape(len(X), -1).max(axis=1) > 1e-3).all()
    assert len(list(tmp_path.glob("mfcc-*-copy0-*-voice"))) == 1


def test_augment_option_trains_on_training_batches(datasets):
    """--augment feeds spec_augment's batches to the fit: the batches differ from the clips, and so does training."""
    clips, _ = F.index_corpus(datasets)
    subset = clips.groupby("emotion").head(4).reset_index(drop=True)
    X, y = F.load_features(subset, F.FeatureConfig(), cache_dir=None).X, training.labels_of(subset)
    (xb, yb), = training.training_batches(X, np.eye(8)[y], batch_size=len(X), seed=0).take(1)
    rows = {tuple(np.eye(8)[c]) for c in y}
    assert {tuple(r) for r in yb.numpy()} <= rows
    assert not any(np.array_equal(a, x) for a in xb.numpy() for x in X)  # no clip passes unchanged
    assert first_epoch_loss(X, y, "--augment") != pytest.approx(first_epoch_loss(X, y, "--no-augment"), rel=1e-4)


def test_a_recipe_sets_every_option_not_given_and_given_ones_win():
    reference = recipe_options("--recipe", "reference")
    assert {k: getattr(reference, k) for k in recipes.RECIPES["reference"]} == recipes.RECIPES["reference"]
    assert reference.model == "seed" and reference.trim_db is None and reference.augment is False
    pooled = recipe_options("--recipe", "pooled", "--no-augment", "--trim-db", "none")
    assert pooled.model == "pooled" and pooled.norm == recipes.RECIPES["pooled"]["norm"]  # from the recipe
    assert pooled.augment is False and pooled.trim_db is None  # given
    assert recipe_options("--recipe", "reference", "--trim-db", "25").trim_db == 25.0
    pcen = recipes.recipe_config(recipe_options("--frontend", "pcen", "--n-mels", "40", "--no-deltas"))
    assert pcen == F.FeatureConfig(trim_db=30.0, frontend="pcen", n_mels=40) and pcen.shape == (130, 40)
    assert recipe_options().recipe == recipes.DEFAULT_RECIPE
    assert recipes.recipe_config(recipe_options("--frontend", "logmel", "--floor-db", "40")).floor_db == 40.0
    result = run_script("train_model.py", "--frontend", "pcen", "--floor-db", "40")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --floor-db applies to the mfcc and logmel frontends, not pcen"
    result = run_script("train_model.py", "--floor-db", "0")
    assert result.returncode == 2 and "--floor-db: must be above 0, not 0" in result.stderr
