"""Indexing, audio loading, MFCC extraction and the feature cache, on the real corpora."""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

import cache
import corpora
import features as F
from config import EMOTIONS, FeatureConfig

CONFIG = FeatureConfig()


@pytest.fixture(scope="module")
def index(datasets):
    return corpora.index_corpus(datasets)


def test_index_finds_every_clip_of_both_corpora(index):
    clips, summary = index
    assert clips["corpus"].value_counts().to_dict() == {"tess": 2800, "ravdess": 1440}
    assert summary.unmatched == [] and summary.excluded == {}
    assert clips["path"].is_unique


def test_index_labels_every_ravdess_emotion_code(index):
    clips, _ = index
    ravdess = clips[clips["corpus"] == "ravdess"]
    codes = ravdess["relpath"].str.extract(r"03-01-(\d\d)-(\d\d)-\d\d-\d\d-(\d\d)\.flac$")
    assert not codes.isna().any().any()
    assert (ravdess["emotion"] == [EMOTIONS[int(c) - 1] for c in codes[0]]).all()
    assert set(ravdess["emotion"]) == set(EMOTIONS)
    assert ravdess["emotion"].value_counts()["neutral"] == 96  # neutral has no strong intensity
    assert (ravdess["intensity"] == np.where(codes[1] == "02", "strong", "normal")).all()
    assert (ravdess["speaker"] == "ravdess-" + codes[2]).all()
    assert (ravdess["gender"] == np.where(codes[2].astype(int) % 2 == 1, "male", "female")).all()
    assert ravdess["speaker"].nunique() == 24


def test_index_labels_every_tess_folder(index):
    clips, _ = index
    tess = clips[clips["corpus"] == "tess"]
    folder_emotion = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
                      "neutral": "neutral", "pleasant_surprise": "surprised", "sad": "sad"}
    folders = tess["relpath"].str.extract(r"^tess/(OAF|YAF)_([a-z_]+)/")
    assert set(folders[1]) == set(folder_emotion)
    assert (tess["emotion"] == folders[1].map(folder_emotion)).all()
    assert (tess["speaker"] == "tess-" + folders[0]).all()
    assert "calm" not in set(tess["emotion"])
    assert tess.groupby(["speaker", "emotion"]).size().eq(200).all()
    typo = tess[tess["relpath"].str.endswith("OA_bite_neutral.flac")]
    assert typo[["speaker", "emotion", "word"]].values.tolist() == [["tess-OAF", "neutral", "bite"]]


def test_identical_ravdess_pair_is_reported_and_grouped(index):
    clips, summary = index
    pair = ["ravdess/Actor_07/03-01-03-01-02-01-07.flac", "ravdess/Actor_07/03-01-03-01-02-02-07.flac"]
    assert pair in summary.duplicates
    assert clips.loc[clips["relpath"].isin(pair), "group"].nunique() == 1
    assert clips["group"].nunique() == len(clips) - 1


