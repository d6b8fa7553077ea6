"""``policy sweep``: the model's stages over a grid of parameters, for researchers.

Every grid point is solved in closed form (stages 1, 2 and 3, and the split that settles
stage 3) and, with a plant, turned into what the plant would do at nominal output in
steady state: its emissions, its carbon emission performance (value added per tCO2e)
and each party's value. The trends along each varied parameter are summarised, so that
claims such as "functional availability helps in every stage" or "relational
availability pays off only in symbiosis" can be checked point by point, and where they
fail, seen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from pydantic import ValidationError

from carbonlink.config import PlantConfig
from carbonlink.coordination._counterfactual import value_added_per_unit
from carbonlink.coordination.model import (
    PARTIES,
    CoordinationParams,
    MoneyUnit,
    StageResult,
    core_split,
    effort_cost,
    for_plant,
    shapley,
    stage1_nash,
    stage2_government,
    stage3_joint,
)
from carbonlink.errors import ConfigError

__all__ = ["METRICS", "PlantBasis", "parse_vary", "sweep", "trends"]

KG_PER_T: Final = 1000.0
S_PER_HOUR: Final = 3600.0
#: What the sweep reports per point and stage: (what it is, its unit).
METRICS: Final[dict[str, tuple[str, str]]] = {
    "emissions_t_per_h": ("emissions", "tCO2e/h"),
    "cep": ("carbon emission performance", "{money}/tCO2e"),
    "value_M": ("value to the firm", "{money}"),
    "value_P": ("value to the platform", "{money}"),
    "value_G": ("value to the government", "{money}"),
    "value_total": ("total value", "{money}"),
}
STAGES: Final = (1, 2, 3)
#: Relative changes smaller than this are "flat" (float noise, not a trend).
FLAT: Final = 1e-9


@dataclass(frozen=True)
class PlantBasis:
    """A plant at nominal output: what it emits per model period without abatement, how
    much of that abatement can touch, and the value added it makes (in the policy's
    money; None without prices in that currency)."""

    plant: PlantConfig
    baseline_t: float
    abatable_t: float
    value_added: float | None

    @classmethod
    def of(
        cls, plant: PlantConfig, weights_kg_per_h: Mapping[str, float], money: MoneyUnit
    ) -> PlantBasis:
        """``weights_kg_per_h``: kg CO2e per hour of each meter at nominal draw."""
        period_h = plant.simulation.abatement.period_s / S_PER_HOUR
        outputs = {m.id for m in plant.meters if m.output}
        total = sum(weights_kg_per_h.values()) / KG_PER_T * period_h
        fixed = sum(w for m, w in weights_kg_per_h.items() if m in outputs) / KG_PER_T * period_h
        per_unit = value_added_per_unit(plant, money)
        produced = sum(m.nominal_per_hour for m in plant.meters if m.output) * period_h
        return cls(plant, total, total - fixed, None if per_unit is None else per_unit * produced)

    def emissions(self, x_ss: float) -> float:
        """tCO2e per model period in steady state: abatement X*scale, within the ceiling."""
        abate = self.plant.simulation.abatement
        return self.baseline_t - min(x_ss * abate.scale, abate.max_reduction * self.abatable_t)


def parse_vary(text: str) -> tuple[str, list[float]]:
    """``NAME=v1,v2,...`` or ``NAME=START:STOP:N`` (N evenly spaced values, ends included)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not values:
        raise ConfigError(None, "--vary", f"expected NAME=v1,v2 or NAME=START:STOP:N, got {text!r}")
    _check_name(name, "--vary")
    try:
        if ":" in values:
            start, stop, count = values.split(":")
            points = [float(v) for v in np.linspace(float(start), float(stop), int(count))]
        else:
            points = [float(v) for v in values.split(",")]
    except ValueError:
        raise ConfigError(None, "--vary", f"{text!r}: values must be numbers") from None
    if not points:
        raise ConfigError(None, "--vary", f"{text!r}: give at least one value")
    return name, points


def _check_name(name: str, option: str) -> None:
    if name not in CoordinationParams.model_fields:
        known = ", ".join(CoordinationParams.model_fields)
        raise ConfigError(None, option, f"{name!r} is not a parameter of the model ({known})")


def _point(base: CoordinationParams, values: Mapping[str, float]) -> CoordinationParams:
    try:
        return CoordinationParams.model_validate(base.model_dump() | dict(values))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        raise ConfigError(None, "--vary", f"{shown}: {error['msg']}") from exc


def _stage_rows(p: CoordinationParams, basis: PlantBasis | None) -> list[dict[str, Any]]:
    results: dict[int, StageResult] = {
        1: stage1_nash(p),
        2: stage2_government(p, "welfare"),
        3: stage3_joint(p),
    }
    core = core_split(p)
    settling = core.split if core.split is not None else shapley(p)
    rows = []
    for stage, result in results.items():
        values = settling.values if stage == 3 else {i: result.value(i) for i in PARTIES}
        cost_m, cost_p = effort_cost(p.k_M, result.E_M), effort_cost(p.k_P, result.E_P)
        subsidy = result.theta_M * cost_m + result.theta_P * cost_p
        # What the government pays per period in steady state: subsidies, or in stage 3
        # its settlement transfer at X* (dX/dt = 0): own flow g X* less r phi_G(X*).
        public = (
            p.g * result.X_ss - p.r * settling.share("G").at(result.X_ss) if stage == 3 else subsidy
        )
        welfare = p.gs * result.X_ss - cost_m - cost_p - p.mu * subsidy
        row: dict[str, Any] = {
            "stage": stage,
            "x_ss": result.X_ss,
            "effort_firm": result.E_M,
            "effort_platform": result.E_P,
            "theta_M": result.theta_M,
            "theta_P": result.theta_P,
            **{f"value_{i}": values[i] for i in PARTIES},
            "value_total": sum(values.values()),
            "abatement_per_cost": result.abatement_per_cost,
            "split": settling.method if stage == 3 else "",
        }
        emissions = value_added = math.nan
        period_h = 1.0
        if basis is not None:
            period_h = basis.plant.simulation.abatement.period_s / S_PER_HOUR
            emissions = basis.emissions(result.X_ss)
            value_added = math.nan if basis.value_added is None else basis.value_added
        row |= {
            "emissions_t_per_h": emissions / period_h,
            "public_cost_per_h": public / period_h,
            "cep": value_added / emissions if emissions > 0 else math.nan,
            "cep_welfare": (value_added + welfare) / emissions if emissions > 0 else math.nan,
        }
        rows.append(row)
    return rows


