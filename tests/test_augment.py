"""augment.py's corruptions on real speech, and the robustness benchmark end to end."""
import io
import json

import numpy as np
import pytest
import soundfile as sf
from pyroomacoustics.experimental import measure_rt60

import augment
import cache
import evaluation
import features as F
import modeldir
from conftest import run_script

SR = 22050


@pytest.fixture(scope="module")
def speech(datasets) -> np.ndarray:
    return F.load_audio(datasets / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac", SR)


@pytest.fixture(scope="module")
def talkers(datasets) -> list[np.ndarray]:
    return [F.load_audio(p, SR) for p in sorted((datasets / "ravdess" / "Actor_03").iterdir())[:8]]


@pytest.mark.parametrize("noise", augment.NOISES)
def test_noise_is_added_at_the_asked_snr_over_the_speech(speech, talkers, noise):
    for snr in (20, 10, 0):
        noisy = augment.corrupt(speech, SR, f"{noise}:{snr}", np.random.default_rng(1), talkers)
        assert noisy.shape == speech.shape and noisy.dtype == np.float32
        assert augment.snr_db(speech, noisy - speech) == pytest.approx(snr, abs=0.5)
    # Measured over the speech, not the whole clip: the silence around it does not count.
    active = augment.speech_active(speech)
    assert 0.3 < active.mean() < 0.8


def test_noise_colours_have_their_spectral_slopes():
    rng = np.random.default_rng(0)
    for exponent in (0, 1, 2):
        noise = augment.coloured_noise(2 ** 16, exponent, rng)
        power = np.abs(np.fft.rfft(noise)) ** 2
        f = np.fft.rfftfreq(len(noise))
        bands = [power[(f >= lo) & (f < 2 * lo)].mean() for lo in (0.01, 0.02, 0.04, 0.08)]
        slope = np.polyfit(np.log2([0.01, 0.02, 0.04, 0.08]), 10 * np.log10(bands), 1)[0]  # dB per octave
        assert slope == pytest.approx(-3.0 * exponent, abs=1.0)


def test_hum_holds_the_mains_frequency_and_its_harmonics():
    y = augment.hum(SR * 2, SR, 50.0, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    peaks = sorted(f[np.argsort(power)[-3:]])
    assert peaks == pytest.approx([50.0, 100.0, 150.0])


@pytest.mark.slow
@pytest.mark.parametrize("rt60", [0.3, 0.6, 0.9])
def test_simulated_rooms_reverberate_for_their_rt60(rt60):
    for rir in augment.rir_bank(rt60, SR):
        # Schroeder integration, by pyroomacoustics' own estimator and by ours.
        assert measure_rt60(rir, fs=SR, decay_db=20) == pytest.approx(rt60, rel=0.2)
        assert augment.schroeder_rt60(rir, SR) == pytest.approx(rt60, rel=0.2)


def test_reverb_keeps_the_length_and_smears_the_speech(speech):
    wet = augment.corrupt(speech, SR, "reverb:0.9", np.random.default_rng(0))
    assert wet.shape == speech.shape
    # After the speech ends, the room still rings.
    end = np.flatnonzero(augment.speech_active(speech))[-1]
    tail = slice(end + SR // 20, end + SR // 5)
    assert np.mean(wet[tail] ** 2) > 10 * np.mean(speech[tail] ** 2)


def test_telephone_leaves_nothing_above_4_khz(speech):
    line = augment.corrupt(speech, SR, "telephone", np.random.default_rng(0))
    power = np.abs(np.fft.rfft(line)) ** 2
    f = np.fft.rfftfreq(len(line), 1 / SR)
    assert power[f > 4000].sum() < 1e-6 * power.sum()
    assert power[(f > 300) & (f < 3400)].sum() > 0.9 * power.sum()


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_codecs_round_trip_at_about_their_bitrate(speech, codec):
    for kbps in (16, 32):
        y = augment.corrupt(speech, SR, f"{codec}:{kbps}", np.random.default_rng(0))
        assert y.shape == speech.shape
        assert np.corrcoef(y, speech)[0, 1] > 0.5  # still the same speech, give or take the codec's delay
        buffer = io.BytesIO()
        rate = augment.CODEC_RATES[codec]
        extra = {"bitrate_mode": "CONSTANT"} if codec == "mp3" else {}
        sf.write(buffer, F.resample(speech, SR, rate), rate, format="MP3" if codec == "mp3" else "OGG",
                 subtype="MPEG_LAYER_III" if codec == "mp3" else "OPUS",
                 compression_level=augment.codec_level(codec, kbps), **extra)
        measured = len(buffer.getvalue()) * 8 / (len(speech) / SR) / 1000
        assert measured == pytest.approx(kbps, rel=0.35)


def test_gain_and_clipping(speech):
    quiet = augment.corrupt(speech, SR, "gain:-30", np.random.default_rng(0))
    np.testing.assert_allclose(quiet, speech * 10 ** (-30 / 20), rtol=1e-5)
    clipped = augment.corrupt(speech, SR, "clip:-20", np.random.default_rng(0))
    assert np.abs(clipped).max() == pytest.approx(np.abs(speech).max() / 10, rel=1e-5)
    assert (np.abs(clipped) == np.abs(clipped).max()).mean() > 0.01  # a share of the samples is flattened


@pytest.mark.parametrize("condition", [c for c in augment.CONDITIONS if c != "clean"])
def test_the_same_seed_gives_the_same_output(speech, talkers, condition):
    first = augment.corrupt(speech, SR, condition, np.random.default_rng(7), talkers)
    np.testing.assert_array_equal(first, augment.corrupt(speech, SR, condition, np.random.default_rng(7), talkers))
    assert not np.array_equal(first, speech)


@pytest.mark.slow
def test_training_corruptions_vary_with_the_seed_and_repeat_with_it(speech, talkers):
    outputs = [augment.training_corruption(speech, SR, np.random.default_rng(s), talkers) for s in range(12)]
    assert all(o.shape == speech.shape and np.isfinite(o).all() for o in outputs)
    assert len({o.tobytes() for o in outputs}) >= 10  # the telephone line alone draws nothing at random
    again = augment.training_corruption(speech, SR, np.random.default_rng(3), talkers)
    np.testing.assert_array_equal(again, outputs[3])


@pytest.mark.parametrize("condition, message", [
    ("white:loud", "white:loud: 'loud' is not a number"),
    ("thunder:10", "unknown corruption 'thunder'"),
    ("white", "white needs a value, e.g. white:10"),
    ("telephone:3", "telephone takes no value"),
    ("reverb:-1", "reverb:-1: the value must be positive"),
])
def test_bad_conditions_are_one_line_errors(condition, message):
    with pytest.raises(augment.CorruptionError) as caught:
        augment.parse_condition(condition)
    assert str(caught.value).startswith(message)
    result = run_script("bench/robustness.py", "--conditions", condition)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"robustness.py: error: argument --conditions: {message}")


def evaluated_sample(model_dir, n: int):
    """(the saved model, n of its test clips drawn as bench/robustness.py --limit n draws them, evaluate_saved
    of the model on their clean features)."""
    model = modeldir.load_model_dir(model_dir)
    clips, _ = evaluation.clips_to_evaluate(model, None)
    clips = clips.sample(n, random_state=0).reset_index(drop=True)
    data = cache.load_features(clips, model.config, cache_dir=None)
    return model, clips, evaluation.evaluate_saved(model, data.X, data.clips)


def test_robustness_benchmark_runs_end_to_end(brief_model, tmp_path):
    out = tmp_path / "robustness"
    conditions = ["clean", "white:10", "babble:0", "reverb:0.3", "telephone", "opus:16"]
    result = run_script("bench/robustness.py", "--model-dir", brief_model[0], "--limit", "12", "--conditions",
                        *conditions, "--out", out)
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "robustness.json").read_text())
    assert [r["condition"] for r in saved["conditions"]] == conditions
    assert all(r["n"] == 12 and r["skipped"] == 0 for r in saved["conditions"])
    # The clean row is what the model scores on those clips through the evaluation path.
    _, _, expected = evaluated_sample(brief_model[0], 12)
    assert saved["conditions"][0]["accuracy"] == pytest.approx(expected["accuracy"])
    assert (out / "robustness.md").read_text().count("\n") == 2 + 6  # a header, a row per condition
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_robustness_over_several_models_gives_their_mean_and_spread(brief_model, small_corpus, tmp_path):
    import train_model
    other = train_model.main(["--data-dir", str(small_corpus), "--model-dir", str(tmp_path / "fold-1,2"),
                              "--cache-dir", str(brief_model[1]), "--split", "speaker", "--test-speakers", "1,2",
                              "--epochs", "1", "--copies", "0"])
    out = tmp_path / "robustness"
    result = run_script("bench/robustness.py", "--model-dir", brief_model[0], other, "--limit", "8",
                        "--conditions", "clean", "white:0", "--out", out)
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "robustness.json").read_text())
    first, second = saved["models"]
    assert saved["model_dirs"] == [str(brief_model[0]), str(other)] == [first["model_dir"], second["model_dir"]]
    # Each model is scored on its own test actors, and the pooled row is the mean and spread over the models.
    for one_model, model_dir in ((first, brief_model[0]), (second, other)):
        model, clips, expected = evaluated_sample(model_dir, 8)
        assert one_model["conditions"][0]["accuracy"] == pytest.approx(expected["accuracy"])
        assert set(clips["speaker"]) <= set(model.metadata["split"]["test_speakers"])
    assert modeldir.load_model_dir(other).metadata["split"]["test_speakers"] == ["ravdess-01", "ravdess-02"]
    for i, row in enumerate(saved["conditions"]):
        accuracies = [first["conditions"][i]["accuracy"], second["conditions"][i]["accuracy"]]
        assert row["accuracy"] == pytest.approx(np.mean(accuracies))
        assert row["accuracy_std"] == pytest.approx(np.std(accuracies))
        assert row["n"] == 16
    assert f"| clean | {saved['conditions'][0]['accuracy']:.3f} ± " in (out / "robustness.md").read_text()


def test_robustness_reads_every_model_before_scoring_any(brief_model, tmp_path):
    result = run_script("bench/robustness.py", "--model-dir", brief_model[0], tmp_path / "none", "--limit", "4",
                        "--out", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: no model directory at {tmp_path / 'none'}; "
                                                  "train one with train_model.py or pass --model-dir"]
    assert "accuracy" not in result.stdout and not (tmp_path / "out").exists()