def test_index_leaves_out_song_video_and_unknown_names(datasets, tmp_path):
    clip = datasets / "ravdess" / "Actor_01" / "03-01-05-01-01-01-01.flac"
    for name in ["03-01-05-01-01-01-01.flac", "03-02-05-01-01-01-01.flac", "01-01-05-01-01-01-01.flac",
                 "02-01-05-01-01-01-01.wav", "holiday.wav", "YAF_dog_bored.wav"]:
        shutil.copy(clip, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not audio")
    clips, summary = corpora.index_corpus(tmp_path)
    assert clips["relpath"].tolist() == ["03-01-05-01-01-01-01.flac"]
    assert sum(summary.excluded.values()) == 3
    assert any("song" in reason for reason in summary.excluded)
    assert sorted(summary.unmatched) == ["YAF_dog_bored.wav", "holiday.wav"]
    assert any("2 audio files" in line for line in summary.lines())


def test_folder_per_emotion_corpus_beside_the_others(datasets, tmp_path):
    source = sorted((datasets / "tess" / "YAF_sad").iterdir())[:2]
    layout = {"Anger": "angry", "happiness": "happy", "SURPRISE": "surprised", "fear": "fearful",
              "disgusted": "disgust", "sadness": "sad", "calm": "calm", "neutral": "neutral", "bored": None}
    for folder in layout:
        (tmp_path / "mine" / folder).mkdir(parents=True)
        for i, clip in enumerate(source):
            shutil.copy(clip, tmp_path / "mine" / folder / f"take{i}{'.flac' if i else '.wav'}")
    shutil.copytree(datasets / "ravdess" / "Actor_02", tmp_path / "ravdess" / "Actor_02")
    clips, summary = corpora.index_corpus(tmp_path)
    custom = clips[clips["corpus"] == "custom"]
    assert len(custom) == 16 and len(clips) == 16 + 60
    assert dict(zip(custom["relpath"], custom["emotion"], strict=True)) == {
        f"mine/{folder}/take{i}{'.flac' if i else '.wav'}": emotion
        for folder, emotion in layout.items() if emotion for i in range(2)}
    assert set(custom["speaker"]) == {"custom-mine"}
    assert sorted(summary.unmatched) == ["mine/bored/take0.wav", "mine/bored/take1.flac"]
    assert "(folders: bored)" in summary.lines()[0]
    # Emotion folders right in the data folder name no speaker: each clip stands alone.
    alone, _ = corpora.index_corpus(tmp_path / "mine")
    assert len(alone) == 16 and alone["speaker"].is_unique and "custom-Anger/take0.wav" in set(alone["speaker"])


def test_no_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(corpora.CorpusError, match="no RAVDESS, TESS, EMO-DB or emotion-folder clips found under"):
        corpora.index_corpus(tmp_path)
    with pytest.raises(corpora.CorpusError, match="is not a folder"):
        corpora.index_corpus(tmp_path / "missing")


def test_odd_real_files_load_as_mono_at_the_model_rate(datasets, originals):
    cases = {
        originals / "ravdess" / "03-01-02-01-01-02-01.wav": (48000, 2),  # stereo
        originals / "tess" / "OAF_food_fear.wav": (96000, 1),
        datasets / "tess" / "YAF_angry" / "YAF_germ_angry.wav": (24414, 1),  # AIFF data named .wav
        datasets / "tess" / "OAF_angry" / "OAF_back_angry.wav": (44100, 1),  # float, peaks above 1
        originals / "tess" / "OA_bite_neutral.wav": (24414, 1),
    }
    for path, (rate, channels) in cases.items():
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (rate, channels), path
        y = F.load_audio(path, CONFIG.sample_rate)
        assert y.ndim == 1 and y.dtype == np.float32
        assert abs(len(y) - info.duration * CONFIG.sample_rate) <= 2, path
        assert F.clip_features(path, CONFIG).shape == CONFIG.shape
    assert sf.info(datasets / "tess" / "YAF_angry" / "YAF_germ_angry.wav").format == "AIFF"


def test_resampled_original_matches_the_shared_22khz_copy(datasets, originals):
    """Our 48 kHz -> 22,050 Hz path gives the features of the corpus copy sox resampled."""
    ours = F.clip_features(originals / "ravdess" / "03-01-05-01-01-01-01.wav", CONFIG)
    theirs = F.clip_features(datasets / "ravdess" / "Actor_01" / "03-01-05-01-01-01-01.flac", CONFIG)
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999
    assert np.abs(ours - theirs).max() < 0.05 * np.abs(theirs).max()


def write_bad_files(folder):
    """One synthetic file for each skip reason, with RAVDESS names so the index keeps them."""
    rate = 22050
    folder.mkdir(parents=True, exist_ok=True)
    bad = {
        "03-01-01-01-01-01-01.wav": "unreadable",  # zero bytes
        "03-01-02-01-01-01-01.wav": "unreadable",  # a WAV header cut short
        "03-01-03-01-01-01-01.wav": "unreadable",  # text named .wav
        "03-01-04-01-01-01-01.wav": "empty",  # a valid WAV with no frames
        "03-01-05-01-01-01-01.wav": "silent",
        "03-01-06-01-01-01-01.wav": "non-finite",
    }
    (folder / "03-01-01-01-01-01-01.wav").write_bytes(b"")
    tone = (0.5 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    sf.write(folder / "whole.wav", tone, rate)
    (folder / "03-01-02-01-01-01-01.wav").write_bytes((folder / "whole.wav").read_bytes()[:30])
    (folder / "whole.wav").unlink()
    (folder / "03-01-03-01-01-01-01.wav").write_text("this is not audio\n" * 100)
    sf.write(folder / "03-01-04-01-01-01-01.wav", np.zeros(0, np.float32), rate)
    sf.write(folder / "03-01-05-01-01-01-01.wav", np.zeros(rate, np.float32), rate, subtype="PCM_16")
    nan = tone.copy()
    nan[100] = np.nan
    sf.write(folder / "03-01-06-01-01-01-01.wav", nan, rate, subtype="FLOAT")
    sf.write(folder / "03-01-07-01-01-01-01.wav", tone, rate)  # the one good file
    return bad


def test_bad_files_are_named_counted_skips(tmp_path):
    bad = write_bad_files(tmp_path / "corpus")
    clips, _ = corpora.index_corpus(tmp_path / "corpus")
    assert len(clips) == 7
    result = cache.load_features(clips, CONFIG, cache_dir=tmp_path / "cache")
    assert result.clips["relpath"].tolist() == ["03-01-07-01-01-01-01.wav"]
    assert result.X.shape == (1, *CONFIG.shape)
    got = {os.path.basename(p): r for p, r in zip(result.skipped["path"], result.skipped["reason"], strict=True)}
    assert got == bad
    assert result.skip_line().startswith("skipped 6 clips (3 unreadable, ")
    for path, reason in bad.items():
        with pytest.raises(F.SkipClip, match=f"^{reason}$"):
            F.clip_features(tmp_path / "corpus" / path, CONFIG)
    # Skips are cached too, except "unreadable", which may pass: only those are read again.
    again = cache.load_features(clips, CONFIG, cache_dir=tmp_path / "cache")
    assert again.n_extracted == list(bad.values()).count("unreadable") == 3
    assert dict(zip(again.skipped["path"].map(os.path.basename), again.skipped["reason"], strict=True)) == bad


def test_feature_shape_and_config_round_trip():
    assert CONFIG.shape == (130, 13)  # 3 s at 22,050 Hz, hop 512
    saved = json.loads(json.dumps(CONFIG.to_dict()))
    assert FeatureConfig.from_dict(saved) == CONFIG
    assert cache.config_digest(FeatureConfig.from_dict(saved)) == cache.config_digest(CONFIG)
    assert cache.config_digest(FeatureConfig(window_s=2.0)) != cache.config_digest(CONFIG)
    assert FeatureConfig(window_s=2.0).shape == (87, 13)
    with pytest.raises(ValueError, match="unknown feature config keys"):
        FeatureConfig.from_dict({**saved, "n_chroma": 12})
    # Models saved before the pruning name their front end and floor: the kept ones load, the retired ones do not.
    assert FeatureConfig.from_dict({**saved, "frontend": "mfcc", "floor_db": 80.0}) == CONFIG
    with pytest.raises(ValueError, match="frontend=pcen, a front end no longer built"):
        FeatureConfig.from_dict({**saved, "frontend": "pcen"})
    with pytest.raises(ValueError, match="floor_db=40"):
        FeatureConfig.from_dict({**saved, "floor_db": 40})
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIG.n_mfcc = 20


def test_mfcc_equals_librosa_reference(datasets):
    y = F.fix_length(F.peak_normalise(F.load_audio(datasets / "tess/YAF_happy/YAF_dog_happy.flac", 22050)),
                     CONFIG.n_samples)
    reference = librosa.feature.mfcc(y=y, sr=22050, n_mfcc=13, n_fft=2048, hop_length=512).T
    ours = F.mfcc_sequence(y, CONFIG)
    assert ours.shape == CONFIG.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3)


def test_waveform_is_peak_normalised_and_centred():
    y = np.arange(1, 11, dtype=np.float32)
    assert F.fix_length(y, 4).tolist() == [4, 5, 6, 7]
    assert F.fix_length(y[:3], 7).tolist() == [0, 0, 1, 2, 3, 0, 0]
    assert F.peak_normalise(-2 * y).min() == -1.0
    loud, quiet = np.sin(np.linspace(0, 300, 22050)), 0.01 * np.sin(np.linspace(0, 300, 22050))
    np.testing.assert_allclose(F.waveform_features(loud, CONFIG), F.waveform_features(quiet, CONFIG), atol=1e-3)


def test_cache_hit_on_second_run_and_recompute_on_change(small_corpus, tmp_path):
    clips, _ = corpora.index_corpus(small_corpus)
    clips = clips.head(40)
    first = cache.load_features(clips, CONFIG, cache_dir=tmp_path)
    assert first.n_extracted == 40
    second = cache.load_features(clips, CONFIG, cache_dir=tmp_path)
    assert second.n_extracted == 0
    np.testing.assert_array_equal(first.X, second.X)
    # Keyed by content: a copy elsewhere is known; an edit is seen even with its modification time kept.
    target = tmp_path / "copy"
    shutil.copytree(small_corpus / "ravdess" / "Actor_01", target / "Actor_01")
    copied, _ = corpora.index_corpus(target)
    assert cache.load_features(copied.head(5), CONFIG, cache_dir=tmp_path).n_extracted == 0
    edited = Path(copied["path"][0])
    times = edited.stat()
    y, rate = sf.read(edited)
    sf.write(edited, 0.5 * y, rate, format="FLAC")
    os.utime(edited, ns=(times.st_atime_ns, times.st_mtime_ns))  # as cp -p and rsync -t leave it
    again = cache.load_features(copied.head(5), CONFIG, cache_dir=tmp_path)
    assert again.n_extracted == 1
    assert cache.load_features(clips, FeatureConfig(n_mfcc=20), cache_dir=tmp_path).n_extracted == 40


def test_cache_grows_by_shards_and_merges_them(small_corpus, tmp_path):
    clips, _ = corpora.index_corpus(small_corpus)
    cache.load_features(clips.head(30), CONFIG, cache_dir=tmp_path)
    (folder,) = tmp_path.glob("mfcc-*")
    (first,) = folder.glob("*.npz")
    before = first.stat().st_mtime_ns
    cache.load_features(clips.head(32), CONFIG, cache_dir=tmp_path)  # two new clips: a small new shard
    shards = sorted(folder.glob("*.npz"), key=lambda f: f.stat().st_size)
    assert len(shards) == 2 and first.stat().st_mtime_ns == before
    assert len(np.load(shards[0])["keys"]) == 2
    last = 32 + cache.MAX_CACHE_SHARDS - 1  # a clip per call: MAX_CACHE_SHARDS shards, then the merge
    for n in range(33, last + 1):
        cache.load_features(clips.head(n), CONFIG, cache_dir=tmp_path)
    (merged,) = folder.glob("*.npz")
    assert len(np.load(merged)["keys"]) == last
    assert cache.load_features(clips.head(last), CONFIG, cache_dir=tmp_path).n_extracted == 0


def test_cache_is_per_library_version(monkeypatch):
    digest = cache.config_digest(CONFIG)
    versions = cache.library_versions
    monkeypatch.setattr(cache, "library_versions",
                        lambda names, python: {**versions(names, python=python), "librosa": "0.0.1"})
    assert cache.config_digest(CONFIG) != digest


def test_corrupt_cache_is_rebuilt(small_corpus, tmp_path, caplog):
    clips, _ = corpora.index_corpus(small_corpus)
    clips = clips.head(10)
    good = cache.load_features(clips, CONFIG, cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("mfcc-*/*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:5000])
    rebuilt = cache.load_features(clips, CONFIG, cache_dir=tmp_path)
    assert rebuilt.n_extracted == 10
    assert "unreadable" in caplog.text and "rebuilding" in caplog.text
    np.testing.assert_array_equal(good.X, rebuilt.X)
    assert cache.load_features(clips, CONFIG, cache_dir=tmp_path).n_extracted == 0


def test_trimming_removes_the_corpus_padding_signature(datasets):
    """Trimmed, a RAVDESS clip and a TESS clip are padded by how long their speech is, not by their corpus."""
    trimmed = FeatureConfig(trim_db=30)
    ravdess = F.load_audio(datasets / "ravdess/Actor_01/03-01-05-01-01-01-01.flac", 22050)
    kept = librosa.effects.trim(F.peak_normalise(ravdess), top_db=30)[0]
    assert len(kept) < len(ravdess) - 22050 // 2  # RAVDESS clips carry seconds of silence
    np.testing.assert_allclose(F.waveform_features(ravdess, trimmed),
                               F.mfcc_sequence(F.fix_length(kept, trimmed.n_samples), trimmed), atol=1e-5)
    assert cache.config_digest(trimmed) != cache.config_digest(CONFIG)


def test_deltas_triple_the_features():
    config = FeatureConfig(deltas=True)
    y = np.sin(np.linspace(0, 3000, 22050 * 2)).astype(np.float32) * np.linspace(0, 1, 22050 * 2, dtype=np.float32)
    X = F.waveform_features(y, config)
    assert X.shape == config.shape == (130, 39)
    np.testing.assert_array_equal(X[:, :13], F.waveform_features(y, CONFIG))
    np.testing.assert_allclose(X[:, 13:26], librosa.feature.delta(X[:, :13], axis=0), atol=1e-5)


def test_delta_columns_are_the_first_and_second_differences(datasets):
    """With deltas the features are [MFCC | delta | delta-delta], each as librosa computes it over time."""
    config = FeatureConfig(trim_db=30, deltas=True)
    y = F.load_audio(datasets / "tess" / "OAF_angry" / "OAF_bar_angry.flac", config.sample_rate)
    X = F.waveform_features(y, config)
    assert X.shape == (130, 39)
    mfcc = librosa.feature.mfcc(y=F.model_window(y, config), sr=config.sample_rate, n_mfcc=13, n_fft=2048,
                                hop_length=512)
    np.testing.assert_allclose(X[:, :13], mfcc.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(X[:, 13:26], librosa.feature.delta(mfcc).T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(X[:, 26:], librosa.feature.delta(mfcc, order=2).T, rtol=1e-4, atol=1e-3)
    assert np.abs(X[:, 26:]).max() > 0.1  # not a column of zeros

