"""Scenario files and their runner; step kinds live in ``steps_*`` modules listed in :mod:`.kinds`."""

from cluster.scenario.base import ScenarioError, Step, StepKind, parse_duration
from cluster.scenario.runner import (
    Runner,
    RunResult,
    Scenario,
    StepResult,
    load_scenario,
    parse_scenario,
    step_kinds,
)

__all__ = [
    "RunResult",
    "Runner",
    "Scenario",
    "ScenarioError",
    "Step",
    "StepKind",
    "StepResult",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "step_kinds",
]
