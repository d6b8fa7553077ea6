"""Per-period settlement of a cooperative split for a streaming system
(coordination-model.md, Stage 3, settlement).

Party i is entitled to the flow beta_i(t) = r*phi_i(X(t)) - phi_i' * dX/dt. Its
discounted sum from X(t) onwards is phi_i(X(t)), so paying beta_i every period delivers
the agreed split at every date (time consistency). Along the cooperative path
(dX/dt = I - delta*X) the beta_i add up to the joint flow payoff W(t), so
``transfer_i = beta_i - realised_i`` sums to zero when the realised own flows add up to
W(t) too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from carbonlink.coordination.model._cooperative import Split
from carbonlink.coordination.model._params import PARTIES, Party

__all__ = ["Settlement", "settle"]


@dataclass(frozen=True)
class Settlement:
    """One period's settlement: entitlement, transfer received (negative: paid), imbalance.

    ``imbalance`` = sum(beta) - sum(realised) before balancing. It is 0 when the stream
    follows the model; measured data (noisy dX/dt, flows off the model) make it non-zero,
    and it is then charged to the parties in proportion to their stakes phi_i' so the
    transfers still sum to zero exactly.
    """

    beta: dict[Party, float]
    transfer: dict[Party, float]
    imbalance: float


def settle(
    split: Split,
    r: float,
    x: float,
    dx_dt: float,
    realised: Mapping[Party, float],
) -> Settlement:
    """Settlement for one period given X(t), dX/dt and each party's realised own flow.

    ``realised[i]`` is what party i earned on its own this period (e.g. m_M*X - k_M*E_M^2/2
    for the firm, g*X for the government). Transfers are zero-sum by construction.
    """
    missing = [i for i in PARTIES if i not in realised]
    if missing:
        raise ValueError(f"realised flows missing for {', '.join(missing)}")
    beta = {s.party: r * s.at(x) - s.slope * dx_dt for s in split.shares}
    raw = {i: beta[i] - realised[i] for i in PARTIES}
    imbalance = sum(raw.values())
    slopes = {s.party: s.slope for s in split.shares}
    stake_total = sum(slopes.values())
    # Stakes phi_i' = m_i/(r+delta) are non-negative and sum to Gs/(r+delta) > 0; fall
    # back to equal shares only for a hand-built split with no stakes.
    shares = (
        {i: slopes[i] / stake_total for i in PARTIES}
        if stake_total > 0
        else dict.fromkeys(PARTIES, 1.0 / len(PARTIES))
    )
    transfer = {i: raw[i] - imbalance * shares[i] for i in PARTIES}
    return Settlement(beta=beta, transfer=transfer, imbalance=imbalance)
