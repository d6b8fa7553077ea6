"""The literature's measures: SBM-DEA against an independent formulation, the
evaluation index's arithmetic, and ``policy measures`` on a recorded window split by
the stages a journal says were in force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.optimize import linprog

from carbonlink.cli import main
from carbonlink.config import Settings
from carbonlink.coordination import Journal, PeriodRow
from carbonlink.coordination._measures import (
    INDICATORS,
    evaluation_index,
    indicator_weights,
    sbm_efficiency,
)
from carbonlink.platform import open_store
from tests.coordination.recording import HOUR, START_MS, flat_settings, record

PLANT: Final = "ms-cement"
HOURS: Final = 4


def dinkelbach_sbm(x: np.ndarray, g: np.ndarray, b: np.ndarray, o: int) -> float:
    """The SBM fractional program in its own variables (lambda and slacks, no
    Charnes-Cooper transform), solved by Dinkelbach's iteration on the ratio."""
    n, m = x.shape
    s1, s2 = g.shape[1], b.shape[1]
    size = n + m + s1 + s2
    a_eq = np.zeros((m + s1 + s2, size))
    a_eq[:m, :n] = x.T
    a_eq[:m, n : n + m] = np.eye(m)
    a_eq[m : m + s1, :n] = g.T
    a_eq[m : m + s1, n + m : n + m + s1] = -np.eye(s1)
    a_eq[m + s1 :, :n] = b.T
    a_eq[m + s1 :, n + m + s1 :] = np.eye(s2)
    b_eq = np.concatenate([x[o], g[o], b[o]])
    num = np.zeros(size)
    num[n : n + m] = -1.0 / (m * x[o])
    den = np.zeros(size)
    den[n + m : n + m + s1] = 1.0 / ((s1 + s2) * g[o])
    den[n + m + s1 :] = 1.0 / ((s1 + s2) * b[o])
    q = 1.0
    for _ in range(100):
        res = linprog(num - q * den, A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * size,
                      method="highs")  # fmt: skip
        assert res.success
        ratio = (1 + num @ res.x) / (1 + den @ res.x)
        if abs(ratio - q) < 1e-12:
            break
        q = ratio
    return float(q)


def test_sbm_matches_dinkelbach_on_random_units() -> None:
    rng = np.random.default_rng(16)
    for _ in range(20):
        n = int(rng.integers(3, 9))
        x = rng.uniform(1, 10, (n, 2))
        g = rng.uniform(1, 10, (n, 1))
        b = rng.uniform(1, 10, (n, 1))
        scores = sbm_efficiency(x, g, b)
        expected = [dinkelbach_sbm(x, g, b, o) for o in range(n)]
        assert scores == pytest.approx(expected, abs=1e-7)
        assert (scores > 0).all()
        assert (scores <= 1 + 1e-9).all()
        assert scores.max() == pytest.approx(1.0)  # constant returns: someone is efficient
        # Constant returns: a unit scaled up or down is as efficient as before.
        scaled = sbm_efficiency(x * [[3.0]] * np.ones((n, 1)), g * 3, b * 3)
        assert scaled == pytest.approx(scores, abs=1e-9)


def test_sbm_a_unit_with_more_input_and_emissions_for_the_same_value_is_worse() -> None:
    x = np.array([[1.0, 1.0], [2.0, 2.0]])
    g = np.array([[1.0], [1.0]])
    b = np.array([[1.0], [2.0]])
    scores = sbm_efficiency(x, g, b)
    # Against unit 0 (lambda = 1), unit 1 could halve both inputs and its emissions:
    # rho = (1 - (1/2 + 1/2) / 2) / (1 + (0/1 + 1/2) / 2) = 0.5 / 1.25 = 0.4.
    assert scores == pytest.approx([1.0, 0.4])


