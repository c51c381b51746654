"""The offline synthetic corpora: real loaders read them back, speakers are disjoint, output is reproducible.

The tiny preset is generated once per session (a few seconds). Tests that need libespeak-ng in this
process run it in a forked child instead: the library keeps state across calls that no API resets
(flutter phase), and ``generate`` forks its workers from this process, so an engine used here would
change every later generation (see ``test_output_does_not_depend_on_the_parent_using_espeak``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import fft as sfft

import metalearn.data.synth.generate as synth_generate
from metalearn.cli import main
from metalearn.data.corpora import load_corpus
from metalearn.data.corpora.esd import FEMALE as ESD_FEMALE
from metalearn.data.corpora.esd import MALE as ESD_MALE
from metalearn.data.synth.channel import Condition, coloured_noise, record, spectral_tilt
from metalearn.data.synth.generate import MARKER, generate, plan_corpora
from metalearn.data.synth.plan import CorpusPlan
from metalearn.data.synth.presets import PRESETS, Preset
from metalearn.data.synth.render import speak
from metalearn.data.synth.styles import (
    DIMS,
    PROTOTYPES,
    SCALE,
    StyleConfig,
    physical,
    sample_style,
    utterance_displacement,
)
from metalearn.data.synth.voices import Voice, sample_voice, variant_file
from metalearn.util.errors import MetalearnError

SEED = 0
CORPORA = ("esd", "iemocap", "msp_podcast", "cremad", "ravdess")
# One speaker per source corpus (two for the target), for the tests that generate several times.
MICRO = Preset(esd=(2, 1, 1, 1), iemocap=(1, 1), msp_podcast=(1, 1), cremad=(1, 1), ravdess=(1, 1))
SOURCES = ("iemocap", "msp_podcast", "cremad", "ravdess")
OLD_NS = 1_000_000_000 * 10**9  # 2001-09-09: a file with this mtime was not written by the last call
SENTENCE = "The old man painted the red door before noon."
requires_fork = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")


# ----------------------------------------------------------------------------------------- helpers

def digests(out: Path, corpora: tuple[str, ...] = CORPORA, suffix: str = "") -> dict[str, str]:
    """sha256 of every file under the corpus folders of ``out`` (hidden files included)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for name in corpora for p in sorted((out / name).rglob(f"*{suffix}")) if p.is_file()}


def mtimes(out: Path, corpora: tuple[str, ...] = CORPORA) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for name in corpora for p in sorted((out / name).rglob("*")) if p.is_file()}


def age_files(out: Path) -> None:
    """Set every file's mtime to :data:`OLD_NS`, so a rewrite is visible whatever the clock's resolution."""
    for p in out.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(OLD_NS, OLD_NS))


def in_child(fn: Callable, *args):
    """``fn(*args)`` in a forked child (keeps libespeak-ng's state out of this process); its result."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            send.send(("ok", fn(*args)))
        except BaseException:
            send.send(("error", traceback.format_exc()))

    proc = ctx.Process(target=target)
    proc.start()
    try:
        assert recv.poll(120), "child timed out"
        status, value = recv.recv()
    finally:
        proc.join(10)
    assert status == "ok", value
    return value


def f0_track(x: np.ndarray, sr: int, fmin: float = 60.0, fmax: float = 600.0) -> np.ndarray:
    """Autocorrelation f0 (Hz) of the loud, clearly periodic 40 ms frames of ``x`` (10 ms hop)."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    lo, hi = int(sr / fmax), int(sr / fmin)
    starts = range(0, len(x) - frame, hop)
    energy = np.array([np.sqrt(np.mean(x[i:i + frame] ** 2)) for i in starts])
    f0 = []
    for i, e in zip(starts, energy, strict=True):
        if e < 0.3 * energy.max():
            continue
        f = x[i:i + frame] - x[i:i + frame].mean()
        ac = np.correlate(f, f, "full")[frame - 1:]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5:
            f0.append(sr / lag)
    return np.array(f0)


def band_energy(x: np.ndarray, sr: int, low: float, high: float) -> float:
    spec = np.abs(sfft.rfft(x)) ** 2
    freqs = sfft.rfftfreq(x.size, 1.0 / sr)
    return float(spec[(freqs >= low) & (freqs < high)].sum())


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))))


# ---------------------------------------------------------------------------------------- fixtures

@dataclasses.dataclass(frozen=True)
class Generated:
    out: Path
    summary: dict


