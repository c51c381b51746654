"""The episode as one self-contained HTML page for students: hear every clip, see every prediction.

Nothing on the page comes from elsewhere (no network, no other file): each support and query clip is a WAV data
URI (16 kHz, mono, 16-bit PCM, its first ``CLIP_SECONDS`` seconds), the picture a PNG data URI, the style inline.
A clip that cannot be read shows its reason instead of a player. Wrong predictions are marked with a cross and
a red cell; every prediction cell carries ``data-method``, ``data-pred`` and ``data-correct`` for tools and tests.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

import numpy as np
import soundfile as sf

from metalearn.data.audio import AudioError, load_audio
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.demo.methods import method_line
from metalearn.demo.plot import class_colour
from metalearn.demo.result import EpisodeResult, setup_lines
from metalearn.util.fileio import write_atomic

CLIP_SECONDS = 4.0  # the page keeps this much of each clip (the demo's sentences last 2-4 s)
CLIP_RATE = 16_000

STYLE = """
body { font-family: system-ui, sans-serif; margin: 20px auto; max-width: 1240px; color: #222; }
h1 { font-size: 1.5em; margin: 0 0 6px; } h2 { font-size: 1.2em; margin: 26px 0 6px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 6px 0; } td, th { border: 1px solid #ddd; padding: 3px 7px; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; }
audio { height: 32px; width: 100%; min-width: 260px; vertical-align: middle; }
.feature { background: #eef4fb; border-left: 4px solid #1f77b4; padding: 6px 10px; }
figure { margin: 8px 0; } figure img { width: 100%; max-width: 1210px; } td.what { color: #333; max-width: 640px; }
.emo { padding: 1px 7px; border-radius: 8px; color: #111; white-space: nowrap; }
td.ok { background: #e6f4e6; } td.wrong { background: #fbdada; font-weight: bold; color: #a00; }
td.diag { background: #cfe9cf; } td.off { background: #f7d4d4; } .missing { color: #a00; font-size: 0.9em; }
.matrices { display: flex; flex-wrap: wrap; gap: 24px; } .note { color: #555; font-size: 0.92em; }
.small { color: #555; font-size: 0.85em; } table.support { width: 100%; table-layout: fixed; }
table.support td { vertical-align: top; } table.support audio { min-width: 0; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def wav_data_uri(wave: np.ndarray, sample_rate: int = CLIP_RATE) -> str:
    """``data:audio/wav;base64,...`` of ``wave`` [T] (floats, clipped to [-1, 1]) as 16-bit PCM mono WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def clip_sources(rows: Sequence[Utterance], seconds: float = CLIP_SECONDS,
                 backend: str = "auto") -> dict[str, str | AudioError]:
    """Utterance key -> the data URI of its first ``seconds`` at 16 kHz, or the AudioError saying why not."""
    clips: dict[str, str | AudioError] = {}
    for u in rows:
        try:
            clips[utterance_key(u)] = wav_data_uri(load_audio(u.path, CLIP_RATE, seconds, backend=backend))
        except AudioError as e:
            clips[utterance_key(u)] = e
    return clips


def write_episode_page(result: EpisodeResult, path: str | os.PathLike, picture_png: bytes | None,
                       seconds: float = CLIP_SECONDS, backend: str = "auto") -> Path:
    """Write :func:`episode_page` of ``result`` (its clips read from their paths) to ``path``; returns ``path``."""
    clips = clip_sources([*result.support_rows, *result.query_rows], seconds, backend)
    write_atomic(path, episode_page(result, picture_png, clips, seconds))
    return Path(path)


def episode_page(result: EpisodeResult, picture_png: bytes | None, clips: Mapping[str, str | AudioError],
                 seconds: float = CLIP_SECONDS) -> str:
    """The page as HTML text: summary (with the feature read and why), accuracies with a line on each method,
    the picture at full width, the support clips by emotion, the queries with every method's prediction, the
    confusion matrices."""
    e = result.episode
    title = f"Speaker {e.speaker}: {len(e.classes)}-way {e.k}-shot episode"
    picture = ""
    if picture_png:
        src = "data:image/png;base64," + base64.b64encode(picture_png).decode("ascii")
        picture = ("<h2>The episode in two dimensions</h2><figure>"
                   f'<img alt="the support and query clips of the episode in 2-D" src="{src}"></figure>')
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>{_introduction(result, seconds)}{_accuracy_table(result)}{picture}",
             f"<h2>Support set: the {len(e.support)} clips the methods learn from, by emotion</h2>",
             _support_table(result, clips),
             f"<h2>Query set: the {len(e.query)} clips they must label</h2>", _query_table(result, clips),
             "<h2>Confusion matrices</h2>", _confusions(result), "</body></html>\n"]
    return "\n".join(parts)


def _introduction(result: EpisodeResult, seconds: float) -> str:
    """What the student is looking at, in a few sentences, and what was done before the support set was seen."""
    e = result.episode
    setup = "".join(f"<li>{escape(line)}</li>" for line in setup_lines(result, with_feature=False))
    return (f'<p>Every speaker is a new task. The methods get <b>{e.k} clips of each emotion</b> '
            f"({', '.join(_chip(c, i) for i, c in enumerate(e.classes))}) from speaker {escape(e.speaker)}'s "
            "training recordings (the support set) and must name the emotion of every clip of the speaker's test "
            "recordings (the query set). Listen to both: can you hear what they rely on?</p>"
            f"{_feature(result)}"
            f'<p class="note">Episode {escape(e.episode_id)}, seed {e.seed}. Before the support set was seen: '
            f'</p><ul class="note">{setup}</ul>'
            f'<p class="note">Each player holds the first {seconds:g} s of its clip (16 kHz mono). '
            "A red cell with a cross is a wrong prediction.</p>")


def _feature(result: EpisodeResult) -> str:
    """Which hidden state of the backbone every method reads, and why that one."""
    f = result.feature
    if f is None:
        return '<p class="feature">Features: not stated (the episode was built without a layer choice).</p>'
    return (f'<p class="feature"><b>Features: {escape(f.name)}</b> of the backbone, mean-pooled over the clip, '
            f"for every method. Why this one: {escape(f.reason)}.</p>")


def _accuracy_table(result: EpisodeResult) -> str:
    rows = "".join(f'<tr><td>{escape(a.name)}</td><td class="num">{a.accuracy:.1%}</td>'
                   f'<td class="num">{a.correct} / {a.total}</td><td class="num">{a.meta_steps}</td>'
                   f'<td class="num">{a.seconds:.1f}</td><td class="what">{escape(method_line(a.name))}</td></tr>'
                   for a in result.algorithms.values())
    return ("<h2>Accuracy on the query set</h2><table><tr><th>method</th><th>accuracy</th><th>correct</th>"
            f"<th>meta-training steps</th><th>seconds</th><th>what it does</th></tr>{rows}</table>")


def _support_table(result: EpisodeResult, clips: Mapping[str, str | AudioError]) -> str:
    """A column per emotion, the k clips of each under it: player, transcript, utterance id."""
    classes, labels = result.episode.classes, result.episode.support_labels
    columns = [[u for u, y in zip(result.support_rows, labels, strict=True) if y == c] for c in range(len(classes))]
    head = "".join(f"<th>{_chip(c, i)}</th>" for i, c in enumerate(classes))
    rows = []
    for r in range(max(len(col) for col in columns)):
        cells = [f"<td>{_player(clips, col[r])}<br>{escape(col[r].text)}<br>"
                 f'<span class="small">{escape(col[r].utterance_id)}</span></td>' if r < len(col) else "<td></td>"
                 for col in columns]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="support"><tr>{head}</tr>{"".join(rows)}</table>'


def _query_table(result: EpisodeResult, clips: Mapping[str, str | AudioError]) -> str:
    """One row per query: player, true emotion, transcript, then each method's prediction (wrong ones marked)."""
    classes, algorithms = result.episode.classes, list(result.algorithms.values())
    head = "".join(f"<th>{escape(a.name)}</th>" for a in algorithms)
    rows = []
    for i, (u, y) in enumerate(zip(result.query_rows, result.episode.query_labels, strict=True)):
        cells = []
        for a in algorithms:
            p = int(a.predictions[i])
            mark, kind = ("&#10003;", "ok") if p == y else ("&#10007;", "wrong")
            cells.append(f'<td class="{kind}" data-method="{escape(a.name)}" data-pred="{escape(classes[p])}" '
                         f'data-correct="{int(p == y)}">{mark} {escape(classes[p])}</td>')
        rows.append(f"<tr><td>{_player(clips, u)}</td><td>{_chip(classes[y], y)}</td><td>{escape(u.text)}</td>"
                    f"<td>{escape(u.utterance_id)}</td>{''.join(cells)}</tr>")
    total = "".join(f'<td class="num">{a.correct} / {a.total}</td>' for a in algorithms)
    return (f"<table><tr><th>clip</th><th>true emotion</th><th>transcript</th><th>utterance</th>{head}</tr>"
            f'{"".join(rows)}<tr><th colspan="4">correct</th>{total}</tr></table>')


def _confusions(result: EpisodeResult) -> str:
    """A matrix per method: rows the true emotion, columns the predicted one; diagonal green, errors red."""
    classes, tables = result.episode.classes, []
    head = "".join(f"<th>{escape(c)}</th>" for c in classes)
    for a in result.algorithms.values():
        rows = "".join(
            f"<tr><th>{escape(c)}</th>" + "".join(
                f'<td class="num{" diag" if t == p else " off" if int(a.confusion[t, p]) else ""}">'
                f"{int(a.confusion[t, p])}</td>" for p in range(len(classes))) + "</tr>"
            for t, c in enumerate(classes))
        tables.append(f"<div><b>{escape(a.name)}</b> ({a.correct} / {a.total})<table><tr><th>true \\ predicted"
                      f"</th>{head}</tr>{rows}</table></div>")
    return f'<div class="matrices">{"".join(tables)}</div>'


def _player(clips: Mapping[str, str | AudioError], u: Utterance) -> str:
    source = clips.get(utterance_key(u), AudioError("not read"))
    if isinstance(source, AudioError):
        return f'<span class="missing">no audio: {escape(str(source))}</span>'
    return f'<audio controls preload="metadata" src="{source}"></audio>'


def _chip(label: str, c: int) -> str:
    """``label`` on a pale version of class ``c``'s colour in the picture."""
    r, g, b = (int(255 * (0.55 + 0.45 * v)) for v in class_colour(c)[:3])
    return f'<span class="emo" style="background:#{r:02x}{g:02x}{b:02x}">{escape(label)}</span>'
