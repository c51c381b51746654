"""GEmo-CLAP's leave-one-session-out protocol over features: folds, zero-shot scores, the paper's table."""

from __future__ import annotations

import pytest
import torch

from metalearn.backbones import BackboneConfig, build_backbone
from metalearn.errors import MetalearnError
from metalearn.manifest import Utterance
from metalearn.pretune.clap_loso import IEMOCAP4, LosoConfig, loso_table, run_loso, session


def corpus(sessions: int = 2, per: int = 6, dim: int = 16) -> tuple[list[Utterance], torch.Tensor]:
    """Utterances of every session x gender x class (plus 'frustrated', dropped), features = a class direction."""
    gen = torch.Generator().manual_seed(0)
    rows, x = [], []
    for s in range(1, sessions + 1):
        for g, gender in (("F", "female"), ("M", "male")):
            for c, emotion in enumerate((*IEMOCAP4, "frustrated")):
                for i in range(per):
                    rows.append(Utterance(f"Ses0{s}{g}_{emotion}_{i}", f"/x/{s}{g}{c}{i}.wav", "iemocap",
                                          f"Ses0{s}{g}", gender, emotion, emotion, "", 2.0, 16000))
                    x.append(torch.randn(dim, generator=gen) * 0.3 + 3.0 * torch.eye(dim)[c])
    return rows, torch.stack(x)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(BackboneConfig(family="whisper", source="tiny"))


def test_one_record_per_variant_and_session(backbone) -> None:
    rows, x = corpus(dim=backbone.hidden_size)
    cfg = LosoConfig(steps=40, eval_every=20, batch_size=16, text_source="tiny", embed_dim=8, lr=1e-2)
    records = run_loso(rows, x, cfg, backbone)
    assert [(r["variant"], r["session"]) for r in records] == [(v, f"Ses0{s}") for v in ("emo", "ml", "sl")
                                                               for s in (1, 2)]
    assert {r["n_test"] for r in records} == {2 * 4 * 6}  # the held-out session, 'frustrated' dropped
    assert all(0 <= r["wa"] <= 1 and 0 <= r["ua"] <= 1 and r["best_step"] in (20, 40) for r in records)
    assert max(r["ua"] for r in records) > 0.5  # separable classes are learnt (chance 0.25)
    table = loso_table(records).splitlines()
    assert table[0].startswith("| method | Ses01 WA | Ses01 UA |") and table[0].endswith("| mean WA | mean UA |")
    assert [line.split(" | ")[0] for line in table[2:]] == ["| Emo-CLAP", "| ML-GEmo-CLAP", "| SL-GEmo-CLAP"]


def test_sessions_come_from_iemocap_speakers() -> None:
    rows, _ = corpus(1, 1)
    assert session(rows[0]) == "Ses01"
    bad = Utterance("u", "/x/u.wav", "esd", "0011", "male", "sad", "Sad", "", 1.0, 16000)
    with pytest.raises(MetalearnError, match="speaker '0011' does not name an IEMOCAP session"):
        session(bad)


def test_one_session_is_refused(backbone) -> None:
    rows, x = corpus(1, 2, backbone.hidden_size)
    with pytest.raises(MetalearnError, match="needs >= 2 sessions"):
        run_loso(rows, x, LosoConfig(text_source="tiny"), backbone)
