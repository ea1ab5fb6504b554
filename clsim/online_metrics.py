"""Metrics of the online protocol as pure functions of its record (``clsim.online``).

The record holds, per time step, the confusion matrix of the model in service on the batch that
just arrived (scored before anything learned from it), the training done after it, and the
detector's alarm. From it:

- ``online_acc`` / ``online_bal_acc``: the mean over steps of that step's accuracy / balanced
  accuracy (``clsim.metrics``) — how good the served predictions were over time;
- the majority-class reference: always predicting the stream's most common label;
- cost: training seconds, samples trained, updates, labels read (``online_costs``);
- detector quality against the known drift points (``detection``).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from clsim import metrics as M

# the per-seed numbers an online document reports at its top level (mean and interval over seeds)
ONLINE_METRICS = ("online_acc", "online_bal_acc", "online_majority", "online_train_seconds", "online_samples", "updates",
                  "refits", "labels_consumed", "alarms", "false_alarms", "missed_drifts", "mean_delay_steps")


def step_accuracy(confusions: Sequence) -> list[float]:
    return [M.accuracy(c) for c in confusions]


def step_balanced_accuracy(confusions: Sequence) -> list[float]:
    return [M.balanced_accuracy(c) for c in confusions]


def online_accuracy(confusions: Sequence) -> float:
    """Mean over time steps of the in-service model's accuracy on the batch that just arrived."""
    return float(np.nanmean(step_accuracy(confusions))) if len(confusions) else math.nan


def online_balanced_accuracy(confusions: Sequence) -> float:
    """Mean over time steps of the balanced accuracy on each arriving batch (labels it holds)."""
    return float(np.nanmean(step_balanced_accuracy(confusions))) if len(confusions) else math.nan


def majority_online(confusions: Sequence) -> float:
    """The reference of a constant predictor: each step's share of the stream's most common label,
    averaged over steps."""
    if not len(confusions):
        return math.nan
    support = np.asarray([np.asarray(c, dtype=float).sum(axis=1) for c in confusions])  # steps x labels
    top = int(support.sum(axis=0).argmax())
    return float(np.mean(support[:, top] / np.maximum(support.sum(axis=1), 1)))


def detection(alarms: Sequence[int], drifts: Sequence[int], steps: int, batch: Sequence[int] | int,
              max_delay: int | None = None) -> dict:
    """Alarms (time steps) against the known drift points. The first alarm in [d, next drift)
    (and within ``max_delay`` steps, when given) detects drift d with a delay of ``a − d`` steps
    and the arrivals of steps d..a−1; a drift without one is missed; every other alarm is false.
    ``batch``: arrivals per step (a number, or one per step)."""
    per_step = np.full(steps, batch) if np.isscalar(batch) else np.asarray(batch)
    bounds = list(drifts) + [steps]
    hit: set[int] = set()
    delays, delays_arrivals = [], []
    for k, d in enumerate(drifts):
        after = [a for a in alarms if d <= a < bounds[k + 1] and (max_delay is None or a - d <= max_delay)]
        if after:
            a = min(after)
            hit.add(a)
            delays.append(a - d)
            delays_arrivals.append(int(per_step[d:a].sum()))
    return {"alarms": len(alarms), "detected": len(delays), "missed_drifts": len(drifts) - len(delays),
            "false_alarms": len([a for a in alarms if a not in hit]), "delays_steps": delays,
            "delays_arrivals": delays_arrivals,
            "mean_delay_steps": float(np.mean(delays)) if delays else math.nan,
            "mean_delay_arrivals": float(np.mean(delays_arrivals)) if delays_arrivals else math.nan}


def online_costs(steps: Sequence[Mapping]) -> dict:
    """What learning from the stream cost: seconds, samples, updates (training calls), labels read."""
    return {"online_train_seconds": float(sum(s["train_seconds"] for s in steps)),
            "online_samples": int(sum(s["samples"] for s in steps)),
            "updates": int(sum(1 for s in steps if s["update"])),
            "refits": int(sum(1 for s in steps if s["update"] == "refit"))}


def summarize(steps: Sequence[Mapping], drifts: Sequence[int], n_steps: int, labels_consumed: int,
              detector: bool) -> dict:
    """An online run's top-level numbers (``ONLINE_METRICS`` and more) from its per-step record."""
    C = [s["confusion"] for s in steps]
    out = {"online_acc": online_accuracy(C), "online_bal_acc": online_balanced_accuracy(C),
           "online_majority": majority_online(C), "labels_consumed": int(labels_consumed), **online_costs(steps)}
    if detector:
        det = detection([s["step"] for s in steps if s["alarm"]], drifts, n_steps, [s["n"] for s in steps])
        out.update({k: det[k] for k in ("alarms", "false_alarms", "missed_drifts", "mean_delay_steps")},
                   detection=det)
    return out


def curve(docs: Sequence[Mapping]) -> dict | None:
    """Accuracy over time over seeds: per step the mean, a 95 % interval, and the drift points and
    each seed's alarms and refits (for plots); None when the seeds' steps differ."""
    runs = [d["online"] for d in docs if d.get("online")]
    if not runs or any(len(r["steps"]) != len(runs[0]["steps"]) for r in runs):
        return None
    acc = np.asarray([step_accuracy([s["confusion"] for s in r["steps"]]) for r in runs])
    bal = np.asarray([step_balanced_accuracy([s["confusion"] for s in r["steps"]]) for r in runs])
    spent = np.asarray([np.cumsum([s["train_seconds"] for s in r["steps"]]) for r in runs])
    samples = np.asarray([np.cumsum([s["samples"] for s in r["steps"]]) for r in runs])
    band = [M.interval(acc[:, t]) for t in range(acc.shape[1])]
    return {"accuracy": acc.mean(axis=0).tolist(), "balanced_accuracy": bal.mean(axis=0).tolist(),
            "accuracy_interval": [[b[1] for b in band], [b[2] for b in band]],
            "train_seconds_cumulative": spent.mean(axis=0).tolist(),
            "samples_cumulative": samples.mean(axis=0).tolist(),
            "drift_points": list(runs[0]["drift_points"]), "segments": runs[0]["segments"],
            "alarms": [[s["step"] for s in r["steps"] if s["alarm"]] for r in runs],
            "refits": [[s["step"] for s in r["steps"] if s["update"] == "refit"] for r in runs]}
