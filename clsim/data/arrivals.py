"""What arrives when in the online protocol: time steps of texts, drift points, and labels.

Pure and seeded: ``arrivals(sizes, batch, ...)`` says, for every arriving text, its time step,
the experience it comes from and its position in that experience's *training split* (so an
arrival is a training sample the learner already holds, by id), and when — if ever — its label
becomes available. Test splits never arrive: they stay for the R matrix at experience
boundaries.

- **Experience 0 is the deployment**: the model is fine-tuned on its training split before the
  stream starts (``clsim.online``), so its texts never arrive again. Experiences 1..T−1 arrive
  in order, segment after segment, ``batch`` texts per step, each in its split's order (the
  split draw already shuffled it, seeded).
- **Transitions.** ``abrupt``: a segment's steps hold its own topic only. ``gradual`` with
  ``width`` w: the first w steps of segment i (i ≥ 2) mix the previous topic and the new one,
  step k of the ramp (k = 0..w−1) holding ``round((k+1)/(w+1) · batch)`` new texts and the rest
  old ones (``new_share``). The old texts come from the end of the previous experience's split,
  which is why a segment's length is computed to leave them (``segment_steps``). Segment 1 has
  no ramp: the topic before it is the deployment's, whose texts do not arrive.
- **Drift points** are the first steps of segments 2..T−1: where the next topic starts, or its
  ramp begins. The start of segment 1 is no drift a detector could see (nothing came before).
- **Labels.** Exactly ``round(label_fraction · N)`` of the N arrivals ever get a label, chosen
  uniformly (seeded); a labelled arrival of step t is available from step ``t + label_delay``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clsim.data.pool import derive_seed

LABEL_PURPOSE = 0xA11  # derive_seed purpose of the label mask


@dataclass(frozen=True)
class Arrivals:
    """Every arrival of one stream (arrays indexed by arrival, sorted by step) and its steps."""

    step: np.ndarray        # int64: the time step it arrives at
    experience: np.ndarray  # int64: the experience it comes from
    position: np.ndarray    # int64: its index in that experience's training split
    label_step: np.ndarray  # int64: the step its label is available from; -1: never labelled
    segments: list[tuple[int, int, int]]  # (experience, first step, steps) for experiences 1..T-1
    new_share: np.ndarray   # float per step: share of the segment's own topic (1.0 outside ramps)
    drift_points: list[int]
    batch: int

    @property
    def steps(self) -> int:
        return len(self.new_share)

    def at(self, t: int) -> np.ndarray:
        """Indices of the arrivals of step ``t``."""
        return np.arange(*np.searchsorted(self.step, [t, t + 1]))

    def revealed(self, t: int) -> np.ndarray:
        """Indices of the arrivals whose labels become available at step ``t``."""
        return np.flatnonzero(self.label_step == t)

    def labelled_by(self, t: int) -> np.ndarray:
        """Indices of every arrival whose label is available at step ``t`` (oldest first)."""
        return np.flatnonzero((self.label_step >= 0) & (self.label_step <= t))

    def segment_of(self, experience: int) -> range:
        _, first, n = next(s for s in self.segments if s[0] == experience)
        return range(first, first + n)


def ramp(width: int, batch: int) -> list[int]:
    """New-topic texts in each step of a gradual ramp: round((k+1)/(width+1) · batch)."""
    return [int(round((k + 1) / (width + 1) * batch)) for k in range(width)]


def segment_steps(sizes: list[int], batch: int, width: int) -> list[int]:
    """Steps of segments 1..T−1 such that each experience's split holds every text it must give:
    its own steps (fewer new texts in its ramp-in) plus the old texts of the next segment's ramp."""
    new = ramp(width, batch)
    out = []
    for i in range(1, len(sizes)):
        ramp_in = width if i >= 2 else 0
        took_in = sum(new) if ramp_in else 0
        gives_out = width * batch - sum(new) if i + 1 < len(sizes) else 0
        n = ramp_in + (sizes[i] - took_in - gives_out) // batch
        if n < max(ramp_in, 1):
            raise ValueError(f"experience {i} has {sizes[i]} training texts: too few for steps of {batch} "
                             f"with a ramp of {width}")
        out.append(n)
    return out


def arrivals(sizes: list[int], batch: int, seed: int, *, gradual: bool = False, width: int = 0,
             label_delay: int = 0, label_fraction: float = 1.0) -> Arrivals:
    """The arrivals of a stream whose experiences have ``sizes`` training texts (experience 0:
    the deployment, never arriving)."""
    if len(sizes) < 2:
        raise ValueError("the online protocol needs at least two experiences: the deployment and one to stream")
    width = width if gradual else 0
    new = ramp(width, batch)
    n_steps = segment_steps(sizes, batch, width)
    cursor = [0] * len(sizes)  # next unused position of each experience's split
    step, exp, pos, share, segments, drifts = [], [], [], [], [], []

    def take(e: int, k: int, t: int) -> None:
        step.extend([t] * k)
        exp.extend([e] * k)
        pos.extend(range(cursor[e], cursor[e] + k))
        cursor[e] += k

    t = 0
    for i, n in zip(range(1, len(sizes)), n_steps):
        segments.append((i, t, n))
        if i >= 2:
            drifts.append(t)
        for k in range(n):
            if i >= 2 and k < width:  # the ramp: the previous topic's last texts, then the new topic's
                take(i - 1, batch - new[k], t)
                take(i, new[k], t)
                share.append(new[k] / batch)
            else:
                take(i, batch, t)
                share.append(1.0)
            t += 1
        if i + 1 < len(sizes):  # keep the ramp's old texts: the end of this split
            cursor[i] = sizes[i] - (width * batch - sum(new))
    step_a = np.asarray(step, dtype=np.int64)
    n_labelled = int(round(label_fraction * len(step_a)))
    rng = np.random.default_rng(derive_seed(seed, LABEL_PURPOSE))
    label_step = np.full(len(step_a), -1, dtype=np.int64)
    chosen = np.sort(rng.permutation(len(step_a))[:n_labelled])
    label_step[chosen] = step_a[chosen] + label_delay
    return Arrivals(step_a, np.asarray(exp, dtype=np.int64), np.asarray(pos, dtype=np.int64), label_step,
                    segments, np.asarray(share, dtype=float), drifts, batch)