def test_index_normalises_and_weights() -> None:
    units = pd.DataFrame({
        "emissions_t_per_h": [10.0, 20.0, 15.0],
        "carbon_productivity": [300.0, 100.0, 200.0],
        "energy_intensity": [1.0, 3.0, 2.0],
        "electricity_intensity": [50.0, 150.0, 100.0],
        "energy_structure": [0.05, 0.1, 0.075],
    })  # fmt: skip
    scored, weights = evaluation_index(units, "equal")
    assert sum(weights.values()) == pytest.approx(1.0)
    assert scored["index"].tolist() == pytest.approx([1.0, 0.0, 0.5])  # best, worst, middle
    _, entropy = evaluation_index(units, "entropy")
    assert sum(entropy.values()) == pytest.approx(1.0)
    assert set(entropy) == {c for c, *_ in INDICATORS}
    flat = units.assign(energy_structure=0.07)  # separates nobody: weighs nothing
    assert indicator_weights(
        evaluation_index(flat, "equal")[0][[f"norm_{c}" for c, *_ in INDICATORS]].rename(
            columns=lambda c: c.removeprefix("norm_")
        ),
        "entropy",
    )["energy_structure"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str, Path]:
    """Four hours of a flat cement line, and a journal: stage 1 for two, then stage 3."""
    directory = tmp_path_factory.mktemp("measures")
    settings = flat_settings(directory / "config", {PLANT: "cement-01"})
    url = f"sqlite:///{directory / 'store.sqlite'}"
    store = open_store(url)
    record(settings, store, list(settings.plants.values()), START_MS, HOURS)
    store.close()
    journal_path = directory / "journal.sqlite"
    params = {"r": 0.1, "delta": 0.2, "a_M": 1.0, "a_P": 0.8, "F": 0.6, "R": 0.5, "eta": 0.5,
              "k_M": 2.0, "k_P": 1.5, "m_M": 1.0, "m_P": 0.4, "g": 0.8, "mu": 0.2,
              "theta_max": 0.8, "X0": 0.0}  # fmt: skip
    with Journal(journal_path) as journal:
        rows = []
        for k in range(HOURS * 4):
            start = START_MS + k * HOUR // 4
            stage = 1 if k < 8 else 3
            rows.append(PeriodRow(PLANT, start, start + HOUR // 4, "switch", stage, 1.0, 0.5,
                                  1.0, 0.0, 0.0, 0.0, 5.0, None, 0.0, 0, None, params))  # fmt: skip
        journal.record_periods(rows)
        journal.save_state("status", {"money": {"currency": "CNY", "scale": 1000.0}})
    return settings, url, journal_path


def test_measures_split_the_window_by_stage(
    recorded: tuple[Settings, str, Path], tmp_path: Path
) -> None:
    settings, url, journal_path = recorded
    result = CliRunner().invoke(main, [
        "policy", "measures", "--config", str(settings.path), "--store", url,
        "--journal", str(journal_path), "--out", str(tmp_path), "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["stage"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {1, 3}
    assert rows[1]["hours"] == pytest.approx(2.0, abs=0.02)
    assert rows[3]["hours"] == pytest.approx(2.0, abs=0.02)
    store = open_store(url)
    plant = settings.plant(PLANT)
    economics = plant.economics
    assert economics is not None
    for stage, (start, end) in {1: (START_MS, START_MS + 2 * HOUR),
                                3: (START_MS + 2 * HOUR, START_MS + 4 * HOUR)}.items():  # fmt: skip
        emitted = store.emissions(PLANT, start_ms=start + 1, end_ms=end + 1)["co2e_kg"].sum() / 1000
        produced = store.activity(PLANT, meter="clinker-output", start_ms=start + 1,
                                  end_ms=end + 1)["value"].sum()  # fmt: skip
        value_added = produced * economics.output_price * economics.value_added_share
        assert rows[stage]["tco2e"] == pytest.approx(emitted, rel=1e-9)
        assert rows[stage]["cep"] == pytest.approx(value_added / emitted, rel=1e-9)
        # Welfare variant: plus the model's welfare flow (Gs X - costs), in CNY.
        welfare_per_h = (2.2 * 5.0 - 2.0 / 2 - 1.5 * 0.25 / 2) * 1000
        hours = rows[stage]["hours"]
        assert rows[stage]["cep_welfare"] == pytest.approx(
            (value_added + hours * welfare_per_h) / emitted, rel=1e-6
        ), (stage, hours)
    store.close()
    assert (tmp_path / "measures.csv").exists()
    text = CliRunner().invoke(main, [
        "policy", "measures", "--config", str(settings.path), "--store", url,
        "--journal", str(journal_path), "--out", str(tmp_path), "--weights", "entropy",
    ])  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "primary neutrality" in text.stdout
    assert "advanced symbiosis" in text.stdout
    assert "entropy weights" in text.stdout
