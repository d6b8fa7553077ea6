"""The money unit of a parameter set: every amount the model reports is in it.

The per-tCO2e parameters (m_M, m_P, g, a carbon price, energy prices) are in this unit
per tCO2e, and the effort costs k_i E_i^2 / 2 in this unit per model period, so every
value, payoff, subsidy and transfer comes out in it, and a public cost per tonne in it
per tCO2e. A parameter file declares it once (``money: {currency: CNY, scale: 1000}``:
1.0 means CNY 1,000), and a policy inherits it from its parameters.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from carbonlink.core.yamlfiles import StrictModel

__all__ = ["UNDECLARED", "MoneyUnit"]

_PREFIXES: Final[dict[float, tuple[str, str]]] = {
    1.0: ("", ""),
    1e3: ("k", "thousand "),
    1e6: ("M", "million "),
    1e9: ("bn ", "billion "),
}


class MoneyUnit(StrictModel):
    """``scale`` units of ``currency`` (an ISO 4217 code) make one model money unit."""

    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. CNY"
    )
    scale: float = Field(default=1.0, gt=0, description="currency units per model unit")

    @property
    def label(self) -> str:
        """Short, for table headers and axes: ``kCNY``; ``money units`` when undeclared."""
        if self.currency is None:
            return "money units"
        prefix = _PREFIXES.get(self.scale)
        if prefix is not None:
            return f"{prefix[0]}{self.currency}"
        return f"{self.scale:g} {self.currency}"

    @property
    def long(self) -> str:
        """In words: ``thousand CNY``."""
        if self.currency is None:
            return "model money units (no currency declared)"
        prefix = _PREFIXES.get(self.scale)
        if prefix is not None:
            return f"{prefix[1]}{self.currency}"
        return f"units of {self.scale:g} {self.currency}"

    @property
    def per_t(self) -> str:
        """The unit of a value per tonne: ``kCNY/tCO2e``."""
        return f"{self.label}/tCO2e"

    def as_record(self) -> dict[str, object]:
        return {
            "currency": self.currency,
            "scale": self.scale,
            "label": self.label,
            "long": self.long,
            "per_t": self.per_t,
        }


#: A parameter set that does not say what its money is.
UNDECLARED: Final = MoneyUnit()
