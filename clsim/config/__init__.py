"""Configuration: the scenario and preset schemas and the one resolver that turns a scenario file
into a checked ``Plan``. Imports only pydantic and YAML: validating a file starts in a second."""
from clsim.config.errors import ConfigError, Strict, read_yaml_mapping, validation_to_error
from clsim.config.plan import Plan, describe, resolve, resolve_scenario
from clsim.config.presets import Component, Extension, StrategyPlan, available_presets
from clsim.config.scenario import (
                                   FileStream,
                                   ModelConfig,
                                   ResourcesConfig,
                                   Scenario,
                                   StrategyRef,
                                   SyntheticStream,
                                   TrainConfig,
                                   TweetsStream,
                                   load_scenario,
                                   scenario_to_dict,
)

__all__ = ["ConfigError", "Strict", "read_yaml_mapping", "validation_to_error", "Plan", "describe", "resolve", "resolve_scenario",
           "Component", "Extension", "StrategyPlan", "available_presets", "FileStream", "ModelConfig",
           "ResourcesConfig", "Scenario", "StrategyRef", "SyntheticStream", "TrainConfig", "TweetsStream",
           "load_scenario", "scenario_to_dict"]
