"""The core split: the stage-3 split that settles by default (coordination-model.md,
Stage 3, "The core split").

Floors f_i = max(V_i stage 1, V_i stage 2) are what each party could have had in its
best earlier stage. The split is the nucleolus of the stage-3 game with those floors
added as constraints: the game v_f(K) = max(v(K), sum of K's floors) for every proper
coalition K, and v_f(MPG) = V3 (the stage-3 total). Its core is exactly {phi : sum phi =
V3, phi(K) >= v(K), phi_i >= f_i}, and where that set is not empty its nucleolus lies in
it: the allocation that makes the least satisfied coalition as satisfied as possible,
then the next, and so on.

Every value here is linear in the state X with an additive slope (v(K) has slope m_K /
(r + delta), each floor m_i / (r + delta)), so all constraints reduce to constraints on
intercepts, the nucleolus of the intercept game gives the intercepts, and the split is
linear in X like the others: phi_i(X) = m_i X / (r + delta) + intercept_i, which is
what the settlement flows beta_i need.

The nucleolus is a short sequence of linear programs (scipy.optimize.linprog, HiGHS).
Whether the set is empty follows from the Bondareva-Shapley theorem: for three players
the core is non-empty exactly when V3 covers every minimal balanced collection (the
three singletons; a pair and the third player; the three pairs with weight 1/2). The
largest shortfall says by how much and for which collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog

from carbonlink.coordination.model._cooperative import (
    Coalition,
    PartyShare,
    Split,
    coalition_parts,
    shapley,
)
from carbonlink.coordination.model._params import PARTIES, CoordinationParams, Party
from carbonlink.coordination.model._stages import stage1_nash, stage2_government

__all__ = ["CoreSplit", "core_split", "settlement_reason", "settling_split", "stage_floors"]

FloatArray = npt.NDArray[np.float64]
#: The proper coalitions, in a fixed order: three singletons, then three pairs.
PROPER: Final[tuple[Coalition, ...]] = tuple(
    frozenset(group) for size in (1, 2) for group in combinations(PARTIES, size)
)
# Two excesses closer than this (relative to the joint value) are taken as equal.
RELATIVE_TOLERANCE: Final = 1e-9


@dataclass(frozen=True)
class CoreSplit:
    """The core split at ``x0``, or why there is none.

    ``floors`` are max(stage 1, stage 2) per party at X0; ``split`` the nucleolus
    (None when infeasible); ``shortfall`` how much the stage-3 total falls short of
    the collection of coalitions that binds hardest (<= 0 when feasible: then minus
    the slack); ``infeasible`` the reason in words, None when feasible.
    """

    x0: float
    total: float
    floors: Mapping[Party, float]
    split: Split | None
    shortfall: float
    infeasible: str | None

    @property
    def feasible(self) -> bool:
        return self.split is not None


def stage_floors(p: CoordinationParams) -> dict[Party, PartyShare]:
    """f_i = max(V_i stage 1, V_i stage 2 welfare), linear in X with slope m_i/(r+delta).

    Both stage values of party i have that slope, so the larger one is larger at every X.
    """
    one, two = stage1_nash(p), stage2_government(p, "welfare")
    floors = {}
    for party in PARTIES:
        slope = p.value_of(party) / p.r_delta
        best = max(one.value(party), two.value(party))
        floors[party] = PartyShare(party, slope, best - slope * p.X0)
    return floors


def _indicator(coalition: Coalition) -> FloatArray:
    return np.array([1.0 if i in coalition else 0.0 for i in PARTIES])


def _balanced_shortfall(w: Mapping[Coalition, float], grand: float) -> tuple[float, str]:
    """The largest sum_K lambda_K w(K) - w(N) over the minimal balanced collections of
    three players, and which collection it is, in words."""
    singles = [frozenset({i}) for i in PARTIES]
    pairs = [k for k in PROPER if len(k) == 2]
    candidates: list[tuple[float, str]] = []
    total = sum(w[k] for k in singles)
    candidates.append((total, "the floors " + " + ".join(f"{next(iter(k))}" for k in singles)))
    for pair in pairs:
        (rest,) = set(PARTIES) - pair
        candidates.append(
            (w[pair] + w[frozenset({rest})], f"coalition {_name(pair)} with {rest}'s floor")
        )
    candidates.append((sum(w[k] for k in pairs) / 2.0, "half of the three pairs' values"))
    best = max(candidates, key=lambda c: c[0])
    return best[0] - grand, best[1]


def _name(coalition: Coalition) -> str:
    return "".join(i for i in PARTIES if i in coalition)


def _nucleolus(w: Mapping[Coalition, float], grand: float) -> FloatArray:
    """The nucleolus of the game ``w`` (proper coalitions) with w(N) = ``grand``, whose
    core is not empty: maximise the smallest excess x(K) - w(K), fix the coalitions that
    stay at it in every optimum, and repeat until the allocation is unique."""
    scale = max(1.0, abs(grand), *(abs(v) for v in w.values()))
    tolerance = RELATIVE_TOLERANCE * scale
    fixed: dict[Coalition, float] = {}
    free = list(PROPER)
    while True:
        a_eq = [np.append(np.ones(3), 0.0)] + [np.append(_indicator(k), 0.0) for k in fixed]
        b_eq = [grand] + [w[k] + e for k, e in fixed.items()]
        rows = np.array([[*(-_indicator(k)), 1.0] for k in free])
        bounds = [(None, None)] * 4
        # Maximise t subject to x(K) - w(K) >= t for the free coalitions.
        best = linprog(
            np.array([0.0, 0.0, 0.0, -1.0]),
            A_ub=rows,
            b_ub=np.array([-w[k] for k in free]),
            A_eq=np.array(a_eq),
            b_eq=np.array(b_eq),
            bounds=bounds,
            method="highs",
        )
        if not best.success:  # pragma: no cover - the LP is feasible and bounded here
            raise RuntimeError(f"nucleolus LP failed: {best.message}")
        level = -float(best.fun)
        x = best.x[:3]
        newly = []
        for k in free:
            if float(_indicator(k) @ x) - w[k] > level + tolerance:
                continue  # slack at this optimum: not every optimum keeps it at the level
            # Tight here; fixed only if no optimum lifts it above the level.
            others = [j for j in free if j != k]
            lifted = linprog(
                np.append(-_indicator(k), 0.0),
                A_ub=np.array([[*(-_indicator(j)), 0.0] for j in others]) if others else None,
                b_ub=np.array([-(w[j] + level) for j in others]) if others else None,
                A_eq=np.array(a_eq),
                b_eq=np.array(b_eq),
                bounds=bounds,
                method="highs",
            )
            if not lifted.success or -float(lifted.fun) - w[k] <= level + tolerance:
                newly.append(k)
        if not newly:  # pragma: no cover - theory: some tight coalition is always fixed
            raise RuntimeError("nucleolus: no coalition could be fixed")
        for k in newly:
            fixed[k] = level
            free.remove(k)
        system = np.array([np.ones(3), *(_indicator(k) for k in fixed)])
        if np.linalg.matrix_rank(system) == len(PARTIES) or not free:
            rhs = np.array([grand, *(w[k] + e for k, e in fixed.items())])
            solution, *_ = np.linalg.lstsq(system, rhs, rcond=None)
            result: FloatArray = solution.astype(np.float64)
            return result


def core_split(p: CoordinationParams) -> CoreSplit:
    """The nucleolus of the core of v intersected with the floors, or why it is empty."""
    slopes = {i: p.value_of(i) / p.r_delta for i in PARTIES}
    floors = stage_floors(p)
    grand_slope, grand = coalition_parts(p, frozenset(PARTIES))
    # Intercepts: v_f(K) = max(v(K), sum of K's floors), all with slope m_K/(r+delta).
    w: dict[Coalition, float] = {}
    for k in PROPER:
        _, intercept = coalition_parts(p, k)
        w[k] = max(intercept, sum(floors[i].intercept for i in k))
    shortfall, collection = _balanced_shortfall(w, grand)
    floor_values = {i: floors[i].at(p.X0) for i in PARTIES}
    total = grand_slope * p.X0 + grand
    scale = max(1.0, abs(total))
    if shortfall > RELATIVE_TOLERANCE * scale:
        reason = (
            f"{collection} need {total + shortfall:.4g} but the stage-3 total is "
            f"{total:.4g}: short by {shortfall:.4g}, so no split leaves every party at "
            "least as well off as in its best of stages 1 and 2"
        )
        return CoreSplit(p.X0, total, floor_values, None, shortfall, reason)
    intercepts = _nucleolus(w, grand)
    shares = tuple(
        PartyShare(i, slopes[i], float(b)) for i, b in zip(PARTIES, intercepts, strict=True)
    )
    split = Split("core", p.X0, (shares[0], shares[1], shares[2]))
    return CoreSplit(p.X0, total, floor_values, split, shortfall, None)


def settlement_reason(core: CoreSplit, fallback: Split) -> str:
    """Which split settles stage 3 and why, in one sentence, with the figures."""
    if core.split is not None:
        return (
            "the core split settles: it leaves every party at least as well off as in its "
            "best of stages 1 and 2, and no coalition could do better on its own"
        )
    below = [
        f"{party} {core.floors[party] - fallback.value(party):.4g} below its floor"
        for party in PARTIES
        if fallback.value(party) < core.floors[party]
    ]
    shortfall = f" (it leaves {', '.join(below)})" if below else ""
    return f"Shapley settles{shortfall}: there is no core split, {core.infeasible}"


def settling_split(p: CoordinationParams) -> Split:
    """The split stage 3 settles on: the core split where it exists, else Shapley
    (coordination-model.md: "settle on Shapley, saying so"; ``Split.method`` says which)."""
    core = core_split(p)
    return core.split if core.split is not None else shapley(p)
