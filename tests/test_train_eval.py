"""Splits, a short real training run with every artifact, evaluation, and the scripts' one-line errors."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import cache
import cli
import corpora
import evaluation
import modeldir
import test_model
import train_model
import training
from config import DEFAULT_RECIPE, DEFAULT_TEST_SPEAKERS, EMOTIONS, RECIPES, FeatureConfig, Recipe, make_recipe
from conftest import run_script, separable_features

# ---------------------------------------------------------------------------------------------
# Splits


@pytest.fixture(scope="module")
def clips(datasets):
    return corpora.index_corpus(datasets)[0]


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
    side = training.speaker_split(clips, list(DEFAULT_TEST_SPEAKERS), seed=0)
    assert sorted(clips.loc[side == "test", "speaker"].unique()) == list(DEFAULT_TEST_SPEAKERS)
    val = clips[side == "val"].drop_duplicates("speaker")
    assert len(val) == 2 and set(val["gender"]) == {"male", "female"} and set(val["corpus"]) == {"ravdess"}
    assert {"tess-OAF", "tess-YAF"} <= set(clips.loc[side == "train", "speaker"])
    assert np.array_equal(side, training.speaker_split(clips, list(DEFAULT_TEST_SPEAKERS), 0))


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
    assert cli.parse_speakers("1, 22,tess-OAF") == ["ravdess-01", "ravdess-22", "tess-OAF"]


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


@pytest.fixture(scope="module")
def trained_pooled(small_corpus, tmp_path_factory):
    """The MFCC recipe trained briefly: what models saved before the Recipe existed were."""
    out = tmp_path_factory.mktemp("pooled")
    model_dir = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(out / "m"), "--epochs", "2",
                                  "--cache-dir", str(out / "cache"), "--split", "speaker", "--recipe", "pooled",
                                  "--copies", "0"])
    return model_dir, out / "cache"


def test_short_train_writes_every_artifact(trained, small_corpus):
    model_dir, _ = trained
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "history.csv", "metadata.json", "model.keras", "training_curves.png"]
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["labels"] == list(EMOTIONS)
    assert Recipe.from_dict(meta["recipe"]) == dataclasses.replace(RECIPES[DEFAULT_RECIPE], epochs=2)
    split = meta["split"]
    assert split["method"] == "speaker" and split["test_speakers"] == list(DEFAULT_TEST_SPEAKERS)
    n_clips = len(corpora.index_corpus(small_corpus)[0])
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == n_clips
    assert not set(split["train"]) & set(split["test"])
    assert {"keras", "librosa", "numpy", "python"} <= set(meta["versions"])
    history = pd.read_csv(model_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2] and {"loss", "val_accuracy"} <= set(history.columns)
    # The kept epoch is the first with the best validation accuracy, and the metadata quotes it.
    best = int(history["epoch"][history["val_accuracy"].idxmax()])
    assert meta["training"] == {"seed": 0, "best_epoch": best}
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
    assert saved["labels"] == list(EMOTIONS) and list(saved["per_class"]) == list(EMOTIONS)
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


@pytest.mark.slow
def test_the_reference_recipe_travels_with_the_model(small_corpus, tmp_path):
    """The seed's CNN on untrimmed MFCCs, unstandardised: what the saved model records, builds and is scored on."""
    model_dir = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(tmp_path / "m"), "--epochs", "2",
                                  "--cache-dir", str(tmp_path / "cache"), "--split", "speaker", "--recipe",
                                  "reference", "--label-smoothing", "0.1"])
    saved = modeldir.load_model_dir(model_dir)
    assert saved.recipe == dataclasses.replace(RECIPES["reference"], epochs=2, label_smoothing=0.1)
    assert saved.model.name == "seed_cnn" and saved.config.shape == (130, 13) and saved.norm == "none"
    assert [type(layer).__name__ for layer in saved.model.layers][1:5] == ["Conv1D", "ReLU", "MaxPooling1D",
                                                                           "Dropout"]
    result = test_model.main(["--model-dir", str(model_dir), "--cache-dir", str(tmp_path / "cache")])
    clips = corpora.index_corpus(small_corpus)[0]
    test = clips[clips["relpath"].isin(saved.metadata["split"]["test"])].reset_index(drop=True)
    X = cache.load_features(test, saved.config, tmp_path / "cache").X  # as it is, no standardisation
    expected = evaluation.evaluate(saved.model.predict(X, verbose=0), test, saved.labels)
    assert result["n"] == 240 and expected["accuracy"] == result["accuracy"]


