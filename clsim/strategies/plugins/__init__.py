"""Avalanche plugins for what Avalanche lacks. Presets name them by class."""
from clsim.strategies.plugins.autocast import AutocastPlugin
from clsim.strategies.plugins.length_grouped import LengthGroupedBatchesPlugin
from clsim.strategies.plugins.periodic_refinetune import PeriodicRefinetunePlugin
from clsim.strategies.plugins.probe import ProbePlugin

__all__ = ["AutocastPlugin", "LengthGroupedBatchesPlugin", "PeriodicRefinetunePlugin", "ProbePlugin"]
