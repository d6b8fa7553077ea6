"""The three cooperation stages in closed form (coordination-model.md, Stages 1-3).

Each solver is a pure function of the parameters and returns a frozen
:class:`StageResult`. Because the state X enters every payoff linearly, optimal efforts
do not depend on X, so they are constants; re-solve whenever a parameter changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from carbonlink.abatement import effort_cost, inflow, steady_state
from carbonlink.coordination.model._params import CoordinationParams
from carbonlink.coordination.model._value import abatement_per_cost, stream_value

__all__ = [
    "STAGE_NAMES",
    "GovernmentObjective",
    "StageResult",
    "best_response_efforts",
    "stage1_nash",
    "stage2_government",
    "stage3_joint",
    "subsidised_stage",
    "subsidy_rate",
]

GovernmentObjective = Literal["welfare", "budget"]
BUDGET_VARIANT: Final = "budget-only government"

STAGE_NAMES: Final[dict[int, str]] = {
    1: "primary neutrality",
    2: "intermediate dependence",
    3: "advanced symbiosis",
}


@dataclass(frozen=True)
class StageResult:
    """Efforts, subsidies, abatement and values of one stage (at X0 = params.X0).

    ``V_M``, ``V_P``, ``V_G`` are what each party gets from its own flow payoff. In stage
    3 subsidies are internal transfers, so ``theta_*`` are 0, each party bears its own
    effort cost and the cooperative split (Shapley or Nash bargaining) redistributes
    ``total`` afterwards. ``resource_cost`` is the per-period effort cost society bears
    (subsidies weighted by 1 + mu); ``abatement_per_cost`` is X* per unit of it, the
    model's "abatement per unit cost" (it falls with the stage by construction: effort
    costs are quadratic). Carbon emission performance in the literature's sense is
    value added per tCO2e (``_measures``).
    """

    stage: int
    name: str
    theta_M: float  # noqa: N815 (spec names)
    theta_P: float  # noqa: N815
    E_M: float
    E_P: float
    sigma: float
    inflow: float
    X_ss: float
    V_M: float
    V_P: float
    V_G: float
    total: float
    resource_cost: float
    abatement_per_cost: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StageResult:
        """From ``asdict`` output, including a journal written before the ratio was
        renamed from ``efficiency``."""
        fields = dict(record)
        if "efficiency" in fields:
            fields.setdefault("abatement_per_cost", fields.pop("efficiency"))
        return cls(**fields)

    def decision(self) -> dict[str, float]:
        """The decision in the names everything outside the model uses (the wire's
        directives, the journal, the reports, the API): the one place where E_M is called
        effort_firm and theta_M subsidy_rate_firm."""
        return {
            "effort_firm": self.E_M,
            "effort_platform": self.E_P,
            "sigma": self.sigma,
            "subsidy_rate_firm": self.theta_M,
            "subsidy_rate_platform": self.theta_P,
        }

    def value(self, party: str) -> float:
        """V_M, V_P or V_G by party name ("M", "P", "G")."""
        return {"M": self.V_M, "P": self.V_P, "G": self.V_G}[party]


def best_response_efforts(
    p: CoordinationParams,
    theta_M: float = 0.0,  # noqa: N803
    theta_P: float = 0.0,  # noqa: N803
) -> tuple[float, float]:
    """Each firm's own-value-maximising effort given its subsidy rate (Stages 1 and 2).

    E_M = a_M*m_M / ((r+delta)*k_M*(1-theta_M)), E_P = a_P*F*m_P / ((r+delta)*k_P*(1-theta_P)):
    stage 1 is theta = 0; stage 2 divides stage 1 by (1 - theta).
    """
    e_m = p.a_M * p.m_M / (p.r_delta * p.k_M * (1.0 - theta_M))
    e_p = p.a_P * p.F * p.m_P / (p.r_delta * p.k_P * (1.0 - theta_P))
    return e_m, e_p


def subsidy_rate(p: CoordinationParams, m_i: float, objective: GovernmentObjective) -> float:
    """The government's subsidy rate for a party valuing abatement at ``m_i`` (Stage 2).

    welfare: theta* = (2*Gs - (2+mu)*m_i) / (2*Gs + mu*m_i);
    budget (maximise U_G only): theta* = (2g - (1+mu)*m_i) / (2g + (1+mu)*m_i).
    Both are clipped to [0, theta_max]. The objective is concave in 1/(1-theta), which
    is increasing in theta, so clipping the unconstrained optimum gives the constrained one.
    """
    if objective == "welfare":
        num = 2.0 * p.gs - (2.0 + p.mu) * m_i
        den = 2.0 * p.gs + p.mu * m_i
    else:
        num = 2.0 * p.g - (1.0 + p.mu) * m_i
        den = 2.0 * p.g + (1.0 + p.mu) * m_i
    # den == 0 only when the government and the party both value abatement at 0:
    # nothing to gain from a subsidy, so none is paid.
    theta = num / den if den > 0 else 0.0
    return min(max(theta, 0.0), p.theta_max)


def subsidised_stage(
    p: CoordinationParams,
    stage: int,
    theta_m: float,
    theta_p: float,
    name: str | None = None,
) -> StageResult:
    """Values when firms best-respond to given subsidies, no data sharing (sigma = 1)."""
    e_m, e_p = best_response_efforts(p, theta_m, theta_p)
    label = STAGE_NAMES[stage] if name is None else name
    return _stage_values(p, stage, label, theta_m, theta_p, e_m, e_p, sigma=1.0)


def _stage_values(
    p: CoordinationParams,
    stage: int,
    name: str,
    theta_m: float,
    theta_p: float,
    e_m: float,
    e_p: float,
    *,
    sigma: float,
) -> StageResult:
    """Each party's value of constant efforts under subsidy rates theta (0 in stage 3,
    where subsidies are internal transfers and so carry no mu loss)."""
    flow_in = inflow(sigma, p.a_M, p.a_P, p.F, e_m, e_p)
    cost_m = effort_cost(p.k_M, e_m)
    cost_p = effort_cost(p.k_P, e_p)
    # Flow payoffs (coordination-model.md, Flow payoffs): the government pays theta_i of
    # each cost and loses mu on every unit of public money.
    paid = theta_m * cost_m + theta_p * cost_p
    v_m = stream_value(p.m_M, p.X0, flow_in, (1.0 - theta_m) * cost_m, p.r, p.delta)
    v_p = stream_value(p.m_P, p.X0, flow_in, (1.0 - theta_p) * cost_p, p.r, p.delta)
    v_g = stream_value(p.g, p.X0, flow_in, (1.0 + p.mu) * paid, p.r, p.delta)
    x_ss = steady_state(flow_in, p.delta)
    resource = cost_m + cost_p + p.mu * paid
    return StageResult(
        stage=stage,
        name=name,
        theta_M=theta_m,
        theta_P=theta_p,
        E_M=e_m,
        E_P=e_p,
        sigma=sigma,
        inflow=flow_in,
        X_ss=x_ss,
        V_M=v_m,
        V_P=v_p,
        V_G=v_g,
        total=v_m + v_p + v_g,
        resource_cost=resource,
        abatement_per_cost=abatement_per_cost(x_ss, resource),
    )


def stage1_nash(p: CoordinationParams) -> StageResult:
    """Stage 1, primary neutrality: Nash efforts, no subsidy, no sharing.

    coordination-model.md, Stage 1.
    """
    return subsidised_stage(p, 1, 0.0, 0.0)


def stage2_government(
    p: CoordinationParams, objective: GovernmentObjective = "welfare"
) -> StageResult:
    """Stage 2, intermediate dependence: the government leads with subsidies, firms follow.

    ``objective="welfare"`` maximises W = U_G + pi_M + pi_P; ``"budget"`` maximises U_G
    alone (coordination-model.md, Stage 2).
    """
    theta_m = subsidy_rate(p, p.m_M, objective)
    theta_p = subsidy_rate(p, p.m_P, objective)
    result = subsidised_stage(p, 2, theta_m, theta_p)
    if objective == "budget":
        result = replace(result, name=f"{STAGE_NAMES[2]} ({BUDGET_VARIANT})")
    return result


def stage3_joint(p: CoordinationParams) -> StageResult:
    """Stage 3, advanced symbiosis: joint efforts maximise W with sigma = 1 + eta*R.

    E_M = sigma*a_M*Gs / ((r+delta)*k_M), E_P = sigma*a_P*F*Gs / ((r+delta)*k_P)
    (coordination-model.md, Stage 3). Subsidies are internal transfers, so the total
    carries no mu loss: total = Gs*X0/(r+delta) + (Gs*I/(r+delta) - sum_i k_i*E_i^2/2)/r.
    """
    sigma = p.sigma_shared
    e_m = sigma * p.a_M * p.gs / (p.r_delta * p.k_M)
    e_p = sigma * p.a_P * p.F * p.gs / (p.r_delta * p.k_P)
    return _stage_values(p, 3, STAGE_NAMES[3], 0.0, 0.0, e_m, e_p, sigma=sigma)
