"""Shared fixtures: the spec's reference case and random parameter draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carbonlink.coordination import CoordinationParams, load_params

REFERENCE_YAML = Path(__file__).resolve().parents[2] / "config" / "policies" / "reference.yaml"
DRAWS = 50
SEED = 20260615
DRAW_IDS = [f"draw{i}" for i in range(DRAWS)]


@pytest.fixture(scope="session")
def reference() -> CoordinationParams:
    return load_params(REFERENCE_YAML)


def random_params(rng: np.random.Generator, **overrides: float) -> CoordinationParams:
    """A parameter set drawn over ranges wide enough to make caps bind sometimes."""
    u = rng.uniform
    values = {
        "r": u(0.02, 0.2),
        "delta": u(0.05, 0.5),
        "a_M": u(0.5, 2.0),
        "a_P": u(0.5, 2.0),
        "F": u(0.2, 1.0),
        "R": u(0.0, 1.0),
        "eta": u(0.0, 1.0),
        "k_M": u(0.5, 3.0),
        "k_P": u(0.5, 3.0),
        "m_M": u(0.05, 2.0),
        "m_P": u(0.05, 2.0),
        "g": u(0.05, 2.0),
        "mu": u(0.0, 0.5),
        "theta_max": u(0.5, 0.95),
        "X0": u(0.0, 10.0),
    }
    values.update(overrides)
    return CoordinationParams(**values)


def draws(**overrides: float) -> list[CoordinationParams]:
    rng = np.random.default_rng(SEED)
    return [random_params(rng, **overrides) for _ in range(DRAWS)]
