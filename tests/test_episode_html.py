"""The episode page: one self-contained HTML file, a player per support and query clip, every method's
prediction per query with the wrong ones marked, the matrices and the picture; rendered by Chromium (slow)."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from metalearn.data.audio import AudioError, load_audio
from metalearn.data.manifest import utterance_key
from metalearn.demo.episode import DemoSettings, run_episode_demo
from metalearn.demo.page import CLIP_SECONDS, clip_sources, episode_page, write_episode_page
from metalearn.demo.plot import plot_episode
from metalearn.demo.result import EpisodeResult
from tests.fixtures import write_wav
from tests.test_episode_demo import make_data

METHODS = ["majority", "simpleshot", "maml"]  # majority answers one class: wrong predictions to mark
LONG = 5.0  # seconds of one query clip: the page keeps CLIP_SECONDS of it


class PageParser(HTMLParser):
    """Collects the audio sources, the prediction cells (attributes and text), images, and every URL-bearing
    attribute and tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[str] = []
        self.images: list[str] = []
        self.cells: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tags: Counter[str] = Counter()
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags[tag] += 1
        self.urls += [v for k, v in a.items() if k in ("src", "href", "action", "poster", "srcset")]
        if tag == "audio":
            self.audio.append(a.get("src", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "td" and "data-method" in a:
            self._cell = {**a, "text": ""}
            self.cells.append(self._cell)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None


@pytest.fixture(scope="module")
def episode(tmp_path_factory: pytest.TempPathFactory) -> EpisodeResult:
    """Speaker 0012's 4-way 3-shot episode over tones written as WAV files (its first query clip 5 s long)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows, x = make_data()
    folder = tmp_path_factory.mktemp("clips")
    long = next(i for i, u in enumerate(rows) if u.speaker == "0012" and u.split == "test")  # every test clip
    for i, u in enumerate(rows):                                                                # is a query
        if u.speaker == "0012" and u.split in ("train", "test"):
            seconds = LONG if i == long else 0.3
            path = write_wav(folder / f"{u.utterance_id}.wav", seconds=seconds, sr=22_050, freq=200.0 + 7 * i)
            rows[i] = dataclasses.replace(rows[i], path=str(path))
    result = run_episode_demo(x, rows, "0012", METHODS, DemoSettings(3, queries=None, meta_steps=2, seed=0))
    torch.set_num_threads(threads)
    return result


@pytest.fixture(scope="module")
def page(episode: EpisodeResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("page")
    picture = plot_episode(episode, folder / "episode.png")
    path = write_episode_page(episode, folder / "episode.html", picture.read_bytes())
    return path, path.read_text(encoding="utf-8")


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def test_one_player_per_support_and_query_clip(episode: EpisodeResult, page: tuple[Path, str]) -> None:
    parsed = parse(page[1])
    rows = [*episode.support_rows, *episode.query_rows]
    assert len(parsed.audio) == len(episode.episode.support) + len(episode.episode.query) == len(rows) == 28
    assert all(src.startswith("data:audio/wav;base64,") for src in parsed.audio)
    waves = [sf.read(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), dtype="float32") for src in parsed.audio]
    infos = [sf.info(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) for src in parsed.audio]
    assert {(i.samplerate, i.channels, i.subtype) for i in infos} == {(16_000, 1, "PCM_16")}
    lengths = sorted(w.shape[0] for w, _ in waves)
    assert lengths[-1] == int(CLIP_SECONDS * 16_000) and lengths[:-1] == [4_800] * 27  # 5 s cropped, 0.3 s kept
    # every clip is on the page exactly once, as what load_audio gives (to 16-bit precision)
    expected = [load_audio(u.path, 16_000, CLIP_SECONDS) for u in rows]
    for wave, _ in waves:
        assert sum(w.shape == wave.shape and np.abs(w - wave).max() <= 1 / 32_768 for w in expected) == 1


def test_every_prediction_is_shown_and_the_wrong_ones_marked(episode: EpisodeResult,
                                                             page: tuple[Path, str]) -> None:
    cells, classes = parse(page[1]).cells, episode.episode.classes
    assert len(cells) == len(METHODS) * len(episode.episode.query)
    assert sum(a.total - a.correct for a in episode.algorithms.values()) > 0  # something to mark
    for name, a in episode.algorithms.items():
        mine = [c for c in cells if c["data-method"] == name]
        assert [c["data-pred"] for c in mine] == [classes[int(p)] for p in a.predictions]
        wrong = [c for c in mine if c["data-correct"] == "0"]
        assert len(wrong) == a.total - a.correct
        assert all(c["class"] == "wrong" and c["text"].startswith("\u2717") for c in wrong)
        assert all(c["class"] == "ok" and c["text"].startswith("\u2713") for c in mine if c not in wrong)
        assert f"<b>{name}</b> ({a.correct} / {a.total})" in page[1]  # its confusion matrix


def test_transcripts_labels_and_picture_are_on_the_page(episode: EpisodeResult, page: tuple[Path, str]) -> None:
    text, parsed = page[1], parse(page[1])
    assert all(u.text in text and u.utterance_id in text for u in [*episode.support_rows, *episode.query_rows])
    assert all(f">{c}</span>" in text for c in episode.episode.classes)
    assert len(parsed.images) == 1 and parsed.images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(parsed.images[0].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert text.count('<table class="support">') == 1 and text.count("true \\ predicted") == len(METHODS)


def test_the_page_needs_nothing_outside_it(page: tuple[Path, str]) -> None:
    text, parsed = page[1], parse(page[1])
    assert parsed.urls and all(url.startswith("data:") for url in parsed.urls)
    assert not re.search(r"(https?|ftp):|//[\w.-]+\.\w+/|url\(|@import", text)
    assert not {"script", "link", "iframe", "object", "embed", "source"} & set(parsed.tags)
    assert 100_000 < page[0].stat().st_size < 1_000_000  # 27 x 0.3 s + 4 s of 16-bit audio and a PNG


def test_an_unreadable_clip_says_why_instead_of_a_player(episode: EpisodeResult, tmp_path: Path) -> None:
    silent = write_wav(tmp_path / "silent.wav", data=np.zeros(1600, dtype=np.float32))
    rows = [dataclasses.replace(episode.query_rows[0], path=str(silent)), *episode.query_rows[1:]]
    clips = clip_sources([*episode.support_rows, *rows])
    assert isinstance(clips[utterance_key(rows[0])], AudioError)
    text = episode_page(episode, None, clips)
    assert len(parse(text).audio) == 27 and "no audio: silent (peak below 1e-4)" in text
    assert "<img" not in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1280,2400"]


def screenshot(html: Path, png: Path, profile: Path) -> None:
    """Render ``html`` in headless Chromium to the 1280 x 2400 PNG ``png``."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_chromium_renders_players_predictions_and_picture(page: tuple[Path, str], tmp_path: Path) -> None:
    import matplotlib.image

    png = tmp_path / "page.png"
    screenshot(page[0], png, tmp_path / "profile")
    image = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)        # [2400, 1280, 3]
    assert image.shape == (2400, 1280, 3)
    colours = Counter(map(tuple, image.reshape(-1, 3)))
    assert colours[(251, 218, 218)] > 1_000 and colours[(230, 244, 230)] > 1_000  # wrong and right cells
    assert len(colours) > 2_000  # the picture and the players, not a blank or error page
