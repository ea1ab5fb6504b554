"""How much training a strategy run does, estimated from its plan: passes over one experience's
training data.

It orders the runs, and does nothing else. ``clsim.runner`` starts the costliest runs first, so
that runs sharing the cores end close together, instead of the longest one running alone at
the end (a longest-first schedule). It is an estimate from the strategy's algorithm. The
measured costs are in each run's ``metrics.json``.
"""
from __future__ import annotations

from clsim.config import StrategyPlan
from clsim.strategies.plugins.periodic_refinetune import PeriodicRefinetunePlugin, refit_experiences

REPLAY = ("BalancedReplayPlugin", "ReplayPlugin")
TEACHER_FORWARD = 0.5  # LwF: the teacher's forward pass, as a share of a training step's cost


def relative_work(spec: StrategyPlan, experiences: int) -> float:
    """Passes over one experience's training data in a run of ``experiences`` experiences. It
    counts the data trained on (a periodic refit's window, Cumulative's union), replay's buffer
    batch (as large as the new batch, from the second experience on), EWC's importance pass
    after each experience, and LwF's teacher."""
    periodic = spec.plugin("PeriodicRefinetunePlugin")
    if periodic:  # built, so its own defaults apply
        periodic = PeriodicRefinetunePlugin(**periodic.params)
    replay = any(spec.plugin(c) for c in REPLAY)
    ewc, lwf = spec.plugin("EWCPlugin"), spec.plugin("EvalTeacherLwFPlugin") or spec.plugin("LwFPlugin")
    refits = set(refit_experiences(periodic.period, experiences)) if periodic else set()
    work = 0.0
    for k in range(experiences):
        if periodic:
            data = min(periodic.window, k + 1) if k in refits else 0
        else:
            data = k + 1 if spec.template.cls == "Cumulative" else 1
        passes = data * spec.train.epochs * (2 if replay and k > 0 else 1)
        passes += data * (1 if ewc else 0) + data * spec.train.epochs * (TEACHER_FORWARD if lwf and k > 0 else 0)
        work += passes
    return work
