"""The literature's measures of carbon emission efficiency, from the stream, per plant
and per stage (docs/coordination.md, "Measuring carbon emission efficiency").

- Carbon emission performance (CEP): value added per tCO2e emitted, value added being
  output x the plant file's output price x its value-added share; and a welfare
  variant, value added plus the coordination model's welfare flow (every party's
  payoff: the value of abatement less effort costs and the shadow cost of subsidies),
  per tCO2e.
- A four-dimension evaluation index: carbon emissions (tCO2e/h), carbon productivity
  (value added per tCO2e), energy and electricity intensity (GJ and kWh per thousand of
  value added) and energy structure (tCO2e per GJ of energy: the carbon content of the
  mix). Each indicator is min-max normalised across the units evaluated (1 best, 0
  worst) and weighted: equal weights per dimension (the two intensities share theirs),
  or entropy weights (Shannon entropy of each normalised indicator: the more it varies
  across units, the more it weighs).
- Total-factor efficiency: the slacks-based measure of Tone (2001) with CO2e as an
  undesirable output (Tone 2004), constant returns to scale, one LP per unit
  (scipy.optimize.linprog, HiGHS). Inputs: fossil and heat energy (GJ/h) and
  electricity (kWh/h); desirable output: value added; undesirable: tCO2e. 1 is on the
  frontier; below 1, the average share by which inputs and emissions could shrink and
  value added grow.

A unit is one plant under one stage: the periods of the coordinator's journal under
that stage (or the whole window, without a journal).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import linprog

from carbonlink.config import PlantConfig
from carbonlink.coordination._journal import Journal
from carbonlink.coordination.model import STAGE_NAMES, CoordinationParams, MoneyUnit, effort_cost
from carbonlink.storage import Store, readings_ending_in
from carbonlink.storage.windows import ENERGY_GJ_PER_UNIT, ENERGY_SOURCES, plant_kpis

__all__ = [
    "INDICATORS",
    "Weights",
    "evaluation_index",
    "indicator_weights",
    "measures",
    "recorded_units",
    "sbm_efficiency",
    "with_sbm",
]

FloatArray = npt.NDArray[np.float64]
Weights = Literal["equal", "entropy"]
KG_PER_T: Final = 1000.0
MS_PER_HOUR: Final = 3_600_000
PER_THOUSAND: Final = 1000.0
ELECTRICITY_GJ_PER_KWH: Final = ENERGY_GJ_PER_UNIT["kWh"]
_PARAMETER_NAMES: Final = frozenset(CoordinationParams.model_fields)
#: Stage 0: periods outside the coordinator's journal (or no journal at all).
UNCOORDINATED: Final = 0
#: The index's indicators: (column, dimension, higher is better, equal weight).
INDICATORS: Final = (
    ("emissions_t_per_h", "carbon emissions", False, 0.25),
    ("carbon_productivity", "carbon productivity", True, 0.25),
    ("energy_intensity", "energy and electricity intensity", False, 0.125),
    ("electricity_intensity", "energy and electricity intensity", False, 0.125),
    ("energy_structure", "energy structure", False, 0.25),
)


@dataclass(frozen=True)
class _Span:
    start_ms: int
    end_ms: int
    stage: int


def _stage_spans(journal: Journal | None, plant: str, start_ms: int, end_ms: int) -> list[_Span]:
    """[start, end) cut into spans of one stage each: the journal's periods, and stage 0
    where the journal has none."""
    periods = (
        []
        if journal is None
        else list(journal.periods(plant)[["start_ms", "end_ms", "stage"]].itertuples(index=False))
    )
    spans: list[_Span] = []
    cursor = start_ms
    for a, b, stage in sorted(periods):
        a, b = max(int(a), start_ms), min(int(b), end_ms)
        if b <= a:
            continue
        if a > cursor:
            spans.append(_Span(cursor, a, UNCOORDINATED))
        spans.append(_Span(max(a, cursor), b, int(stage)))
        cursor = max(cursor, b)
    if cursor < end_ms:
        spans.append(_Span(cursor, end_ms, UNCOORDINATED))
    return [s for s in spans if s.end_ms > s.start_ms]


def _welfare(rows: pd.DataFrame, plant: PlantConfig, start_ms: int, end_ms: int) -> float:
    """The model's welfare flow over the journal's periods in [start, end), in model money:
    Gs X - sum_i (1 + mu theta_i) k_i E_i^2 / 2 per model period (stage 3: no mu)."""
    total = 0.0
    period_s = plant.simulation.abatement.period_s
    for row in rows.to_dict("records"):
        a, b = max(int(row["start_ms"]), start_ms), min(int(row["end_ms"]), end_ms)
        shared = row["parameters"]
        if b <= a or not isinstance(shared, Mapping) or not shared:
            continue
        known = {k: float(v) for k, v in shared.items() if k in _PARAMETER_NAMES}
        p = CoordinationParams.model_construct(None, **known)
        observed = row["x_observed"]
        x = (
            float(observed)
            if observed is not None and math.isfinite(float(observed))
            else float(row["x_projected"])
        )
        e_m, e_p = float(row["effort_firm"]), float(row["effort_platform"])
        cost_m, cost_p = effort_cost(p.k_M, e_m), effort_cost(p.k_P, e_p)
        subsidy = (
            float(row["subsidy_rate_firm"]) * cost_m + float(row["subsidy_rate_platform"]) * cost_p
        )
        flow = (p.g + p.m_M + p.m_P) * x - cost_m - cost_p - p.mu * subsidy
        total += flow * (b - a) / 1000.0 / period_s
    return total


def recorded_units(
    store: Store,
    plants: Sequence[PlantConfig],
    versions: Mapping[str, tuple[str, str]],
    start_ms: int,
    end_ms: int,
    journal: Journal | None = None,
    money: MoneyUnit | None = None,
) -> pd.DataFrame:
    """One row per plant and stage in force over [start_ms, end_ms): hours, emissions,
    energy, output, value added, and the indicators. Amounts of money are in each
    plant's own currency (its ``economics``); ``money`` is the journal policy's unit,
    needed for the welfare variant."""
    records = []
    for plant in plants:
        name, version = versions[plant.id]
        periods = journal.periods(plant.id) if journal is not None else pd.DataFrame()
        by_stage: dict[int, list[_Span]] = {}
        for span in _stage_spans(journal, plant.id, start_ms, end_ms):
            by_stage.setdefault(span.stage, []).append(span)
        for stage, spans in sorted(by_stage.items()):
            emissions, activity = [], []
            for span in spans:
                first, after = readings_ending_in(span.start_ms, span.end_ms)
                emissions.append(store.emissions(
                    plant.id, start_ms=first, end_ms=after, factor_set=name,
                    factor_version=version,
                ))  # fmt: skip
                activity.append(store.activity(plant.id, start_ms=first, end_ms=after))
            frame = pd.concat(emissions, ignore_index=True)
            if not len(frame):
                continue
            kpis = plant_kpis(plant, frame, pd.concat(activity, ignore_index=True))
            hours = sum(s.end_ms - s.start_ms for s in spans) / MS_PER_HOUR
            energy_t = float(frame[frame["source"].isin(ENERGY_SOURCES)]["co2e_kg"].sum())
            economics = plant.economics
            value_added = (
                kpis.output * economics.value_added_per_unit
                if economics is not None and kpis.output is not None
                else math.nan
            )
            welfare = math.nan
            if (
                journal is not None
                and stage != UNCOORDINATED
                and money is not None
                and economics is not None
                and money.currency == economics.currency
            ):
                welfare = money.scale * sum(
                    _welfare(periods, plant, s.start_ms, s.end_ms) for s in spans
                )
            total = kpis.total_tco2e
            va_thousands = value_added / PER_THOUSAND
            records.append({
                "plant": plant.id,
                "stage": stage,
                "stage_name": STAGE_NAMES.get(stage, "no coordination"),
                "hours": hours,
                "currency": None if economics is None else economics.currency,
                "tco2e": total,
                "emissions_t_per_h": total / hours,
                "output": kpis.output,
                "output_unit": kpis.output_unit,
                "value_added": value_added,
                "energy_gj": kpis.energy_gj,
                "electricity_kwh": kpis.electricity_kwh,
                "cep": value_added / total if total > 0 else math.nan,
                "cep_welfare": (value_added + welfare) / total if total > 0 else math.nan,
                "carbon_productivity": value_added / total if total > 0 else math.nan,
                "energy_intensity": kpis.energy_gj / va_thousands if va_thousands > 0 else math.nan,
                "electricity_intensity": (
                    kpis.electricity_kwh / va_thousands if va_thousands > 0 else math.nan
                ),
                "energy_structure": (
                    energy_t / KG_PER_T / kpis.energy_gj if kpis.energy_gj > 0 else math.nan
                ),
            })  # fmt: skip
    return pd.DataFrame(records)


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Min-max per indicator across the units: 1 for the best unit, 0 for the worst; an
    indicator equal everywhere separates nobody and is 1 for all."""
    result = {}
    for column, _, higher_better, _ in INDICATORS:
        values = frame[column].to_numpy(dtype=np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if high - low <= 1e-12 * max(abs(high), 1.0):
            result[column] = np.ones_like(values)
        elif higher_better:
            result[column] = (values - low) / (high - low)
        else:
            result[column] = (high - values) / (high - low)
    return pd.DataFrame(result, index=frame.index)


def indicator_weights(normalised: pd.DataFrame, method: Weights) -> dict[str, float]:
    """Equal weights per dimension, or entropy weights: w_j = (1 - e_j) / sum(1 - e),
    with e_j = -sum_i p_ij ln p_ij / ln n and p_ij = x_ij / sum_i x_ij."""
    if method == "equal":
        return {column: weight for column, _, _, weight in INDICATORS}
    n = len(normalised)
    divergence = {}
    for column, *_ in INDICATORS:
        x = normalised[column].to_numpy(dtype=np.float64)
        total = float(x.sum())
        if n < 2 or total <= 0:
            divergence[column] = 0.0
            continue
        p = x / total
        entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0]))) / math.log(n)
        divergence[column] = max(0.0, 1.0 - entropy)
    spread = sum(divergence.values())
    if spread <= 0:
        return indicator_weights(normalised, "equal")
    return {column: d / spread for column, d in divergence.items()}


