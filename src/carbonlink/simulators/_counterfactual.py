"""What a run's plants would have measured without a change of directives.

A fleet's random draws never depend on its abatement (noise comes from each plant's own
generator, one row per tick), so two fleets of the same plants, seed and start differ
only where their inflows differ. Replaying the inflows a run applied gives its samples
again; replaying only those before a moment gives the same plants, same weather, same
shifts, as if nothing had changed then: the exact counterfactual, with no noise to
average away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from carbonlink.config import PlantConfig
from carbonlink.simulators._fleet import EmissionFactor, Fleet, InflowChange

__all__ = ["COUNTERFACTUAL_COLUMNS", "without_changes_from"]

COUNTERFACTUAL_COLUMNS: Final = ("ts_ms", "plant", "meter", "as_run", "without")


def without_changes_from(
    plants: Sequence[PlantConfig],
    emission_factor: EmissionFactor,
    *,
    seed: int,
    start_ms: int,
    end_ms: int,
    changes_ms: int,
    inflows: Sequence[InflowChange],
) -> pd.DataFrame:
    """Every sample from ``changes_ms`` up to ``end_ms`` (included), columns
    ``COUNTERFACTUAL_COLUMNS``: the amount each meter measured with all ``inflows``
    (``as_run``) and with only those applied before ``changes_ms`` (``without``), in
    the meter's unit. ``plants``, ``seed`` and ``start_ms`` must be the run's own."""
    index = {plant.id: i for i, plant in enumerate(plants)}
    fleets = [Fleet(plants, seed, start_ms, emission_factor) for _ in range(2)]
    for change in inflows:
        for fleet in fleets if change.at_ms < changes_ms else fleets[:1]:
            fleet.set_inflow(index[change.plant], change.at_ms, change.inflow)
    as_run, without = (fleet.advance(end_ms) for fleet in fleets)
    kept = [(a, w) for a, w in zip(as_run, without, strict=True) if a.ts_ms >= changes_ms]
    refs = fleets[0].meter_refs
    if not kept:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COUNTERFACTUAL_COLUMNS})
    meters = np.concatenate([a.meters for a, _ in kept])
    return pd.DataFrame(
        {
            "ts_ms": np.concatenate([np.full(len(a.meters), a.ts_ms, np.int64) for a, _ in kept]),
            "plant": np.array([p.id for p, _ in refs], dtype=object)[meters],
            "meter": np.array([m.id for _, m in refs], dtype=object)[meters],
            "as_run": np.concatenate([a.amounts for a, _ in kept]),
            "without": np.concatenate([w.amounts for _, w in kept]),
        }
    )
