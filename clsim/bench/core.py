"""The bench's registry: every measure's goal, what one pass measures together, a result line,
and what the bench runs on."""
from __future__ import annotations

from dataclasses import dataclass, field

from clsim.config import Scenario

# name -> (comparison, goal, what it measures)
GOALS: dict[str, tuple[str, float, str]] = {
    "avalanche_vs_plain_loop": (">=", 0.95, "plain PyTorch loop time / clsim strategy loop time, same batches"),
    "dynamic_vs_fixed_padding": (">=", 1.6, "train time padded to max_length / dynamic padding"),
    "grouped_dynamic_vs_fixed_padding": (">=", 1.6, "the same with train.group_by_length: true"),
    "bf16_vs_fp32": (">=", 1.5, "fp32 train time / bf16 autocast train time"),
    "bf16_acc_drop_points": ("<", 1.0, "final accuracy fp32 − bf16, in points"),
    "head_cached_vs_recompute": (">=", 5.0, "head fine-tuning (train + eval) recomputing features / cached"),
    "eval_kept_bottom_vs_full": (">=", 1.2, "evaluation, partial fine-tuning: full forward / frozen bottom kept"),
    "ewc_trainable_vs_all_anchors": (">=", 1.15, "EWC training time over 6 topics, anchors on every parameter / trainable ones"),
    "flower_overhead": ("<=", 0.15, "(round wall − slowest client's training) / round wall, 4 clients"),
    "lora_vs_full_bytes": ("<=", 0.02, "bytes per round with lora / with full fine-tuning"),
    "online_serve_vs_train": ("<=", 0.5, "online protocol: serving time / online-step training time, per arrival"),
    "flower_scale_overhead_100": ("<=", 0.15, "(round wall − clients' training / workers) / round wall, 100 clients"),
    "flower_scale_wall_1000_vs_100": ("<=", 1.2, "round wall time, 1,000 clients / 100 clients (10 sampled a round)"),
    "flower_scale_peak_gb_1000": ("<", 4.0, "peak memory of the 1,000-client simulation, GB (PSS, all processes)"),
}
# what one pass measures together; ``--only`` takes measure names and ``flower_scale``
GROUPS: dict[str, tuple[str, ...]] = {
    "loops": ("avalanche_vs_plain_loop", "dynamic_vs_fixed_padding", "grouped_dynamic_vs_fixed_padding",
              "bf16_vs_fp32"),
    "bf16_accuracy": ("bf16_acc_drop_points",),
    "head_cache": ("head_cached_vs_recompute",),
    "bottom_cache": ("eval_kept_bottom_vs_full",),
    "ewc_anchors": ("ewc_trainable_vs_all_anchors",),
    "flower": ("flower_overhead",),
    "lora_bytes": ("lora_vs_full_bytes",),
    "online": ("online_serve_vs_train",),
    "flower_scale": ("flower_scale_overhead_100", "flower_scale_wall_1000_vs_100", "flower_scale_peak_gb_1000"),
}
BF16 = ("bf16_vs_fp32", "bf16_acc_drop_points")


@dataclass
class Result:
    """One line of the bench table."""

    name: str
    value: float | None
    detail: str = ""

    @property
    def goal(self) -> str:
        op, goal, _ = GOALS[self.name]
        return f"{op} {goal:g}"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        op, goal, _ = GOALS[self.name]
        return {">=": self.value >= goal, "<=": self.value <= goal, "<": self.value < goal}[op]


@dataclass
class BenchConfig:
    """What the bench runs on; ``tiny()`` is the seconds-long version for tests."""

    tiny: bool = False
    repeats: int = 2
    head_epochs: int = 5
    experiences: list[str] = field(default_factory=lambda: ["airline", "cars"])
    train_per_experience: int = 300
    test_per_experience: int = 150
    clients: int = 4
    scale_clients: tuple[int, ...] = (10, 100, 1000)  # flower_scale: federation sizes ...
    scale_sampled: int = 10  # ... each sampling this many clients a round ...
    scale_per_client: int = 48  # ... each client holding this many training examples per experience

    def scenario(self, **train) -> Scenario:
        if self.tiny:
            stream = {"source": "synthetic", "experiences": ["food", "tech"],
                      "train_per_experience": 32, "test_per_experience": 16}
            model = {"pretrained": "tiny", "finetune": "full", "max_length": 32}
        else:
            stream = {"source": "tweets", "experiences": self.experiences,
                      "train_per_experience": self.train_per_experience,
                      "test_per_experience": self.test_per_experience}
            model = {"pretrained": "minilm", "finetune": "full", "max_length": 64}
        return Scenario.model_validate({
            "name": "bench", "seed": 0, "stream": stream, "model": model,
            # no linear probe: the hand loops fine-tune only, so clsim's loop must too to compare like with like
            "train": {"epochs": 1, "batch_size": 16, "lr": 5e-5, "lp_epochs": 0, **train}, "strategies": ["naive"]})
