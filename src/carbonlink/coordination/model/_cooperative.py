"""Splitting the stage-3 joint value: Shapley value and Nash bargaining
(coordination-model.md, Stage 3).

Every split is returned as a value *linear in X* per party, phi_i(X) = slope*X +
intercept, because the settlement flows of a streaming system need phi_i' (see
``_settlement``). Both splits are exactly linear: coalition values are linear in X and
the Shapley value is linear in the game; the Nash threat point (stage 2 values) is
linear in X and the surplus over it does not depend on X.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from carbonlink.abatement import effort_cost, inflow
from carbonlink.coordination.model._params import PARTIES, CoordinationParams, Party
from carbonlink.coordination.model._stages import best_response_efforts, stage2_government

__all__ = [
    "Coalition",
    "PartyShare",
    "Split",
    "coalition_parts",
    "coalition_value",
    "nash_bargaining",
    "shapley",
    "shapley_values",
]

Coalition = frozenset[Party]


@dataclass(frozen=True)
class PartyShare:
    """phi_i(X) = slope*X + intercept: party i's share of the joint value from state X."""

    party: Party
    slope: float
    intercept: float

    def at(self, x: float) -> float:
        return self.slope * x + self.intercept


@dataclass(frozen=True)
class Split:
    """A division of the stage-3 value among M, P, G, evaluated at ``x0``."""

    method: str
    x0: float
    shares: tuple[PartyShare, PartyShare, PartyShare]

    def share(self, party: Party) -> PartyShare:
        return next(s for s in self.shares if s.party == party)

    def value(self, party: Party) -> float:
        """phi_party(X0)."""
        return self.share(party).at(self.x0)

    @property
    def values(self) -> dict[Party, float]:
        return {s.party: s.at(self.x0) for s in self.shares}

    @property
    def total(self) -> float:
        return sum(s.at(self.x0) for s in self.shares)


def coalition_parts(p: CoordinationParams, members: Coalition) -> tuple[float, float]:
    """(slope, intercept) of v(K) as a function of the starting state X.

    K maximises the sum of its members' payoffs, i.e. values abatement at m_K (the sum
    of its members' m, g for G). Members' efforts are chosen at that weight; non-members
    keep their stage-1 efforts; sigma = 1 + eta*R only when both M and P are in K
    (sharing needs both ends of the data link). The government has no effort of its
    own: inside K its subsidies are transfers between members and cancel, outside K it
    pays none (a coalition without G gets no subsidy), so v(K) carries no mu loss.
    """
    if not members:
        return 0.0, 0.0
    m_k = sum(p.value_of(i) for i in members)
    sigma = p.sigma_shared if {"M", "P"} <= members else 1.0
    e1_m, e1_p = best_response_efforts(p)
    # First-order condition of m_K*sigma*a_i*E_i/(r+delta) - k_i*E_i^2/2 per member.
    e_m = sigma * p.a_M * m_k / (p.r_delta * p.k_M) if "M" in members else e1_m
    e_p = sigma * p.a_P * p.F * m_k / (p.r_delta * p.k_P) if "P" in members else e1_p
    cost = (effort_cost(p.k_M, e_m) if "M" in members else 0.0) + (
        effort_cost(p.k_P, e_p) if "P" in members else 0.0
    )
    flow_in = inflow(sigma, p.a_M, p.a_P, p.F, e_m, e_p)
    slope = m_k / p.r_delta
    intercept = (m_k * flow_in / p.r_delta - cost) / p.r
    return slope, intercept


def coalition_value(p: CoordinationParams, members: Iterable[Party]) -> float:
    """v(K) at X0 (coordination-model.md, Stage 3, Shapley value)."""
    slope, intercept = coalition_parts(p, frozenset(members))
    return slope * p.X0 + intercept


def shapley_values(
    players: tuple[Party, ...], v: Callable[[Coalition], float]
) -> dict[Party, float]:
    """Shapley value of the game ``v``: each player's average marginal contribution.

    phi_i = sum over K not containing i of |K|!(n-|K|-1)!/n! * (v(K+i) - v(K)).
    """
    n = len(players)
    result: dict[Party, float] = {}
    for player in players:
        others = [q for q in players if q != player]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for group in combinations(others, size):
                coalition = frozenset(group)
                total += weight * (v(coalition | {player}) - v(coalition))
        result[player] = total
    return result


def shapley(p: CoordinationParams) -> Split:
    """Shapley split of the grand-coalition (stage 3) value, linear in X.

    The slope game v'(K) = m_K/(r+delta) is additive, so each slope is m_i/(r+delta);
    the intercepts are the Shapley value of the intercept game.
    """
    parts: dict[Coalition, tuple[float, float]] = {}

    def part(members: Coalition) -> tuple[float, float]:
        if members not in parts:
            parts[members] = coalition_parts(p, members)
        return parts[members]

    slopes = shapley_values(PARTIES, lambda k: part(k)[0])
    intercepts = shapley_values(PARTIES, lambda k: part(k)[1])
    return _split("shapley", p.X0, slopes, intercepts)


def nash_bargaining(p: CoordinationParams, weights: Mapping[Party, float] | None = None) -> Split:
    """Nash bargaining over the stage-3 value with stage 2 (welfare variant) as threat point.

    Maximising prod_i (phi_i - d_i)^w_i subject to sum_i phi_i = V3 gives
    phi_i = d_i + w_i * (V3 - sum_j d_j): the surplus is shared in proportion to the
    bargaining weights (equal by default). Threat values d_i are linear in X with slope
    m_i/(r+delta) and V3 has slope Gs/(r+delta), so the surplus does not depend on X.
    """
    w = dict(weights) if weights is not None else dict.fromkeys(PARTIES, 1.0)
    if set(w) != set(PARTIES) or any(x < 0 for x in w.values()) or sum(w.values()) <= 0:
        raise ValueError(f"weights must be non-negative for M, P, G and not all 0, got {w}")
    weight_sum = sum(w.values())
    threat = stage2_government(p, "welfare")
    joint_slope, joint_intercept = coalition_parts(p, frozenset(PARTIES))
    surplus = joint_slope * p.X0 + joint_intercept - threat.total
    threat_values = {"M": threat.V_M, "P": threat.V_P, "G": threat.V_G}
    slopes = {i: p.value_of(i) / p.r_delta for i in PARTIES}
    intercepts = {
        i: threat_values[i] + w[i] / weight_sum * surplus - slopes[i] * p.X0 for i in PARTIES
    }
    return _split("nash", p.X0, slopes, intercepts)


def _split(
    method: str, x0: float, slopes: Mapping[Party, float], intercepts: Mapping[Party, float]
) -> Split:
    m, pl, g = (PartyShare(i, slopes[i], intercepts[i]) for i in PARTIES)
    return Split(method=method, x0=x0, shares=(m, pl, g))