def test_model_dirs_saved_before_the_recipe_existed_still_load(trained_pooled, tmp_path):
    """Older metadata names its recipe, feature config and norm: the model loads with that recipe; one made with a
    lever that is no longer built is a one-line error."""
    model_dir, cache_dir = trained_pooled
    older = tmp_path / "older"
    older.mkdir()
    for f in model_dir.iterdir():
        (older / f.name).write_bytes(f.read_bytes())
    meta = json.loads((model_dir / "metadata.json").read_text())
    recipe = meta.pop("recipe")
    meta.update(recipe="pooled", model="pooled", norm="clip", clip_view=False,
                feature_config={**recipe["features"], "frontend": "mfcc", "floor_db": 80.0})
    (older / "metadata.json").write_text(json.dumps(meta))
    assert modeldir.load_model_dir(older).recipe == RECIPES["pooled"]
    assert test_model.main(["--model-dir", str(older), "--cache-dir", str(cache_dir)])["n"] == 240
    (older / "metadata.json").write_text(json.dumps({**meta, "norm": "speaker"}))
    result = run_script("test_model.py", "--model-dir", older)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: {older / 'metadata.json'} is broken (ValueError: this model standardises by norm 'speaker', which "
        f"is no longer built (see RESULTS.md); train it again)"]


@pytest.mark.slow
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
    assert modeldir.exchange_paths(new, old)
    assert (old / "which").read_text() == "new" and (new / "which").read_text() == "old"
    assert not modeldir.exchange_paths(new, tmp_path / "missing")  # both must exist; nothing moves
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
    sf.write(tmp_path / "mine" / "bored" / "take.wav", np.zeros(22050, np.float32), 22050)
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


@pytest.mark.slow
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


SIZES = {"max_shift": 16, "max_time_mask": 16, "max_feature_mask": 3}  # the pooled recipe's


def test_augmentation_changes_the_signal_but_not_shape_or_label(datasets):
    clips, _ = corpora.index_corpus(datasets)
    subset = clips.groupby("emotion").head(2)
    X = cache.load_features(subset, FeatureConfig(), cache_dir=None).X
    training.tf.random.set_seed(0)
    augmented = training.spec_augment(X, **SIZES).numpy()
    assert augmented.shape == X.shape and augmented.dtype == X.dtype
    changed = np.abs(augmented - X).reshape(len(X), -1).max(axis=1) > 0
    assert changed.mean() > 0.8  # a zero shift and empty masks can be drawn, rarely
    assert not np.array_equal(augmented, training.spec_augment(X, **SIZES).numpy())  # fresh every call
    # Only a shift: the same frames, rolled; the original is untouched.
    rolled = training.spec_augment(X, **{**SIZES, "max_time_mask": 0, "max_feature_mask": 0}).numpy()
    for original, moved in zip(X, rolled, strict=True):
        assert any(np.array_equal(np.roll(original, s, axis=0), moved) for s in range(-16, 17))
    assert np.array_equal(X, cache.load_features(subset, FeatureConfig(), cache_dir=None).X)
    # Only masks: every changed cell is in one block of frames or of features, at the clip's mean.
    masked = training.spec_augment(X, **{**SIZES, "max_shift": 0}).numpy()
    for original, out in zip(X, masked, strict=True):
        changed = out != original
        frames, feats = np.flatnonzero(changed.all(axis=1)), np.flatnonzero(changed.all(axis=0))
        assert changed[~np.isin(np.arange(len(out)), frames)][:, ~np.isin(np.arange(out.shape[1]), feats)].sum() == 0
        assert len(frames) <= 16 and len(feats) <= 3
        np.testing.assert_allclose(out[changed], np.broadcast_to(original.mean(axis=0), out.shape)[changed], rtol=1e-5)


