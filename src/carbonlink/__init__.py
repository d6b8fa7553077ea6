"""carbonlink: factory carbon monitoring over an emulated industrial internet platform.

Data flows simulator -> MQTT -> agent -> MQTT -> platform -> storage; the subpackages
follow that order: :mod:`carbonlink.simulators`, :mod:`carbonlink.agent`,
:mod:`carbonlink.platform`, with :mod:`carbonlink.emissions` shared by the last two.
"""

from carbonlink.config import Settings, load_config
from carbonlink.errors import (
    CarbonlinkError,
    ConfigError,
    FactorLookupError,
    RejectedReading,
    StoreError,
    UnitError,
    UnknownActivityError,
)

__version__ = "0.1.0"

__all__ = [
    "CarbonlinkError",
    "ConfigError",
    "FactorLookupError",
    "RejectedReading",
    "Settings",
    "StoreError",
    "UnitError",
    "UnknownActivityError",
    "__version__",
    "load_config",
]
