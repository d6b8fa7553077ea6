"""carbonlink: factory carbon monitoring over an emulated industrial internet platform.

The public Python API is what this module exports (``__all__``), documented in
docs/python-api.md::

    import carbonlink as cl

    settings = cl.load_config("config/carbonlink.yaml")
    with cl.open_store("var/demo/demo.sqlite") as store:
        figures = cl.Figures(store, settings)
        figures.totals()                      # t CO2e per plant, counted once
        figures.windows("cement-01", "1h")    # hourly sums
    cl.solve(cl.load_params("config/coordination.yaml"))

Names load on first use, so ``import carbonlink`` stays light (no pandas, no numpy).
Data flows simulator -> MQTT -> agent -> MQTT -> platform -> storage, and the packages
are layered in that order (docs/architecture.md); anything not exported here is internal
and may change.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

# Public name -> the module that defines it; ``__all__`` lists the same names (a test
# keeps the two, the docs page and the modules in step).
_LAZY: dict[str, str] = {
    # configuration
    "Settings": "carbonlink.config",
    "load_config": "carbonlink.config",
    # stored figures
    "Store": "carbonlink.storage",
    "open_store": "carbonlink.storage",
    "Figures": "carbonlink.storage.figures",
    # emission factors
    "FactorLibrary": "carbonlink.emissions",
    "FactorSet": "carbonlink.emissions",
    # the coordination model
    "CoordinationParams": "carbonlink.coordination.model",
    "Solution": "carbonlink.coordination.model",
    "StageResult": "carbonlink.coordination.model",
    "load_parameter_file": "carbonlink.coordination.model",
    "load_params": "carbonlink.coordination.model",
    "solve": "carbonlink.coordination.model",
    "sweep": "carbonlink.coordination",
    # policies replayed on recorded data
    "BacktestResult": "carbonlink.coordination",
    "BacktestRun": "carbonlink.coordination",
    "Policy": "carbonlink.coordination",
    "load_policy": "carbonlink.coordination",
    "run_backtest": "carbonlink.coordination",
    # a seeded fleet, offline
    "run_offline": "carbonlink.simulators",
    # errors (the tree is in carbonlink.errors)
    "CarbonlinkError": "carbonlink.errors",
    "ConfigError": "carbonlink.errors",
    "FactorLookupError": "carbonlink.errors",
    "QueryError": "carbonlink.errors",
    "RejectedReading": "carbonlink.errors",
    "StoreError": "carbonlink.errors",
    "UnitError": "carbonlink.errors",
    "UnknownActivityError": "carbonlink.errors",
    "UnknownPlantError": "carbonlink.errors",
}

__all__ = [
    "BacktestResult",
    "BacktestRun",
    "CarbonlinkError",
    "ConfigError",
    "CoordinationParams",
    "FactorLibrary",
    "FactorLookupError",
    "FactorSet",
    "Figures",
    "Policy",
    "QueryError",
    "RejectedReading",
    "Settings",
    "Solution",
    "StageResult",
    "Store",
    "StoreError",
    "UnitError",
    "UnknownActivityError",
    "UnknownPlantError",
    "__version__",
    "load_config",
    "load_parameter_file",
    "load_params",
    "load_policy",
    "open_store",
    "run_backtest",
    "run_offline",
    "solve",
    "sweep",
]

if _typing.TYPE_CHECKING:
    from carbonlink.config import Settings, load_config
    from carbonlink.coordination import (
        BacktestResult,
        BacktestRun,
        Policy,
        load_policy,
        run_backtest,
        sweep,
    )
    from carbonlink.coordination.model import (
        CoordinationParams,
        Solution,
        StageResult,
        load_parameter_file,
        load_params,
        solve,
    )
    from carbonlink.emissions import FactorLibrary, FactorSet
    from carbonlink.errors import (
        CarbonlinkError,
        ConfigError,
        FactorLookupError,
        QueryError,
        RejectedReading,
        StoreError,
        UnitError,
        UnknownActivityError,
        UnknownPlantError,
    )
    from carbonlink.simulators import run_offline
    from carbonlink.storage import Store, open_store
    from carbonlink.storage.figures import Figures


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'carbonlink' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
