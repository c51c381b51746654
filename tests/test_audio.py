"""The audio layer: bad files are AudioErrors with a reason; good ones come out mono, 16 kHz, float32; the
torchaudio backend, where it imports, gives what soundfile + scipy give."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metalearn.data import audio
from metalearn.data.audio import AudioError, ProblemReport, load_audio, read_audio, resample, use_torchaudio
from metalearn.util.errors import MetalearnError
from tests.fixtures import tone, write_nan_wav, write_wav


def test_truncated_in_data_reads_the_frames_present(tmp_path: Path) -> None:
    # soundfile (libsndfile) reads a WAV whose data chunk is cut short up to the bytes present:
    # the header's size is not trusted, so a partly downloaded file yields fewer frames, not an error.
    full = write_wav(tmp_path / "full.wav", seconds=0.2)  # 3200 frames, 16-bit mono, 44-byte header
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:44 + 2 * 1000 + 1])
    wave, sr = read_audio(cut, backend="soundfile")
    assert sr == 16_000 and wave.shape == (1000,)
    np.testing.assert_allclose(wave, read_audio(full, backend="soundfile")[0][:1000])


def test_truncated_in_header_is_unreadable(tmp_path: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes(write_wav(tmp_path / "full.wav").read_bytes()[:30])
    with pytest.raises(AudioError, match="^unreadable"):
        read_audio(cut)


def test_zero_byte_file_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="^unreadable"):
        read_audio(tmp_path / "zero.wav")


def test_header_with_zero_frames_is_empty(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "empty.wav", data=np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="^empty"):
        read_audio(path)


def test_nan_samples_are_non_finite(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="^non-finite"):
        read_audio(write_nan_wav(tmp_path / "nan.wav"))


def test_all_zero_audio_is_silent(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silent.wav", data=np.zeros(1600, dtype=np.float32))
    with pytest.raises(AudioError, match="^silent"):
        read_audio(path)


def test_pcm_u8_loads_in_unit_range(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "u8.wav", subtype="PCM_U8", data=tone(0.1) / 0.3 * 0.99)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.shape == (1600,)
    assert -1.0 <= wave.min() < -0.9 and 0.9 < wave.max() <= 1.0


def test_stereo_48k_is_downmixed_and_resampled(tmp_path: Path) -> None:
    stereo = tone(0.3, sr=48_000, channels=2)  # right channel = 2 x left
    path = write_wav(tmp_path / "st.wav", sr=48_000, subtype="FLOAT", data=stereo)
    wave, sr = read_audio(path)
    assert sr == 48_000
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-7)
    out = load_audio(path)
    assert out.ndim == 1 and out.dtype == np.float32
    assert abs(out.shape[0] - 0.3 * 16_000) <= 1


@pytest.mark.parametrize(("suffix", "fmt", "subtype"),
                         [(".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS")])
def test_flac_and_ogg_load(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    path = write_wav(tmp_path / f"a{suffix}", seconds=0.2, sr=22_050, fmt=fmt, subtype=subtype)
    wave = load_audio(path)
    assert abs(wave.shape[0] - 3200) <= 1 and 0.1 < np.abs(wave).max() < 0.5


def test_crop_and_pad(tmp_path: Path) -> None:
    short = write_wav(tmp_path / "short.wav", seconds=0.2)
    long = write_wav(tmp_path / "long.wav", seconds=0.8)
    assert load_audio(short, max_seconds=0.5, pad=True).shape == (8000,)
    padded = load_audio(short, max_seconds=0.5, pad=True)
    assert not padded[3200:].any()
    assert load_audio(short, max_seconds=0.5).shape == (3200,)
    assert load_audio(long, max_seconds=0.5).shape == (8000,)
    assert load_audio(long, max_seconds=0.5, pad=True).shape == (8000,)


def test_resample_keeps_frequency(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "sine.wav", seconds=0.5, sr=44_100, freq=1000.0, subtype="FLOAT")
    wave = load_audio(path)
    assert abs(wave.shape[0] - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    peak_hz = np.argmax(spectrum) * 16_000 / wave.shape[0]
    assert abs(peak_hz - 1000.0) <= 16_000 / wave.shape[0]


def test_problem_report_strict_raises_naming_the_file(tmp_path: Path) -> None:
    report = ProblemReport(strict=True)
    with pytest.raises(MetalearnError, match="bad.wav: silent"):
        report.add(tmp_path / "bad.wav", "silent (peak below 1e-4)")


def test_problem_report_collects_summarises_and_writes(tmp_path: Path) -> None:
    report = ProblemReport(max_warnings=1)
    report.add("a.wav", "silent (peak below 1e-4)")
    report.add("b.wav", "silent (peak below 1e-4)")
    report.add("c.wav", "unreadable (Format not recognised.)")
    assert len(report) == 3
    assert report.summary() == "3 problems: 2 silent, 1 unreadable"
    assert ProblemReport().summary() == "0 problems"
    report.write(tmp_path / "p.tsv")
    lines = (tmp_path / "p.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path\treason"
    assert lines[1:] == ["a.wav\tsilent (peak below 1e-4)", "b.wav\tsilent (peak below 1e-4)",
                         "c.wav\tunreadable (Format not recognised.)"]


# --- backends ------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_unknown_backend_is_a_one_line_error(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav")
    for call in (lambda: load_audio(path, backend="sox"), lambda: resample(tone(), 16_000, 16_000, "sox"),
                 lambda: read_audio(path, backend="sox")):
        with pytest.raises(MetalearnError, match="audio backend 'sox': expected one of auto, soundfile, torchaudio$"):
            call()


def test_auto_reads_and_resamples_without_loading_torch(tmp_path: Path) -> None:
    # the light commands (manifest) read audio: auto must not import torch or torchaudio for them
    path = write_wav(tmp_path / "a.wav", seconds=0.2, sr=44_100)
    script = ("import sys\n"
              "from metalearn.data.audio import load_audio, use_torchaudio\n"
              f"wave = load_audio({str(path)!r})\n"
              "assert wave.shape == (3200,) and not use_torchaudio('auto')\n"
              "print(sorted(m for m in ('torch', 'torchaudio') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_where_torchaudio_fails_auto_falls_back_saying_why_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    import torch  # noqa: F401  (auto considers torchaudio only once torch is loaded)

    why = "torchaudio does not import: OSError: libc10_cuda.so: cannot open shared object file"
    monkeypatch.setattr(audio, "_torchaudio", lambda: (None, why))
    monkeypatch.setattr(audio, "_said", set())
    path = write_wav(tmp_path / "a.wav", seconds=0.2, sr=22_050)
    with caplog.at_level(logging.INFO, logger="metalearn.data.audio"):
        np.testing.assert_array_equal(load_audio(path), load_audio(path, backend="soundfile"))
        load_audio(path)
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"audio backend auto: soundfile and scipy ({why})"]
    with pytest.raises(MetalearnError) as err:
        load_audio(path, backend="torchaudio")
    assert "\n" not in str(err.value) and str(err.value).startswith(f"audio backend 'torchaudio': {why}")


def _torchaudio_or_skip() -> None:
    module, why = audio._torchaudio()
    if module is None:
        pytest.skip(f"the torchaudio backend is not available here: {why}")


@pytest.mark.parametrize("sr", [8_000, 11_025, 22_050, 24_000, 44_100, 48_000])
def test_torchaudio_resampling_equals_scipy(sr: int) -> None:
    _torchaudio_or_skip()
    rng = np.random.default_rng(sr)
    wave = np.clip(rng.normal(scale=0.3, size=sr // 2), -1, 1).astype(np.float32)  # white: every frequency
    ours, theirs = resample(wave, sr, 16_000, "torchaudio"), resample(wave, sr, 16_000, "soundfile")
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape == (8_000,)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("sr", "channels", "subtype"), [(44_100, 2, "PCM_16"), (48_000, 1, "FLOAT"),
                                                         (16_000, 1, "PCM_16"), (8_000, 1, "PCM_24")])
def test_torchaudio_backend_loads_what_soundfile_loads(tmp_path: Path, sr: int, channels: int,
                                                       subtype: str) -> None:
    _torchaudio_or_skip()
    path = write_wav(tmp_path / "a.wav", seconds=0.4, sr=sr, channels=channels, subtype=subtype, freq=440.0)
    ours, theirs = load_audio(path, backend="torchaudio"), load_audio(path, backend="soundfile")
    assert ours.shape == theirs.shape == (6_400,)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert use_torchaudio("auto")  # torch is loaded here, torchaudio imports: auto takes it
