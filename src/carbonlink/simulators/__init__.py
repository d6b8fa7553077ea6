"""Plant simulators: factories whose meters publish readings on a simulated clock."""

from carbonlink._clock import SimClock
from carbonlink.simulators._plant import PlantSimulator, plant_rng
from carbonlink.simulators._runner import SimulationStats, simulate

__all__ = ["PlantSimulator", "SimClock", "SimulationStats", "plant_rng", "simulate"]