def test_training_batches_keep_labels_with_their_clips_and_reshuffle():
    X = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 130, 13), np.float32)
    y = np.arange(10)
    batches = training.training_batches(X, y, dataclasses.replace(RECIPES["pooled"], batch_size=4), seed=0)
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


def test_cross_validation_folds_cover_every_actor_once():
    actors = sorted(a for fold in evaluation.FOLDS for a in fold)
    assert actors == list(range(1, 25))
    chosen_on = sorted(a for fold in evaluation.SELECTION_FOLDS for a in fold)
    assert chosen_on == list(range(1, 21))  # never the speaker split's test actors 21-24
    assert all(sum(a % 2 for a in fold) == 2 for fold in evaluation.SELECTION_FOLDS)  # two men, two women


@pytest.mark.slow
def test_evaluate_speakers_needs_the_fold_actors(small_corpus, tmp_path):
    result = run_script("evaluate_speakers.py", "--data-dir", small_corpus, "--cache-dir", tmp_path / "cache",
                        "--out", tmp_path / "cv", "--epochs", "1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: test speakers ['ravdess-11', 'ravdess-12'] are not in the data")


@pytest.mark.slow
def test_cross_validation_runs_every_fold_on_unseen_actors(sparse_corpus, tmp_path):
    import evaluate_speakers
    result = evaluate_speakers.main(["--data-dir", str(sparse_corpus), "--cache-dir", str(tmp_path / "cache"),
                                     "--out", str(tmp_path / "cv"), "--epochs", "1"])
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [tuple(f["actors"]) for f in saved["folds"]] == evaluation.SELECTION_FOLDS
    for fold in saved["folds"]:
        validating = {int(s[-2:]) for s in fold["val_speakers"]}
        assert not validating & set(fold["actors"]) and not validating & {21, 22, 23, 24}
        assert fold["n"] == 6 * len(fold["actors"])
    # Every RAVDESS clip of actors 1-20 tested once, no TESS; actors 21-24 are out of every choice.
    assert np.array(saved["confusion_matrix"]).sum() == 20 * 6 and saved["folds_of"] == "selection"
    assert saved["recipe"]["model"] == RECIPES[DEFAULT_RECIPE].model
    assert (tmp_path / "cv" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def recipe(*argv: str) -> Recipe:
    """The Recipe a script makes of these options."""
    p = cli.argparse.ArgumentParser()
    cli.add_recipe_arguments(p)
    args = p.parse_args(list(argv))
    return make_recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size, copies=args.copies,
                       label_smoothing=args.label_smoothing)


def test_cosine_schedule_decays_to_zero_and_constant_stays(tmp_path):
    X, y = separable_features()
    for schedule, final in [("cosine", 0.0), ("constant", 1e-3)]:
        cooking = dataclasses.replace(recipe("--recipe", "pooled", "--epochs", "3"), lr_schedule=schedule)
        model, history, _ = training.train(X, y, X[:16], y[:16], cooking, seed=0, verbose=0)
        lr = model.optimizer.learning_rate
        assert float(lr.numpy() if hasattr(lr, "numpy") else lr) == pytest.approx(final, abs=1e-6)
        assert len(history) == 3


def test_label_smoothing_keeps_the_loss_above_the_smoothed_targets_entropy():
    X, y = separable_features(512)
    target = np.full(8, 0.2 / 8) + np.eye(8)[0] * 0.8  # what smoothing 0.2 makes of a one-hot label
    floor = -(target * np.log(target)).sum()  # no prediction has a lower cross-entropy with it (0.80)
    losses = {}
    for smoothing in ["0", "0.2"]:
        cooking = recipe("--recipe", "reference", "--epochs", "6", "--label-smoothing", smoothing)
        model, history, _ = training.train(X, y, X[:16], y[:16], cooking, seed=0, verbose=0)
        losses[smoothing] = history["loss"].min()
        assert model.loss.get_config()["label_smoothing"] == pytest.approx(float(smoothing))
    assert losses["0"] < floor - 0.2  # the task is learnt well past the floor without smoothing
    assert losses["0.2"] >= floor - 1e-3


