"""The leave-one-session-out table.md carries the papers' numbers, labelled as quoted and not run here."""

from __future__ import annotations

from metalearn.loso.paper import paper_table


def test_the_paper_row_is_labelled_and_holds_the_headline() -> None:
    intro, table, outro = paper_table()
    assert "not run here" in intro and "WavLM" in intro and outro == "This run:"
    rows = [line.strip("| ").split(" | ") for line in table.splitlines()[2:]]
    assert rows[0][:5] == ["paper", "SL-GEmo-CLAP", "WavLM (fine-tuned)", "83.16", "81.43"]
    assert "arXiv 2306.07848" in rows[0][5]
    assert {r[2]: r[3] for r in rows[1:]} == {"wav2vec2-base": "63.4", "WavLM-base": "65.9", "emotion2vec": "71.8"}
