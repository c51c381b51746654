"""CTranslate2 ``WhisperSpec`` variables -> transformers ``WhisperForConditionalGeneration``.

CTranslate2 fuses the attention projections (``self_attention/linear_0`` = q, k, v stacked on the
output axis; cross-attention ``attention/linear_0`` = q, ``linear_1`` = k, v) and stores a zero bias for
k, which Whisper does not have; the output projection is an alias of the token embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch

from metalearn.features.backbones.ct2_format import dequantize
from metalearn.util.errors import MetalearnError

# Scalar flags of CTranslate2's Whisper decoder and the values transformers' Whisper implements.
_FLAGS = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0, "decoder/activation": 3}


class _Taker:
    """Hands out CTranslate2 variables as float32 tensors and remembers which ones were used."""

    def __init__(self, variables: Mapping[str, np.ndarray]) -> None:
        self.variables, self.used = variables, set()

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.variables:
            raise MetalearnError(f"the CTranslate2 Whisper model lacks the variable {name}")
        self.used.add(name)
        return torch.from_numpy(np.array(self.variables[name], dtype=np.float32))


def _linear(sd: dict, take: _Taker, hf: str, ct: str) -> None:
    sd[f"{hf}.weight"], sd[f"{hf}.bias"] = take(f"{ct}/weight"), take(f"{ct}/bias")


def _norm(sd: dict, take: _Taker, hf: str, ct: str) -> None:
    sd[f"{hf}.weight"], sd[f"{hf}.bias"] = take(f"{ct}/gamma"), take(f"{ct}/beta")


def _fused(sd: dict, take: _Taker, hf: str, ct: str, names: tuple[str, ...]) -> None:
    """Split a fused projection [len(names) * d, d] into ``names``; ``k_proj`` has no bias in Whisper."""
    weight, bias = take(f"{ct}/weight"), take(f"{ct}/bias")
    if weight.shape[0] % len(names):
        raise MetalearnError(f"{ct}/weight has {weight.shape[0]} rows, not a multiple of {len(names)}")
    for name, w, b in zip(names, weight.chunk(len(names)), bias.chunk(len(names)), strict=True):
        sd[f"{hf}.{name}.weight"] = w.contiguous()
        if name != "k_proj":
            sd[f"{hf}.{name}.bias"] = b.contiguous()
        elif b.abs().max() > 0:
            raise MetalearnError(f"{ct}/bias has a non-zero key bias, which Whisper does not have")


def _layer(sd: dict, take: _Taker, hf: str, ct: str, cross: bool) -> None:
    _fused(sd, take, f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
    _linear(sd, take, f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
    _norm(sd, take, f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
    if cross:
        _linear(sd, take, f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
        _fused(sd, take, f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
        _linear(sd, take, f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        _norm(sd, take, f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
    _linear(sd, take, f"{hf}.fc1", f"{ct}/ffn/linear_0")
    _linear(sd, take, f"{hf}.fc2", f"{ct}/ffn/linear_1")
    _norm(sd, take, f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")


def _n_layers(variables: Mapping[str, np.ndarray], side: str) -> int:
    found = {int(m.group(1)) for k in variables if (m := re.match(rf"{side}/layer_(\d+)/", k))}
    if found != set(range(len(found))):
        raise MetalearnError(f"CTranslate2 {side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _token_ids(config: Mapping, special_tokens: Mapping[str, int] | None, vocab_size: int) -> dict:
    """Special token ids and generation settings from the tokens' texts (or Whisper's layout)."""
    tokens = dict(special_tokens or {})
    eot = tokens.get("<|endoftext|>", (config.get("suppress_ids_begin") or [0, vocab_size - 1608])[-1])
    sot = tokens.get("<|startoftranscript|>", eot + 1)
    ids = {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot, "decoder_start_token_id": sot}
    gen = dict(ids, suppress_tokens=list(config.get("suppress_ids", [])),
               begin_suppress_tokens=list(config.get("suppress_ids_begin", [220, eot])),
               is_multilingual=vocab_size >= 51865, max_initial_timestamp_index=50, return_timestamps=False)
    if config.get("alignment_heads"):
        gen["alignment_heads"] = [list(h) for h in config["alignment_heads"]]
    if "<|notimestamps|>" in tokens:
        gen["no_timestamps_token_id"] = tokens["<|notimestamps|>"]
    if "<|startofprev|>" in tokens:
        gen["prev_sot_token_id"] = tokens["<|startofprev|>"]
    if "<|translate|>" in tokens and "<|transcribe|>" in tokens:
        gen["task_to_id"] = {"translate": tokens["<|translate|>"], "transcribe": tokens["<|transcribe|>"]}
        if gen["is_multilingual"]:
            gen["lang_to_id"] = {t: i for t, i in tokens.items() if sot < i < tokens["<|translate|>"]}
    return {"config": ids, "generation": gen}


def whisper_state_dict(variables: Mapping[str, np.ndarray], config: Mapping,
                       special_tokens: Mapping[str, int] | None = None) -> tuple:
    """Map CTranslate2 Whisper variables onto ``WhisperForConditionalGeneration`` parameter names.

    Args:
        variables: from :func:`read_ct2` (int8/int16 weights with scales are dequantised).
        config: CTranslate2's ``config.json`` (suppress ids, alignment heads), may be empty.
        special_tokens: token text -> id for the ``<|...|>`` tokens (tokenizer.json or vocabulary).

    Returns:
        (transformers.WhisperConfig, {parameter name: float32 tensor}); a tied output projection
        (``proj_out.weight``, CTranslate2's alias of the embeddings) is not listed separately.
    """
    from transformers import WhisperConfig

    variables = dequantize(dict(variables))
    for flag, value in _FLAGS.items():
        if flag in variables and int(variables[flag]) != value:
            raise MetalearnError(f"CTranslate2 flag {flag}={int(variables[flag])}, Whisper needs {value}")
    take, sd = _Taker(variables), {}
    for conv in ("conv1", "conv2"):
        _linear(sd, take, f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    n_enc, n_dec = _n_layers(variables, "encoder"), _n_layers(variables, "decoder")
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            _layer(sd, take, f"model.{side}.layers.{i}", f"{side}/layer_{i}", cross=side == "decoder")
        _norm(sd, take, f"model.{side}.layer_norm", f"{side}/layer_norm")
    projection = take("decoder/projection/weight")
    tied = torch.equal(projection, sd["model.decoder.embed_tokens.weight"])
    if not tied:
        sd["proj_out.weight"] = projection
    if "decoder/projection/bias" in variables and take("decoder/projection/bias").abs().max() > 0:
        raise MetalearnError("decoder/projection/bias is non-zero; Whisper's output projection has no bias")
    unused = sorted(k for k, v in variables.items() if k not in take.used and np.ndim(v) > 0)
    if unused:
        raise MetalearnError(f"unexpected CTranslate2 Whisper variables: {', '.join(unused[:5])}")
    d_model, n_mels = sd["model.encoder.conv1.weight"].shape[:2]
    vocab_size = sd["model.decoder.embed_tokens.weight"].shape[0]
    tokens = _token_ids(config, special_tokens, vocab_size)

    def heads(side: str) -> int:
        return int(variables[f"{side}/num_heads"]) if f"{side}/num_heads" in variables else d_model // 64

    hf_config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=heads("encoder"), decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0] if n_enc else 4 * d_model,
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0] if n_dec else 4 * d_model,
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=tied,
        suppress_tokens=None, begin_suppress_tokens=None, **tokens["config"])
    return hf_config, sd


def generation_config(hf_config, config: Mapping, special_tokens: Mapping[str, int] | None = None):
    """The ``GenerationConfig`` Whisper's ``generate`` needs (task/language ids, timestamp token, ...)."""
    from transformers import GenerationConfig

    settings = _token_ids(config, special_tokens, hf_config.vocab_size)["generation"]
    return GenerationConfig(max_length=hf_config.max_target_positions, **settings)


def build_model(hf_config, state: Mapping[str, torch.Tensor]):
    """A ``WhisperForConditionalGeneration`` holding ``state``; every parameter is assigned exactly once."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(hf_config).eval()
    params = dict(model.named_parameters())
    missing, unexpected = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise MetalearnError(f"Whisper import mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, param in params.items():
            if tuple(param.shape) != tuple(state[name].shape):
                raise MetalearnError(f"{name}: shape {tuple(state[name].shape)}, model {tuple(param.shape)}")
            param.copy_(state[name])
    return model