@pytest.fixture(scope="session")
def plans() -> dict[str, CorpusPlan]:
    return {p.name: p for p in plan_corpora(PRESETS["tiny"], SEED)}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    out = tmp_path_factory.mktemp("tiny") / "out"
    return Generated(out, generate("tiny", out, SEED))


@pytest.fixture(scope="session")
def micro_preset():
    with pytest.MonkeyPatch.context() as m:
        m.setitem(PRESETS, "micro", MICRO)
        yield "micro"


@pytest.fixture(scope="session")
def micro(tmp_path_factory: pytest.TempPathFactory, micro_preset: str) -> Generated:
    out = tmp_path_factory.mktemp("micro") / "out"
    return Generated(out, generate(micro_preset, out, SEED))


# ------------------------------------------------------------------------ 1. the corpora load back

def test_tiny_summary_matches_plan(tiny: Generated, plans: dict[str, CorpusPlan]) -> None:
    assert list(tiny.summary["corpora"]) == list(CORPORA)
    for name, info in tiny.summary["corpora"].items():
        assert info["skipped"] is False
        assert info["utterances"] == plans[name].n_utterances > 0
        assert info["speakers"] == len(plans[name].speakers)


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_loads_with_plan_counts(tiny: Generated, plans: dict[str, CorpusPlan], name: str) -> None:
    plan, root = plans[name], tiny.out / name
    result = load_corpus(name, root)
    assert len(result.problems) == 0, result.problems.summary()
    # Every planned file is on disk, and nothing else.
    wavs = {str(p.relative_to(root)) for p in root.rglob("*.wav")}
    utt_of = {u.rel_path: (sp, u) for sp in plan.speakers for u in sp.utterances}
    assert wavs == set(utt_of) and len(wavs) == plan.n_utterances
    # Loaded + excluded by design (no-agreement labels only) = planned.
    assert len(result.utterances) + sum(result.excluded.values()) == plan.n_utterances
    assert all("no agreement" in reason for reason in result.excluded)
    assert {u.speaker for u in result.utterances} == {sp.speaker for sp in plan.speakers}
    expected_sr = 48_000 if name == "ravdess" else 16_000
    assert plan.condition.sample_rate == expected_sr
    for u in result.utterances:
        sp, utt = utt_of[str(Path(u.path).relative_to(root.resolve()))]
        assert (u.speaker, u.gender, u.emotion) == (sp.speaker, sp.gender, utt.render)
        assert u.sample_rate == expected_sr
        assert 0.5 < u.duration_s < 15.0


