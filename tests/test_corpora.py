"""EMO-DB read from its own file names, corpora behind symbolic links, several data folders, --corpora,
scoring on a corpus's own emotions, leaving one corpus out, and balancing speakers."""
import json
import os

import numpy as np
import pandas as pd
import pytest

import corpora
import evaluation
from config import EMOTIONS
from conftest import link_subset, run_script

BOREDOM = "EMO-DB boredom clips (no counterpart among the eight emotions)"


def test_emodb_is_indexed_by_its_own_file_names(emodb):
    clips, summary = corpora.index_corpus(emodb)
    assert len(clips) == 454 and set(clips["corpus"]) == {"emodb"}
    assert summary.excluded == {BOREDOM: 81} and not summary.unmatched
    # Speakers and genders as the corpus's README gives them.
    genders = clips.drop_duplicates("speaker").set_index("speaker")["gender"].to_dict()
    assert genders == {**{f"emodb-{s}": "male" for s in ("03", "10", "11", "12", "15")},
                       **{f"emodb-{s}": "female" for s in ("08", "09", "13", "14", "16")}}
    assert clips["emotion"].value_counts().to_dict() == {"angry": 127, "neutral": 79, "happy": 71, "fearful": 69,
                                                         "sad": 62, "disgust": 46}
    assert corpora.parse_emodb_name("03a01Fa") == {"corpus": "emodb", "speaker": "emodb-03", "gender": "male",
                                             "emotion": "happy", "sentence": "a01", "version": "a"}


def test_no_other_corpus_or_custom_file_parses_as_emodb(datasets):
    clips, _ = corpora.index_corpus(datasets)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in clips["path"]]
    assert len(stems) == 4240 and not any(corpora.parse_emodb_name(stem) for stem in stems)
    for stem in ["take1", "03a01Fa_copy", "01a01Fa", "03a03Fa", "03a01Xa", "03a01fa", "03-01-05-01-01-01-03",
                 "OAF_back_angry", "1203a01Fa"]:
        assert corpora.parse_emodb_name(stem) is None, stem


def test_corpora_behind_symbolic_links_are_indexed_once_and_loops_are_harmless(datasets, emodb, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "ravdess").symlink_to(datasets / "ravdess" / "Actor_05", target_is_directory=True)
    (data / "emodb").symlink_to(emodb, target_is_directory=True)
    (data / "emodb-again").symlink_to(emodb, target_is_directory=True)  # the same folder twice
    (data / "loop").mkdir()
    (data / "loop" / "back").symlink_to(data, target_is_directory=True)  # a link back up the tree
    clips, summary = corpora.index_corpus(data)
    assert clips["corpus"].value_counts().to_dict() == {"emodb": 454, "ravdess": 60}
    assert not clips["path"].duplicated().any() and summary.excluded == {BOREDOM: 81}


def test_several_data_folders_and_corpora_chosen_among_them(small_corpus, emodb, tmp_path):
    clips, _ = corpora.index_corpus([small_corpus, emodb])
    assert set(clips["corpus"]) == {"ravdess", "tess", "emodb"}
    assert set(corpora.select_corpora(clips, ["emodb", "tess"])["corpus"]) == {"emodb", "tess"}
    with pytest.raises(corpora.CorpusError,
                       match="corpus custom not found; the data folders hold emodb, ravdess, tess"):
        corpora.select_corpora(clips, ["custom"])
    with pytest.raises(corpora.CorpusError, match="same path under two of"):
        corpora.index_corpus([small_corpus, small_corpus / "."])
    result = run_script("train_model.py", "--data-dir", small_corpus, emodb, "--corpora", "ravdess,mine",
                        "--model-dir", tmp_path / "m")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == \
        "error: corpus mine not found; the data folders hold emodb, ravdess, tess"


