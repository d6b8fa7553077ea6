"""One exception root for carbonlink, with structured attributes.

Every error a user can trigger (bad config, bad payload, unknown unit) derives from
:class:`CarbonlinkError`, so callers can catch one type and still read *why* from
attributes instead of parsing messages.

The tree::

    CarbonlinkError
    ├── BrokerConnectionError   the MQTT broker refused, failed or dropped the connection
    ├── ConfigError             a file, a key and what is wrong with it (at startup)
    ├── UnitError               a unit unknown or not convertible to what is needed
    ├── UnknownActivityError    no emission factor for an activity
    ├── FactorLookupError       a factor, but not for this region, year or set
    ├── RejectedReading         a refused payload or reading; ``reason`` is a stable code
    ├── StoreError              the storage backend failed; ``retryable`` says if retrying helps
    ├── QueryError (ValueError) a query parameter that makes no sense, named
    └── UnknownPlantError (KeyError) no configured plant with that id; the known ones named
"""

from __future__ import annotations

from pathlib import Path


class CarbonlinkError(Exception):
    """Root of every error raised on purpose by carbonlink."""


class BrokerConnectionError(CarbonlinkError):
    """The connection to the MQTT broker failed, was refused or was lost."""


class DeliveryProbeError(CarbonlinkError):
    """A subscription the broker accepted delivers nothing: the service refuses to run,
    because what the broker acknowledged to publishers would vanish."""

    def __init__(self, broker: str, subscription: str, reason: str) -> None:
        self.broker = broker
        self.subscription = subscription
        self.reason = reason
        super().__init__(f"broker {broker}: subscription {subscription!r}: {reason}")


class ConfigError(CarbonlinkError):
    """A configuration file is invalid: names the file, the key and what is wrong."""

    def __init__(self, path: str | Path | None, key: str, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.key = key
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{key}: {problem}")


class UnitError(CarbonlinkError):
    """A quantity's unit is unknown or cannot be converted to what is needed."""

    def __init__(self, unit: str, problem: str) -> None:
        self.unit = unit
        self.problem = problem
        super().__init__(f"unit {unit!r}: {problem}")


class UnknownActivityError(CarbonlinkError):
    """No emission factor exists for an activity (fuel, electricity, process...)."""

    def __init__(self, activity: str, known: tuple[str, ...] = ()) -> None:
        self.activity = activity
        self.known = known
        hint = f" (known: {', '.join(known)})" if known else ""
        super().__init__(f"unknown activity {activity!r}{hint}")


class FactorLookupError(CarbonlinkError):
    """A factor exists for the activity but not for the requested region, year or set."""

    def __init__(self, activity: str, problem: str) -> None:
        self.activity = activity
        self.problem = problem
        super().__init__(f"{activity}: {problem}")


class RejectedReading(CarbonlinkError):  # noqa: N818 (names the refused thing; travels in lists)
    """A payload or reading was refused; ``reason`` is a stable machine-readable code.

    Reasons are counted and dead-lettered under this code, so they must stay stable
    (see docs/wire-format.md for the list).
    """

    def __init__(self, reason: str, detail: str, *, meter: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.meter = meter
        super().__init__(f"{reason}: {detail}")


class StoreError(CarbonlinkError):
    """The storage backend failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class QueryError(CarbonlinkError, ValueError):
    """A query's parameter parsed but makes no sense (a time without a zone, an end before
    its start, an unknown field): names the parameter and the problem. The API answers
    it as a 422 on that parameter."""

    def __init__(self, parameter: str, problem: str) -> None:
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"{parameter}: {problem}")


class UnknownPlantError(CarbonlinkError, KeyError):
    """No configured plant has this id; ``known`` lists the ones that do."""

    def __init__(self, plant: str, known: list[str]) -> None:
        self.plant = plant
        self.known = known
        super().__init__(f"no plant {plant!r} (known: {', '.join(known)})")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
