"""The audio layer: bad files are AudioErrors with a reason; good ones come out mono, 16 kHz, float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metalearn.data.audio import AudioError, ProblemReport, load_audio, read_audio
from metalearn.util.errors import MetalearnError
from tests.fixtures import tone, write_nan_wav, write_wav


def test_truncated_in_data_reads_the_frames_present(tmp_path: Path) -> None:
    # soundfile (libsndfile) reads a WAV whose data chunk is cut short up to the bytes present:
    # the header's size is not trusted, so a partly downloaded file yields fewer frames, not an error.
    full = write_wav(tmp_path / "full.wav", seconds=0.2)  # 3200 frames, 16-bit mono, 44-byte header
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:44 + 2 * 1000 + 1])
    wave, sr = read_audio(cut)
    assert sr == 16_000 and wave.shape == (1000,)
    np.testing.assert_allclose(wave, read_audio(full)[0][:1000])


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
