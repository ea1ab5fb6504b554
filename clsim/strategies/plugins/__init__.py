"""Avalanche plugins for what Avalanche lacks. Presets name them by class."""
from clsim.strategies.plugins.autocast import AutocastPlugin
from clsim.strategies.plugins.balanced_replay import BalancedReplayPlugin
from clsim.strategies.plugins.calibration import CalibrationPlugin
from clsim.strategies.plugins.early_stopping import EarlyStoppingPlugin
from clsim.strategies.plugins.frozen_anchors import FrozenAnchorsPlugin
from clsim.strategies.plugins.length_grouped import LengthGroupedBatchesPlugin
from clsim.strategies.plugins.linear_probe import LinearProbePlugin
from clsim.strategies.plugins.lwf_eval_teacher import EvalTeacherLwFPlugin
from clsim.strategies.plugins.online_policy import OnlinePolicyPlugin
from clsim.strategies.plugins.periodic_refinetune import PeriodicRefinetunePlugin
from clsim.strategies.plugins.probe import ProbePlugin
from clsim.strategies.plugins.warmup_schedule import WarmupSchedulePlugin

__all__ = ["AutocastPlugin", "BalancedReplayPlugin", "CalibrationPlugin", "EarlyStoppingPlugin", "EvalTeacherLwFPlugin", "FrozenAnchorsPlugin",
           "LengthGroupedBatchesPlugin",
           "LinearProbePlugin", "OnlinePolicyPlugin", "PeriodicRefinetunePlugin", "ProbePlugin", "WarmupSchedulePlugin"]
