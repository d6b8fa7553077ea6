"""Parameters of the coordination model (coordination-model.md, reference case).

Names follow the spec exactly (``a_M``, ``k_P``, ``X0`` ...) so a formula in the spec
and its code read the same; hence the naming-rule exemptions below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, model_validator

from carbonlink.config import PlantConfig
from carbonlink.coordination.model._money import UNDECLARED, MoneyUnit
from carbonlink.core.yamlfiles import StrictModel, load_yaml_model

__all__ = [
    "PARTIES",
    "CoordinationParams",
    "ParameterFile",
    "Party",
    "for_plant",
    "load_parameter_file",
    "load_params",
    "with_carbon_price",
    "without_carbon_price",
]

Party = Literal["M", "P", "G"]
#: Firm, platform, government: the order used in every table and tuple.
PARTIES: Final[tuple[Party, Party, Party]] = ("M", "P", "G")


class CoordinationParams(StrictModel):
    """One parameter set of the model (coordination-model.md, "Reference case").

    Rates, productivities and cost coefficients are strictly positive; the marginal
    values ``m_M``, ``m_P``, ``g`` may be zero but not negative (a negative value would
    ask for negative effort, which the model excludes) and at least one is positive.
    """

    r: float = Field(gt=0, description="discount rate per period")
    delta: float = Field(gt=0, description="decay rate of abatement capability per period")
    a_M: float = Field(gt=0, description="productivity of the firm's effort")  # noqa: N815
    a_P: float = Field(gt=0, description="productivity of the platform's effort")  # noqa: N815
    F: float = Field(ge=0, le=1, description="functional availability of digital tools")
    R: float = Field(ge=0, le=1, description="relational availability (data sharing)")
    eta: float = Field(ge=0, description="gain from shared data in stage 3")
    k_M: float = Field(gt=0, description="firm's effort cost coefficient")  # noqa: N815
    k_P: float = Field(gt=0, description="platform's effort cost coefficient")  # noqa: N815
    m_M: float = Field(ge=0, description="firm's value per tCO2e abated")  # noqa: N815
    m_P: float = Field(ge=0, description="platform's value per tCO2e abated")  # noqa: N815
    g: float = Field(ge=0, description="social value per tCO2e abated")
    mu: float = Field(ge=0, description="shadow cost of public funds")
    theta_max: float = Field(ge=0, lt=1, description="cap on a subsidy rate")
    X0: float = Field(default=0.0, ge=0, description="initial abatement capability")

    @model_validator(mode="after")
    def _some_value(self) -> CoordinationParams:
        if self.gs <= 0:
            raise ValueError("m_M + m_P + g must be positive: nobody values abatement")
        return self

    @property
    def gs(self) -> float:
        """Gs = g + m_M + m_P, the social value of a tCO2e (coordination-model.md, Flow payoffs)."""
        return self.g + self.m_M + self.m_P

    @property
    def sigma_shared(self) -> float:
        """sigma = 1 + eta*R, the stage-3 multiplier (coordination-model.md, Dynamics)."""
        return 1.0 + self.eta * self.R

    @property
    def r_delta(self) -> float:
        """r + delta: the rate at which one unit of inflow is worth m/(r+delta) per period."""
        return self.r + self.delta

    def value_of(self, party: Party) -> float:
        """Marginal value of abatement to a party: m_M, m_P, or g for the government."""
        return {"M": self.m_M, "P": self.m_P, "G": self.g}[party]


class ParameterFile(CoordinationParams):
    """A parameter file as written: the parameters and the money unit they are in."""

    money: MoneyUnit = Field(
        default=UNDECLARED, description="currency and scale of every amount (_money.py)"
    )

    def split(self) -> tuple[CoordinationParams, MoneyUnit]:
        """(the parameters alone, their money unit)."""
        params = CoordinationParams.model_validate(self.model_dump(exclude={"money"}))
        return params, self.money


def load_parameter_file(path: str | Path) -> tuple[CoordinationParams, MoneyUnit]:
    """Read a parameter file: its parameters, and the money unit it declares."""
    return load_yaml_model(path, ParameterFile).split()


def load_params(path: str | Path) -> CoordinationParams:
    """Read a policy parameter file; any problem is a ConfigError naming file and key."""
    return load_parameter_file(path)[0]


def for_plant(params: CoordinationParams, plant: PlantConfig) -> CoordinationParams:
    """A policy's parameters for one plant: its own dynamics and size, the policy's
    economics (values, rates, caps, sharing).

    ``a_M``, ``a_P``, ``F`` and ``delta`` come from the plant's ``simulation.abatement``:
    what its efforts achieve and how fast that fades. A plant's productivity relative to
    the policy's is its size (a small mill's effort buys a twentieth of a cement line's
    abatement), and the cost of a unit of effort scales with it too (``k_i`` x a_plant /
    a_policy): an effort unit means the same intensity of work at every plant. So efforts
    are comparable across plants while abatement, costs and payoffs scale with size, as
    the plant files' abatement settings assume. A zero in the plant file (no such route)
    keeps the policy's value, since the model needs it positive.
    """
    abate = plant.simulation.abatement
    own = {
        "a_M": abate.a_m,
        "a_P": abate.a_p,
        "F": abate.functional_availability,
        "delta": abate.delta,
    }
    updates = {k: v for k, v in own.items() if v > 0 and v != getattr(params, k)}
    if "a_M" in updates:
        updates["k_M"] = params.k_M * updates["a_M"] / params.a_M
    if "a_P" in updates:
        updates["k_P"] = params.k_P * updates["a_P"] / params.a_P
    return params.model_copy(update=updates) if updates else params


def with_carbon_price(params: CoordinationParams, price: float) -> CoordinationParams:
    """``params`` under a carbon price ``price`` per tCO2e, counted once for everyone.

    The firm pays the price on its remaining emissions, to the government (a carbon tax,
    or allowances the government auctions). Each tonne abated saves the firm the price
    and costs the government the same revenue, so m_M rises by it and g falls by it;
    Gs = g + m_M + m_P does not change: a price is a transfer, not a new value. What the
    firm pays on its baseline emissions does not depend on any decision; the backtest
    counts it as a payment from firm to government (``carbon_payment``). ``g`` may fall
    below 0 here (a price above the social value of a tonne), which is why this copy is
    not re-validated.
    """
    if price == 0:
        return params
    return params.model_copy(update={"m_M": params.m_M + price, "g": params.g - price})


def without_carbon_price(params: CoordinationParams, price: float) -> CoordinationParams:
    """The inverse of :func:`with_carbon_price`: the parameters before the price."""
    return with_carbon_price(params, -price)
