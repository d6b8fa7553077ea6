"""Plant simulators: factories whose meters publish readings on a simulated clock."""

from carbonlink.core.clock import SimClock
from carbonlink.simulators._counterfactual import COUNTERFACTUAL_COLUMNS, without_changes_from
from carbonlink.simulators._faults import Fault, FaultKind, load_faults, parse_fault
from carbonlink.simulators._fleet import Fleet, InflowChange, Tick, plant_rng
from carbonlink.simulators._models import abatement_inflow, digital_multiplier
from carbonlink.simulators._offline import SAMPLE_COLUMNS, run_offline
from carbonlink.simulators._replay import load_replay, load_replay_from_store, replay
from carbonlink.simulators._runner import SimulationStats, emission_factors, simulate

__all__ = [
    "COUNTERFACTUAL_COLUMNS",
    "SAMPLE_COLUMNS",
    "Fault",
    "FaultKind",
    "Fleet",
    "InflowChange",
    "SimClock",
    "SimulationStats",
    "Tick",
    "abatement_inflow",
    "digital_multiplier",
    "emission_factors",
    "load_faults",
    "load_replay",
    "load_replay_from_store",
    "parse_fault",
    "plant_rng",
    "replay",
    "run_offline",
    "simulate",
    "without_changes_from",
]