@pytest.mark.slow
def test_training_on_two_folders_records_both_and_test_model_finds_its_clips(small_corpus, emodb, tmp_path):
    import test_model
    import train_model
    model_dir = train_model.main(["--data-dir", str(small_corpus), str(emodb), "--corpora", "ravdess,emodb",
                                  "--model-dir", str(tmp_path / "m"), "--epochs", "1",
                                  "--cache-dir", str(tmp_path / "cache")])
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["data_dirs"] == [str(small_corpus.resolve()), str(emodb.resolve())]
    assert meta["corpora"] == ["emodb", "ravdess"]
    # Stratified by corpus and emotion: a fifth of each EMO-DB emotion in the test part.
    emodb_clips, _ = corpora.index_corpus(emodb)
    in_test = emodb_clips["relpath"].isin(meta["split"]["test"])
    for emotion, n in emodb_clips["emotion"].value_counts().items():
        assert abs(in_test[emodb_clips["emotion"] == emotion].sum() - 0.2 * n) <= 1, emotion
    test = meta["split"]["test"]
    result = test_model.main(["--model-dir", str(model_dir), "--cache-dir", str(tmp_path / "cache")])
    assert set(result["per_corpus"]) == {"emodb", "ravdess"} and result["n"] == len(test)
    # EMO-DB has six of the eight emotions: its figures restricted to those come beside the usual ones.
    assert result["per_corpus"]["emodb"]["shared_emotions"]["labels"] == ["neutral", "happy", "sad", "angry",
                                                                         "fearful", "disgust"]
    assert "shared_emotions" not in result["per_corpus"]["ravdess"]


def test_scores_restricted_to_a_corpus_own_emotions_on_a_hand_made_case():
    labels = list(EMOTIONS)  # neutral calm happy sad ...
    # Three clips, true neutral, neutral, happy. The model's favourite is calm (absent here) for the first two.
    p = np.array([[0.3, 0.5, 0.2, 0, 0, 0, 0, 0],
                  [0.1, 0.6, 0.3, 0, 0, 0, 0, 0],
                  [0.1, 0.2, 0.7, 0, 0, 0, 0, 0]])
    clips = pd.DataFrame({"emotion": ["neutral", "neutral", "happy"], "corpus": ["x"] * 3})
    ev = evaluation.evaluate(p, clips, labels)
    assert ev["accuracy"] == pytest.approx(1 / 3)
    shared = ev["shared_emotions"]
    assert shared["labels"] == ["neutral", "happy"]
    assert shared["accuracy"] == pytest.approx(2 / 3)  # calm is not allowed: clip 1 -> neutral, clip 2 -> happy
    assert shared["uar"] == pytest.approx((1 / 2 + 1) / 2)
    assert ev["per_corpus"]["x"]["shared_emotions"] == shared
    assert "own emotions" in evaluation.report_text(ev)
    every = evaluation.evaluate(np.eye(8), pd.DataFrame({"emotion": labels, "corpus": ["y"] * 8}), labels)
    assert "shared_emotions" not in every


@pytest.mark.slow
def test_leave_one_corpus_out_runs_end_to_end_on_a_few_clips(datasets, emodb, tmp_path):
    corpus = link_subset(datasets, tmp_path / "corpus", actors=(1, 2, 3, 4), tess_per_folder=12)
    result = run_script("evaluate_corpora.py", "--data-dir", corpus, emodb, "--epochs", "1", "--copies", "0",
                        "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "out" / "loco.json").read_text())
    rows = {row["test"]: row for row in saved["held_out"]}
    assert set(rows) == {"emodb", "ravdess", "tess"}
    assert rows["emodb"]["train"] == ["ravdess", "tess"] and rows["emodb"]["n"] == 454
    assert len(rows["emodb"]["shared_emotions"]["labels"]) == 6 and len(rows["tess"]["shared_emotions"]["labels"]) == 7
    assert rows["ravdess"]["shared_emotions"]["labels"] == list(EMOTIONS)  # RAVDESS has all eight
    assert "| ravdess + tess | emodb | 454 |" in result.stdout
    one = run_script("evaluate_corpora.py", "--data-dir", emodb, "--epochs", "1", "--cache-dir", tmp_path / "cache")
    assert one.returncode != 0
    assert one.stderr.strip().splitlines()[-1] == "error: leaving one corpus out needs two or more; found only emodb"