def first_epoch_loss(X, y, augment: bool) -> float:
    cooking = dataclasses.replace(recipe("--recipe", "reference", "--epochs", "1"), augment=augment)
    _, history, _ = training.train(X, y, X[:16], y[:16], cooking, seed=0, verbose=0)
    return float(history["loss"].iloc[0])


@pytest.mark.slow
def test_corrupted_copies_differ_per_clip_and_are_cached(small_corpus, tmp_path):
    clips = corpora.index_corpus(small_corpus)[0].groupby("speaker").head(2).reset_index(drop=True)
    two = recipe("--copies", "2")
    X = cache.load_features(clips, two.features, tmp_path).X
    copies = training.corrupted_copies(X, clips, two, tmp_path)
    assert len(copies) == 2 and all(c.shape == X.shape for c in copies)
    for copy in copies:  # every clip's copy is another sound than the clip
        assert (np.abs(copy - X).reshape(len(X), -1).max(axis=1) > 1e-3).all()
    assert (np.abs(copies[0] - copies[1]).reshape(len(X), -1).max(axis=1) > 1e-3).mean() > 0.8
    assert len(list(tmp_path.glob(f"{two.features.frontend}-*-copy*"))) == 2  # through the default's encoder
    again = training.corrupted_copies(X, clips, two, tmp_path)
    for first, second in zip(copies, again, strict=True):
        np.testing.assert_array_equal(first, second)
    assert training.corrupted_copies(X, clips, recipe("--copies", "0"), tmp_path) == []


def test_augment_option_trains_on_training_batches(datasets):
    """--augment feeds spec_augment's batches to the fit: the batches differ from the clips, and so does training."""
    clips, _ = corpora.index_corpus(datasets)
    subset = clips.groupby("emotion").head(4).reset_index(drop=True)
    X, y = cache.load_features(subset, FeatureConfig(), cache_dir=None).X, training.labels_of(subset)
    whole = dataclasses.replace(RECIPES["pooled"], batch_size=len(X))
    (xb, yb), = training.training_batches(X, np.eye(8)[y], whole, seed=0).take(1)
    rows = {tuple(np.eye(8)[c]) for c in y}
    assert {tuple(r) for r in yb.numpy()} <= rows
    assert not any(np.array_equal(a, x) for a in xb.numpy() for x in X)  # no clip passes unchanged
    assert first_epoch_loss(X, y, augment=True) != pytest.approx(first_epoch_loss(X, y, augment=False), rel=1e-4)


def test_a_recipe_is_complete_and_the_options_given_beside_it_change_it():
    assert recipe() == RECIPES[DEFAULT_RECIPE] and recipe("--recipe", "reference") == RECIPES["reference"]
    changed = recipe("--recipe", "reference", "--epochs", "7", "--batch-size", "16", "--copies", "2",
                     "--label-smoothing", "0.1")
    assert changed == dataclasses.replace(RECIPES["reference"], epochs=7, batch_size=16, copies=2, label_smoothing=0.1)
    for name, r in RECIPES.items():  # every field set, and a round trip through metadata.json's JSON
        assert r.name == name and Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ValueError, match="unknown norm 'speaker'"):
        dataclasses.replace(RECIPES["pooled"], norm="speaker")
    result = run_script("train_model.py", "--label-smoothing", "1")
    assert result.returncode == 2 and "--label-smoothing: must be at least 0 and below 1, not 1" in result.stderr
    helped = run_script("train_model.py", "--help").stdout
    for retired in ("--norm", "--frontend", "--floor-db", "--clip-view", "--perturb-voice", "--mix-speaker-norm",
                    "--epoch-copies", "--balance", "--class-weights"):
        assert retired not in helped