def sweep(
    params: CoordinationParams,
    grid: Mapping[str, Sequence[float]],
    basis: PlantBasis | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    option: str = "grid",
) -> pd.DataFrame:
    """One row per grid point and stage. With ``basis`` the parameters are the plant's
    (``for_plant``: its dynamics and size) before the grid's values are applied.
    A name in ``grid`` that is no parameter is a ConfigError on ``option``."""
    for name in grid:
        _check_name(name, option)
    base = for_plant(params, basis.plant) if basis is not None else params
    names = list(grid)
    rows = []
    for done, values in enumerate(itertools.product(*(grid[n] for n in names)), start=1):
        point = dict(zip(names, values, strict=True))
        p = _point(base, point)
        rows += [point | row for row in _stage_rows(p, basis)]
        if progress is not None:
            progress(done)
    return pd.DataFrame(rows)


def _direction(changes: np.ndarray, scale: float) -> str:
    up = int((changes > FLAT * scale).sum())
    down = int((changes < -FLAT * scale).sum())
    steps = len(changes)
    if not steps:
        return "-"
    if up == steps:
        return "rises"
    if down == steps:
        return "falls"
    if up == down == 0:
        return "flat"
    flat = steps - up - down
    parts = [f"{word} at {n}" for word, n in (("rises", up), ("falls", down), ("flat", flat)) if n]
    return f"{', '.join(parts)} of {steps} steps"


def trends(frame: pd.DataFrame, varied: Sequence[str]) -> pd.DataFrame:
    """For each varied parameter, metric and stage: does the metric rise, fall or stay
    flat at every step along that parameter (the others held at each of their values)?"""
    records = []
    for name in varied:
        others = [n for n in varied if n != name]
        for metric in METRICS:
            record: dict[str, Any] = {"parameter": name, "metric": metric}
            for stage in STAGES:
                rows = frame[frame["stage"] == stage]
                groups = rows.groupby(others) if others else [((), rows)]
                changes = []
                for _, group in groups:
                    series = group.sort_values(name)[metric].to_numpy(dtype=np.float64)
                    changes.append(np.diff(series))
                diffs = np.concatenate(changes) if changes else np.array([])
                finite = diffs[np.isfinite(diffs)]
                scale = float(np.nanmax(np.abs(rows[metric]))) if len(rows) else 1.0
                record[f"stage {stage}"] = (
                    _direction(finite, scale if math.isfinite(scale) and scale > 0 else 1.0)
                    if len(finite)
                    else "-"
                )
            records.append(record)
    return pd.DataFrame(records)


def plot(frame: pd.DataFrame, varied: Sequence[str], money: MoneyUnit, path: Path) -> Path:
    """Heatmaps (two varied parameters) or lines (one): a row per metric, a column per
    stage, each row on one colour scale so the stages compare at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if frame[m].notna().any()]
    figure, axes = plt.subplots(
        len(metrics), len(STAGES), figsize=(4.2 * len(STAGES), 2.8 * len(metrics)),
        squeeze=False, sharex=True, sharey=len(varied) == 2,
    )  # fmt: skip
    for row, metric in enumerate(metrics):
        title, unit = METRICS[metric]
        unit = unit.format(money=money.label)
        values = frame[metric].to_numpy(dtype=np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        for column, stage in enumerate(STAGES):
            ax = axes[row][column]
            rows = frame[frame["stage"] == stage]
            if len(varied) == 2:
                table = rows.pivot_table(index=varied[1], columns=varied[0], values=metric)
                image = ax.pcolormesh(
                    table.columns, table.index, table.to_numpy(), shading="nearest",
                    vmin=low, vmax=high, cmap="viridis",
                )  # fmt: skip
                if column == len(STAGES) - 1:
                    figure.colorbar(image, ax=axes[row].tolist(), label=unit, shrink=0.9)
                if column == 0:
                    ax.set_ylabel(varied[1])
            else:
                ordered = rows.sort_values(varied[0])
                ax.plot(ordered[varied[0]], ordered[metric], marker="o", ms=3)
                ax.set_ylim(low - 0.05 * (high - low + 1e-12), high + 0.05 * (high - low + 1e-12))
                ax.grid(alpha=0.3)
                if column == 0:
                    ax.set_ylabel(unit)
            ax.set_title(f"{title}, stage {stage}", fontsize=9)
            if row == len(metrics) - 1:
                ax.set_xlabel(varied[0])
    figure.suptitle(
        f"policy sweep over {', '.join(varied)}: steady state, money in {money.long}", y=1.0
    )
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