def evaluation_index(
    units: pd.DataFrame, method: Weights = "equal"
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The four-dimension index of every unit with all indicators defined: the
    normalised indicators (``norm_*``) and ``index`` = their weighted sum, in [0, 1]."""
    columns = [c for c, *_ in INDICATORS]
    result = units.assign(index=math.nan, **{f"norm_{c}": math.nan for c in columns})
    scored = units.dropna(subset=columns)
    if scored.empty:
        return result, {}
    normalised = _normalised(scored)
    weights = indicator_weights(normalised, method)
    result.loc[scored.index, "index"] = sum(normalised[c] * w for c, w in weights.items())
    for column in columns:
        result.loc[scored.index, f"norm_{column}"] = normalised[column]
    return result, weights


def sbm_efficiency(inputs: FloatArray, good: FloatArray, bad: FloatArray) -> FloatArray:
    """Tone's slacks-based measure with undesirable outputs, constant returns to scale.

    ``inputs`` (n, m), ``good`` (n, s1) and ``bad`` (n, s2), one row per unit. For unit o,
    with the Charnes-Cooper variables t, Lambda = t lambda and the scaled slacks:

        min  t - (1/m) sum_i S-_i / x_io
        s.t. t + (1/(s1 + s2)) (sum_r Sg_r / yg_ro + sum_r Sb_r / yb_ro) = 1
             X Lambda + S- = t x_o,  Yg Lambda - Sg = t yg_o,  Yb Lambda + Sb = t yb_o
             everything >= 0.

    An input of 0 at unit o drops out of its objective (Tone 2001, section 4). Good and
    bad outputs must be positive.
    """
    n, m = inputs.shape
    s1, s2 = good.shape[1], bad.shape[1]
    if np.any(good <= 0) or np.any(bad <= 0):
        raise ValueError("SBM needs positive desirable and undesirable outputs")
    data = np.hstack([inputs, good, bad])  # one column per quantity, one row per unit
    # Each quantity's balance: X Lambda + S- = t x_o, Yg Lambda - Sg = t yg_o,
    # Yb Lambda + Sb = t yb_o, i.e. -t q_o + Q Lambda + sign * S = 0.
    signs = np.concatenate([np.ones(m), -np.ones(s1), np.ones(s2)])
    size = 1 + n + len(signs)  # t, Lambda, then one slack per quantity
    scores = np.empty(n)
    for o in range(n):
        balance = np.zeros((len(signs), size))
        balance[:, 0] = -data[o]
        balance[:, 1 : 1 + n] = data.T
        balance[:, 1 + n :] = np.diag(signs)
        used = inputs[o] > 0
        c = np.zeros(size)
        c[0] = 1.0
        c[1 + n : 1 + n + m] = np.where(
            used, -1.0 / np.where(used, inputs[o], 1.0) / max(int(used.sum()), 1), 0.0
        )
        norm = np.zeros(size)
        norm[0] = 1.0
        norm[1 + n + m :] = 1.0 / (s1 + s2) / data[o, m:]
        a_eq = np.vstack([norm, balance])
        b_eq = np.concatenate([[1.0], np.zeros(len(signs))])
        result = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * size, method="highs")
        if not result.success:  # pragma: no cover - unit o itself is always feasible
            raise RuntimeError(f"SBM LP failed for unit {o}: {result.message}")
        scores[o] = float(result.fun)
    return scores


def with_sbm(units: pd.DataFrame) -> pd.DataFrame:
    """``units`` with ``sbm``: the efficiency of every unit that has value added and
    emissions, against all of them (fossil and heat GJ/h and electricity kWh/h in,
    value added per hour out, tCO2e per hour the undesirable output)."""
    ok = units["value_added"].gt(0) & units["tco2e"].gt(0)
    chosen = units[ok]
    result = units.assign(sbm=math.nan)
    if len(chosen) < 2:
        return result
    hours = chosen["hours"].to_numpy(dtype=np.float64)
    electricity = chosen["electricity_kwh"].to_numpy(dtype=np.float64)
    fuel = chosen["energy_gj"].to_numpy(dtype=np.float64) - electricity * ELECTRICITY_GJ_PER_KWH
    inputs = np.column_stack([np.maximum(fuel, 0.0), electricity]) / hours[:, None]
    good = (chosen["value_added"].to_numpy(dtype=np.float64) / hours)[:, None]
    bad = (chosen["tco2e"].to_numpy(dtype=np.float64) / hours)[:, None]
    result.loc[chosen.index, "sbm"] = sbm_efficiency(inputs, good, bad)
    return result


def measures(units: pd.DataFrame, method: Weights = "equal") -> tuple[pd.DataFrame, dict[str, Any]]:
    """The units with the index and SBM efficiency, and the weights used."""
    if units.empty:
        return units, {}
    scored, weights = evaluation_index(units, method)
    return with_sbm(scored), weights