def test_esd_speakers_splits_and_parallel_texts(tiny: Generated, plans: dict[str, CorpusPlan]) -> None:
    utts = load_corpus("esd", tiny.out / "esd").utterances
    speakers = sorted({u.speaker for u in utts})
    assert speakers == ["0011", "0012", "0015", "0016"]
    for u in utts:
        assert u.gender == ("female" if u.speaker in ESD_FEMALE else "male")
        assert u.speaker in ESD_FEMALE | ESD_MALE
    assert {u.speaker: u.gender for u in utts} == {
        "0011": "male", "0012": "male", "0015": "female", "0016": "female"}

    n_eval, n_test, n_train = PRESETS["tiny"].esd[1:]
    per_emotion = n_eval + n_test + n_train
    emotions = ("neutral", "angry", "happy", "sad", "surprise")  # ESD's 350-utterance blocks, in order
    counts = Counter((u.speaker, u.emotion) for u in utts)
    assert counts == {(s, e): per_emotion for s in speakers for e in emotions}
    splits = Counter((u.speaker, u.emotion, u.split) for u in utts)
    for s in speakers:
        for e in emotions:
            assert {k: splits[(s, e, k)] for k in ("evaluation", "test", "train")} == {
                "evaluation": n_eval, "test": n_test, "train": n_train}

    plan_text = {u.rel_path.rsplit("/", 1)[1][:-4]: u.text for sp in plans["esd"].speakers
                 for u in sp.utterances}
    text_at: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for u in utts:
        index = int(u.utterance_id.split("_")[1])
        assert u.emotion == emotions[(index - 1) // 350]
        assert u.text and u.text == plan_text[u.utterance_id]
        text_at[(u.speaker, (index - 1) % 350 + 1)][u.emotion] = u.text
    for s in speakers:
        positions = sorted(p for spk, p in text_at if spk == s)
        assert len(positions) == per_emotion
        row = []
        for p in positions:
            by_emotion = text_at[(s, p)]
            assert set(by_emotion) == set(emotions)
            assert len(set(by_emotion.values())) == 1, f"{s} position {p}: {by_emotion}"
            row.append(by_emotion["neutral"])
        assert len(set(row)) == len(row), "different positions must carry different sentences"
        assert row == [text_at[(speakers[0], p)]["neutral"] for p in positions]  # same script for all


# ------------------------------------------------------------------------- 2. speakers and genders

def test_speaker_voices_are_disjoint_across_corpora(plans: dict[str, CorpusPlan]) -> None:
    speakers = [(name, sp) for name, plan in plans.items() for sp in plan.speakers]
    voices = [sp.voice for _, sp in speakers]
    assert all(isinstance(v, Voice) for v in voices)
    assert len(set(voices)) == len(voices)
    # Also distinct once rounded to what espeak-ng actually receives.
    rendered = {(v.accent, variant_file(v.gender, v.pitch_low_hz, v.pitch_high_hz, v.formant_scale,
                                        v.breath, v.roughness, v.flutter)) for v in voices}
    assert len(rendered) == len(voices)
    for name, plan in plans.items():
        ids = [sp.speaker for sp in plan.speakers]
        assert len(set(ids)) == len(ids), name
    for _, sp in speakers:
        assert sp.voice.gender == sp.gender


@pytest.mark.parametrize("name", CORPORA)
def test_each_corpus_is_gender_balanced(tiny: Generated, plans: dict[str, CorpusPlan], name: str) -> None:
    genders = {u.speaker: u.gender for u in load_corpus(name, tiny.out / name).utterances}
    count = Counter(genders.values())
    assert set(count) == {"female", "male"}
    assert abs(count["female"] - count["male"]) <= 1
    assert genders == {sp.speaker: sp.gender for sp in plans[name].speakers}


# --------------------------------------------------------------------------------- 3. determinism

def test_marker_embeds_nothing_variable(tiny: Generated) -> None:
    for name in CORPORA:
        marker = json.loads((tiny.out / name / MARKER).read_text())
        assert marker["corpus"] == name and marker["seed"] == SEED and marker["preset"] == "tiny"
        assert not {"time", "date", "created", "path", "root", "host", "seconds"} & set(marker)
        assert str(tiny.out) not in (tiny.out / name / MARKER).read_text()


def test_same_seed_is_byte_identical_whatever_the_workers(tiny: Generated, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's corpora were written with the default worker count; three again with one worker.

    (CREMA-D and RAVDESS are left out to save time; ``test_growing_a_preset...`` compares them.)
    """
    subset = ("esd", "iemocap", "msp_podcast")
    monkeypatch.setattr(synth_generate, "plan_corpora",
                        lambda preset, seed: [p for p in plan_corpora(preset, seed) if p.name in subset])
    summary = generate("tiny", tmp_path, SEED, workers=1)
    assert list(summary["corpora"]) == list(subset)
    expected = digests(tiny.out, subset)
    assert sum(k.endswith(".wav") for k in expected) == sum(
        tiny.summary["corpora"][name]["utterances"] for name in subset)
    assert sum(k.endswith(MARKER) for k in expected) == len(subset)
    got = digests(tmp_path, subset)
    assert got.keys() == expected.keys()
    assert [k for k in expected if got[k] != expected[k]] == []


def test_growing_a_preset_keeps_the_existing_source_files(tiny: Generated, micro: Generated) -> None:
    """Randomness comes from (seed, corpus, speaker, utterance): a file both presets write is the same."""
    small, large = digests(micro.out, SOURCES, ".wav"), digests(tiny.out, SOURCES, ".wav")
    common = small.keys() & large.keys()
    assert {k.split("/")[0] for k in common} == set(SOURCES)
    assert [k for k in common if small[k] != large[k]] == []


def test_different_seed_gives_different_audio(micro: Generated, micro_preset: str, tmp_path: Path) -> None:
    generate(micro_preset, tmp_path, SEED + 1)
    other = digests(tmp_path, suffix=".wav")
    same_seed = digests(micro.out, suffix=".wav")
    assert other.keys() == same_seed.keys()
    assert [k for k in other if other[k] == same_seed[k]] == []
    voices = {sp.voice for p in plan_corpora(MICRO, SEED + 1) for sp in p.speakers}
    assert not voices & {sp.voice for p in plan_corpora(MICRO, SEED) for sp in p.speakers}


@requires_fork
def test_output_does_not_depend_on_the_parent_using_espeak(micro: Generated, micro_preset: str,
                                                          tmp_path: Path) -> None:
    def dirty_generate(out: Path) -> dict[str, str]:
        from metalearn.data.synth.espeak import Espeak

        engine = Espeak()
        speak(engine, sample_voice(np.random.default_rng(1), "female"), PROTOTYPES["fear"], SENTENCE, 1)
        engine.close()
        generate(micro_preset, out, SEED)
        return digests(out, suffix=".wav")

    got = in_child(dirty_generate, tmp_path)
    expected = digests(micro.out, suffix=".wav")
    assert [k for k in expected if got[k] != expected[k]] == []


# ---------------------------------------------------------------------------- 4. rerun, markers, force

def damage(out: Path) -> set[str]:
    """Break three corpora the ways a killed or other run leaves them; returns their names."""
    (out / "cremad" / MARKER).unlink()
    (out / "ravdess" / MARKER).write_text("{not json")
    marker = json.loads((out / "msp_podcast" / MARKER).read_text())
    (out / "msp_podcast" / MARKER).write_text(json.dumps({**marker, "seed": SEED + 1}))  # another seed
    (out / "cremad" / "AudioWAV" / "stray.wav").write_bytes(b"left over by a killed run")
    return {"cremad", "ravdess", "msp_podcast"}


def test_rerun_is_a_no_op_and_redoes_only_damaged_corpora(micro: Generated, micro_preset: str,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(micro.out, out)  # a complete folder, elsewhere: the marker holds no path
    age_files(out)
    before, files = mtimes(out), digests(out)
    summary = generate(micro_preset, out, SEED)
    assert {n: i["skipped"] for n, i in summary["corpora"].items()} == dict.fromkeys(CORPORA, True)
    assert main(["synth", "--preset", micro_preset, "--out", str(out), "--seed", str(SEED)]) == 0
    assert mtimes(out) == before
    assert digests(out) == files

    redone = damage(out)
    summary = generate(micro_preset, out, SEED)
    assert {n: i["skipped"] for n, i in summary["corpora"].items()} == {n: n not in redone for n in CORPORA}
    assert digests(out) == files
    for rel, ns in mtimes(out).items():
        assert (ns != OLD_NS) == (rel.split("/")[0] in redone), rel


def test_damaged_corpora_and_force_are_regenerated(micro: Generated, micro_preset: str,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(micro.out, out)
    expected = digests(out)
    age_files(out)
    redone = damage(out)
    summary = generate(micro_preset, out, SEED)
    assert not any(summary["corpora"][name]["skipped"] for name in redone)
    assert not (out / "cremad" / "AudioWAV" / "stray.wav").exists()
    assert digests(out) == expected  # markers restored, audio identical
    assert [rel for rel, ns in mtimes(out).items() if rel.split("/")[0] in redone and ns == OLD_NS] == []

    age_files(out)
    summary = generate(micro_preset, out, SEED, force=True)
    assert not any(info["skipped"] for info in summary["corpora"].values())
    assert digests(out) == expected
    assert [rel for rel, ns in mtimes(out).items() if ns == OLD_NS] == []


# ------------------------------------------------------------------------------ 5. unknown preset

def test_unknown_preset_names_the_valid_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(MetalearnError) as e:
        generate("nope", tmp_path / "out", SEED)
    assert "nope" in str(e.value) and all(name in str(e.value) for name in PRESETS)
    assert not (tmp_path / "out").exists()
    assert main(["synth", "--preset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "tiny" in err
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- 6. unit tests

def variant_lines(text: str) -> dict[str, list[list[str]]]:
    lines: dict[str, list[list[str]]] = defaultdict(list)
    for line in text.splitlines():
        key, *values = line.split()
        lines[key].append(values)
    return lines


def test_variant_file_lines() -> None:
    text = variant_file("female", 180.4, 260.6, (104.4, 105.6, 99.9, 101.2, 110.0, 98.7), 2.4, 3.6, 11.2)
    assert text.endswith("\n")
    assert text.splitlines() == [
        "language variant", "name metalearn", "gender female", "pitch 180 261",
        "formant 0 104 100 100", "formant 1 106 100 100", "formant 2 100 100 100",
        "formant 3 101 100 100", "formant 4 110 100 100", "formant 5 99 100 100",
        "breath 0 1 2 2 2 2 2 1", "roughness 4", "flutter 11"]


@pytest.mark.parametrize(("breath", "roughness", "flutter", "expected"), [
    (20.0, 99.0, 500.0, ("0 7 8 8 8 8 8 7", "7", "60")),
    (-3.0, -1.0, -5.0, ("0 0 0 0 0 0 0 0", "0", "0")),
])
def test_variant_file_clips_voice_quality(breath: float, roughness: float, flutter: float,
                                          expected: tuple[str, str, str]) -> None:
    lines = variant_lines(variant_file("male", 100, 140, (95.0,) * 6, breath, roughness, flutter))
    assert (" ".join(lines["breath"][0]), lines["roughness"][0][0], lines["flutter"][0][0]) == expected


def test_variant_file_values_stay_in_range_for_random_voices() -> None:
    rng = np.random.default_rng(SEED)
    for _ in range(200):
        v = sample_voice(rng, str(rng.choice(["female", "male"])))
        d = rng.normal(scale=3.0, size=len(DIMS)) * SCALE
        lines = variant_lines(variant_file(v.gender, v.pitch_low_hz, v.pitch_high_hz, v.formant_scale,
                                           v.breath + d[4], v.roughness + d[5], v.flutter + d[6]))
        assert [int(f[0]) for f in lines["formant"]] == list(range(6))
        assert all(len(f) == 4 and 80 <= int(f[1]) <= 130 for f in lines["formant"])
        low, high = (int(x) for x in lines["pitch"][0])
        assert 0 < low < high
        breath = [int(x) for x in lines["breath"][0]]
        assert len(breath) == 8 and all(0 <= b <= 8 for b in breath)
        assert 0 <= int(lines["roughness"][0][0]) <= 7
        assert 0 <= int(lines["flutter"][0][0]) <= 60
        assert lines["gender"] == [[v.gender]]


def test_sample_voice_genders() -> None:
    rng = np.random.default_rng(SEED)
    female = [sample_voice(rng, "female") for _ in range(50)]
    male = [sample_voice(rng, "male") for _ in range(50)]
    assert np.mean([v.pitch_low_hz for v in female]) > np.mean([v.pitch_low_hz for v in male]) + 50
    assert np.mean([v.pitch_high_hz for v in female]) > np.mean([v.pitch_high_hz for v in male]) + 50
    assert np.mean([np.mean(v.formant_scale) for v in female]) > np.mean(
        [np.mean(v.formant_scale) for v in male])
    assert all(v.pitch_high_hz > v.pitch_low_hz for v in female + male)
    assert len(set(female + male)) == 100
    assert sample_voice(np.random.default_rng(7), "male") == sample_voice(np.random.default_rng(7), "male")
    with pytest.raises(ValueError):
        sample_voice(rng, "robot")


def test_sample_style() -> None:
    emotions = tuple(PROTOTYPES)
    cfg = StyleConfig()
    a = sample_style(np.random.default_rng(1), emotions, cfg)
    b = sample_style(np.random.default_rng(2), emotions, cfg)
    assert set(a) == set(emotions)
    assert np.array_equal(a["neutral"], np.zeros(len(DIMS)))
    assert np.array_equal(b["neutral"], np.zeros(len(DIMS)))
    for e in emotions:
        assert a[e].shape == (len(DIMS),)
        if e != "neutral":
            assert np.linalg.norm(a[e] - b[e]) > 0.1, e
            assert np.linalg.norm(a[e]) > 0
    again = sample_style(np.random.default_rng(1), emotions, cfg)
    assert all(np.array_equal(a[e], again[e]) for e in emotions)


def test_utterance_displacement_without_noise() -> None:
    cfg = StyleConfig(utterance_noise=0.0)
    style = sample_style(np.random.default_rng(3), tuple(PROTOTYPES), cfg)
    rng = np.random.default_rng(4)
    for e in ("neutral", "angry", "sad", "surprise"):
        for intensity in (0.6, 1.0, 1.4):
            assert np.allclose(utterance_displacement(rng, style, e, intensity, cfg), intensity * style[e])
    other = utterance_displacement(rng, style, "other", 1.0, cfg)
    assert any(np.allclose(other, cfg.other_mix * style[e]) for e in style if e != "neutral")
    noisy = StyleConfig(utterance_noise=0.35)
    d = [utterance_displacement(np.random.default_rng(i), style, "angry", 1.0, noisy) for i in range(2)]
    assert not np.allclose(d[0], d[1])


def test_physical_inverts_the_prototype_scale() -> None:
    assert physical(PROTOTYPES["sad"])["pitch_st"] == pytest.approx(-2.5)
    assert physical(PROTOTYPES["angry"])["volume_db"] == pytest.approx(6.0)
    assert all(v == 0 for v in physical(PROTOTYPES["neutral"]).values())


def speech_like(sr: int, seconds: float = 1.0) -> np.ndarray:
    """A loud harmonic signal with syllable-rate amplitude modulation, peaks near full scale."""
    t = np.arange(int(sr * seconds)) / sr
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return 0.95 * wave / np.abs(wave).max()


@pytest.mark.parametrize("cond", [
    Condition(snr_db=60.0, level_dbfs=-24.0),
    Condition(snr_db=60.0, level_dbfs=-20.0, tilt_db_oct=-1.5, band_hz=(70.0, 7000.0)),
    Condition(snr_db=60.0, level_dbfs=-25.0, band_hz=(50.0, 20000.0), sample_rate=48_000),
])
def test_record_rate_level_and_peak(cond: Condition) -> None:
    sr = 22050
    wave = speech_like(sr)
    out = record(wave, sr, cond, np.random.default_rng(0))
    assert out.dtype == np.float32
    assert abs(out.size - wave.size * cond.sample_rate / sr) <= 1
    assert np.abs(out).max() <= 0.99 + 1e-6
    assert abs(rms_db(out) - cond.level_dbfs) < 2.0
    louder = record(wave, sr, cond, np.random.default_rng(0), gain_db=6.0)
    assert abs(rms_db(louder) - rms_db(out) - 6.0) < 0.5


def test_record_never_clips() -> None:
    wave = speech_like(22050)
    wave[1000] = 1.0  # one spike: at -1 dBFS RMS the spike would exceed full scale
    out = record(wave, 22050, Condition(snr_db=10.0, level_dbfs=-1.0), np.random.default_rng(0))
    assert np.isfinite(out).all()
    assert np.abs(out).max() <= 0.99 + 1e-6
    assert np.abs(out).max() >= 0.98  # scaled down to the limit, not silenced


@pytest.mark.parametrize("db_per_octave", [3.0, 6.0])
def test_spectral_tilt_raises_highs(db_per_octave: float) -> None:
    sr = 16_000
    noise = np.random.default_rng(0).normal(size=sr)
    ratio = band_energy(noise, sr, 2000, 8000) / band_energy(noise, sr, 100, 500)
    up = spectral_tilt(noise, sr, db_per_octave)
    down = spectral_tilt(noise, sr, -db_per_octave)
    assert up.shape == noise.shape
    gain_db = 10 * np.log10(band_energy(up, sr, 2000, 8000) / band_energy(up, sr, 100, 500) / ratio)
    assert gain_db > 3.0 * db_per_octave  # ~4 octaves between the bands' centres
    loss_db = 10 * np.log10(band_energy(down, sr, 2000, 8000) / band_energy(down, sr, 100, 500) / ratio)
    assert loss_db < -3.0 * db_per_octave
    assert np.array_equal(spectral_tilt(noise, sr, 0.0), noise)


@pytest.mark.parametrize("colour", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", [1000, 16_001])
def test_coloured_noise_unit_rms(colour: float, n: int) -> None:
    noise = coloured_noise(np.random.default_rng(0), n, colour)
    assert noise.shape == (n,)
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-6)


def test_coloured_noise_slope() -> None:
    white = coloured_noise(np.random.default_rng(0), 16_000, 0.0)
    brown = coloured_noise(np.random.default_rng(0), 16_000, 2.0)
    def low_share(x: np.ndarray) -> float:
        return band_energy(x, 16_000, 0, 500) / band_energy(x, 16_000, 0, 8001)
    assert low_share(brown) > 5 * low_share(white)


class FakeEngine:
    """Stands in for :class:`Espeak`: records what :func:`speak` asks for."""

    sample_rate = 22050

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def set_variant(self, name: str, text: str, language: str = "en") -> None:
        self.calls.append({"variant": variant_lines(text), "language": language})

    def seed(self, seed: int) -> None:
        self.calls[-1]["seed"] = seed

    def synth(self, text: str, **params) -> np.ndarray:
        self.calls[-1].update(params, text=text)
        return (8000 * np.sin(np.arange(4410) * 0.1)).astype(np.int16)


def test_speak_maps_and_clips_the_displacement() -> None:
    voice = sample_voice(np.random.default_rng(5), "male")
    engine = FakeEngine()
    wave, gain = speak(engine, voice, np.zeros(len(DIMS)), SENTENCE, 42)  # type: ignore[arg-type]
    call = engine.calls[-1]
    assert call["language"] == voice.accent and call["seed"] == 42 and call["text"] == SENTENCE
    assert call["variant"]["pitch"] == [[str(round(voice.pitch_low_hz)), str(round(voice.pitch_high_hz))]]
    assert call["rate"] == round(voice.rate_wpm) and call["wordgap"] == 0 and gain == 0.0
    assert wave.dtype == np.float64 and wave.size == 4410
    for sign in (1.0, -1.0):
        speak(engine, voice, np.full(len(DIMS), 50.0 * sign), SENTENCE, 1)  # type: ignore[arg-type]
        call = engine.calls[-1]
        low, high = (int(x) for x in call["variant"]["pitch"][0])
        assert 50 <= low < high <= 600 and low <= 400
        assert 90 <= call["rate"] <= 350 and call["wordgap"] >= 0
        assert 0 <= int(call["variant"]["roughness"][0][0]) <= 7
        assert 0 <= int(call["variant"]["flutter"][0][0]) <= 60


# ----------------------------------------------------------------- 7. emotions are actually rendered

def render_emotions(gender: str) -> dict[str, tuple[float, float, float]]:
    from metalearn.data.synth.espeak import Espeak

    engine = Espeak()
    voice = sample_voice(np.random.default_rng(SEED), gender)
    result = {}
    try:
        for emotion in ("neutral", "surprise", "sad", "angry"):
            wave, volume_db = speak(engine, voice, PROTOTYPES[emotion], SENTENCE, 3)
            f0 = f0_track(wave, engine.sample_rate)
            assert f0.size >= 20, f"{emotion}: only {f0.size} voiced frames"
            result[emotion] = (float(np.median(f0)), wave.size / engine.sample_rate, volume_db)
    finally:
        engine.close()
    return result


@requires_fork
@pytest.mark.parametrize("gender", ["female", "male"])
def test_emotions_change_pitch_rate_and_loudness(gender: str) -> None:
    r = in_child(render_emotions, gender)
    f0 = {e: v[0] for e, v in r.items()}
    seconds = {e: v[1] for e, v in r.items()}
    assert f0["surprise"] > 1.4 * f0["sad"], f0  # prototypes: +5 vs -2.5 semitones
    assert f0["sad"] < f0["neutral"] < f0["surprise"], f0
    assert seconds["sad"] > 1.3 * seconds["angry"], seconds  # slower, with pauses between words
    for emotion, (_, _, volume_db) in r.items():
        assert volume_db == pytest.approx(physical(PROTOTYPES[emotion])["volume_db"])
    assert r["sad"][2] < 0 < r["angry"][2]


# ----------------------------------------------------------------------------- 8. the espeak driver

def drive_engine() -> dict:
    from metalearn.data.synth.espeak import Espeak

    engine = Espeak()
    home = engine.home
    existed = (home / "espeak-ng-data" / "voices" / "!v").is_dir()
    wave = engine.synth("Hello there, how are you today?", rate=175, volume=100, pitch=50, range_=50)
    engine.close()
    after = Espeak()  # a new engine: its own private copy of the library and data folder
    renewed = after.home != home
    after.close()
    return {"home": str(home), "existed": existed, "exists_after": home.exists(), "renewed": renewed,
            "renewed_removed": not after.home.exists(), "dtype": str(wave.dtype), "size": int(wave.size),
            "peak": int(np.abs(wave.astype(np.int32)).max()), "sample_rate": engine.sample_rate}


@requires_fork
def test_espeak_engine_synth_and_close() -> None:
    r = in_child(drive_engine)
    assert r["sample_rate"] == 22050
    assert r["dtype"] == "int16"
    assert 0.5 * 22050 < r["size"] < 10 * 22050
    assert r["peak"] > 1000
    home = Path(r["home"])
    assert home.parent == Path(tempfile.gettempdir()) and home.name.startswith("metalearn-espeak-")
    assert r["existed"] and not r["exists_after"]
    assert r["renewed"] and r["renewed_removed"]
