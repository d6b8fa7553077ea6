"""Typed, immutable configuration: plants, their meters, and the services.

Everything is read once at startup. ``load_config`` validates each file on its own
(pydantic, ``extra="forbid"`` so a misspelt key is an error, not a silent default) and
then checks what crosses files: plant ids unique, factor sets known, and every meter's
activity and unit understood by the emission factor library.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from carbonlink import wire
from carbonlink.core.durations import Duration
from carbonlink.core.memory import DEFAULT_TRIM_INTERVAL_S, Allocator
from carbonlink.core.yamlfiles import StrictModel, load_yaml_model

if TYPE_CHECKING:
    from carbonlink.emissions import FactorSet
from carbonlink.errors import CarbonlinkError, ConfigError

DEFAULT_CONFIG_PATH = Path("config/carbonlink.yaml")
CONFIG_ENV_VAR = "CARBONLINK_CONFIG"

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Plant and meter ids appear in MQTT topics and storage tags: no wildcards, no slashes."""

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]

PLAUSIBILITY_MARGIN = 1.10
"""A reading may exceed its meter's rated draw by this margin before it is called
implausible: meters are calibrated to a few percent and intervals jitter."""
INTERVAL_PERIODS = 10.0
"""An interval meter's reading covers at most this many sample periods by default: a
meter that missed ticks may report the time since its last sample in one reading. Without
a bound, a huge amount over a huge interval would pass as a plausible low rate."""
MAX_RATED_PER_HOUR = 1e12
"""The largest rating a meter may have (a 1 GW plant draws 1e6 kWh an hour): it bounds
every accepted amount, so no sum of readings can overflow."""
# A meter that states no accuracy class is taken as +-5% of reading (95%): the default
# uncertainty the IPCC recommends for fossil-fuel combustion activity data when nothing
# better is known (Revised 1996 IPCC Guidelines, Reference Manual, Energy, "activity
# data uncertainties": 95% interval 0.95 to 1.05 times the value). Plant meters are
# usually better (belt weighers OIML R 50 classes 0.5-2, electricity meters IEC 62053
# classes 0.2S-1); state the class in the plant file.
DEFAULT_METER_ACCURACY_PCT = 5.0


class ReadingKind(StrEnum):
    INTERVAL = "interval"  # the amount used during the interval ending at the timestamp
    COUNTER = "counter"  # a cumulative register; the agent turns it into intervals


class MeterPayload(StrictModel):
    """What this meter's messages look like, when not carbonlink's envelope
    (docs/wire-format.md, "What a plant can connect")."""

    format: wire.PayloadFormat = Field(
        default=wire.PayloadFormat.ENVELOPE,
        description="envelope (carbonlink JSON), bare (one number, stamped on arrival) or "
        "json (JSONPaths below find the value and the timestamp)",
    )
    value: str | None = Field(default=None, description="JSONPath of the value (json)")
    ts: str | None = Field(
        default=None, description="JSONPath of the timestamp (json); absent: stamped on arrival"
    )
    ts_unit: wire.EpochUnit = Field(
        default=wire.EpochUnit.MS, description="What a numeric timestamp counts (s, ms, us, ns)"
    )

    @field_validator("value", "ts")
    @classmethod
    def _jsonpath(cls, path: str | None) -> str | None:
        return None if path is None else wire.check_jsonpath(path)

    @model_validator(mode="after")
    def _paths_fit_format(self) -> Self:
        if self.format is wire.PayloadFormat.JSON and self.value is None:
            raise ValueError("format json needs `value`: the JSONPath of the reading's value")
        if self.format is not wire.PayloadFormat.JSON and (self.value or self.ts):
            raise ValueError(f"`value` and `ts` paths apply to format json, not {self.format}")
        return self

    @property
    def mapping(self) -> wire.PayloadMapping:
        return wire.PayloadMapping(self.format, self.value, self.ts, self.ts_unit)


class MeterConfig(StrictModel):
    id: Identifier
    description: str = ""
    activity: str | None = Field(
        default=None, description="Emission factor library activity id; None for output-only"
    )
    output: bool = Field(default=False, description="Counts as the plant's production output")
    unit: str
    reading: ReadingKind = ReadingKind.INTERVAL
    sample_period_s: float = Field(default=60.0, gt=0)
    rated_per_hour: float = Field(
        gt=0, le=MAX_RATED_PER_HOUR, description="Physical ceiling, unit per hour"
    )
    max_interval_s: float | None = Field(
        default=None,
        gt=0,
        le=wire.MAX_INTERVAL_MS / 1000,
        description="Longest interval one reading may cover; default: ten sample periods "
        "(interval meters), a week (counters, whose intervals span the gaps between samples)",
    )
    nominal_per_hour: float = Field(gt=0, description="Draw at full production, unit per hour")
    counter_rollover: float | None = Field(default=None, gt=0)
    payload: MeterPayload = Field(
        default=MeterPayload(), description="How its messages look (default: the envelope)"
    )
    accuracy_pct: float = Field(
        default=DEFAULT_METER_ACCURACY_PCT,
        gt=0,
        le=100,
        description="Accuracy class: 95% half-width of a reading's error, % of reading",
    )
    # Simulation only (ignored by agent and platform):
    base_load: float = Field(
        default=0.15, ge=0, le=1, description="Share of nominal drawn whatever the output"
    )
    noise_sd: float = Field(default=0.01, ge=0, le=0.5, description="Relative sample noise")
    abatement_weight: float | None = Field(
        default=None, ge=0, description="Share of X this meter's draw absorbs; default: emissions"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.activity is None and not self.output:
            raise ValueError("a meter needs an `activity` (emission source) or `output: true`")
        if self.nominal_per_hour > self.rated_per_hour:
            raise ValueError("nominal_per_hour exceeds rated_per_hour")
        if self.counter_rollover is not None and self.reading is not ReadingKind.COUNTER:
            raise ValueError("counter_rollover only applies to `reading: counter`")
        return self

    @property
    def longest_interval_ms(self) -> int:
        """The longest interval one reading of this meter may cover (agent and platform)."""
        if self.max_interval_s is not None:
            return round(self.max_interval_s * 1000)
        if self.reading is ReadingKind.COUNTER:
            return wire.MAX_INTERVAL_MS
        return round(self.sample_period_s * INTERVAL_PERIODS * 1000)

    @property
    def ceiling_per_ms(self) -> float:
        """The most this meter can plausibly measure per millisecond."""
        return self.rated_per_hour * PLAUSIBILITY_MARGIN / 3_600_000

    def ceiling(self, duration_ms: int) -> float:
        """The most this meter can plausibly measure in ``duration_ms`` (computed as the
        platform's columnar path computes it, so both paths agree to the last bit)."""
        return self.ceiling_per_ms * duration_ms

    def plausibility(self, amount: float, duration_ms: int) -> str | None:
        """Why ``amount`` over ``duration_ms`` cannot be a reading of this meter, or None."""
        if duration_ms > self.longest_interval_ms:
            return (
                f"an interval of {duration_ms / 1000:g} s is longer than meter {self.id!r} "
                f"allows ({self.longest_interval_ms / 1000:g} s)"
            )
        if amount > self.ceiling(duration_ms):
            rate = amount / (duration_ms / 3_600_000)
            return f"{rate:.4g} {self.unit}/h exceeds rated {self.rated_per_hour:g} {self.unit}/h"
        return None


class ShiftConfig(StrictModel):
    """Production target by local time: a simulator load profile."""

    start_hour: float = Field(default=0.0, ge=0, lt=24)
    hours: float = Field(default=24.0, gt=0, le=24, description="Daily operating hours")
    level: float = Field(default=0.9, ge=0, le=1, description="Output while running")
    idle_level: float = Field(default=0.0, ge=0, le=1, description="Output outside shifts")
    weekend_level: float | None = Field(
        default=None, ge=0, le=1, description="Output on Sat/Sun; None: as weekdays"
    )
    daily_swing: float = Field(default=0.05, ge=0, le=0.5, description="Diurnal +-")
    seasonal_swing: float = Field(default=0.05, ge=0, le=0.5, description="Annual +-")
    seasonal_peak_day: int = Field(default=200, ge=1, le=366)
    ramp_hours: float = Field(default=1.0, gt=0, description="Idle to full output (start-up)")
    noise_sd: float = Field(default=0.02, ge=0, le=0.5, description="AR(1) output noise")
    noise_hours: float = Field(default=2.0, gt=0, description="AR(1) noise correlation time")


class DigitalConfig(StrictModel):
    """Digital/AI adoption: energy overhead first, savings later (inverted U in A)."""

    adoption: float = Field(default=0.0, ge=0, description="Adoption level A (AI-use units)")
    turning_point: float = Field(
        default=2.47, gt=0, description="A where emissions peak (literature: 1.86-3.62)"
    )
    peak_overhead: float = Field(
        default=0.03, ge=0, le=1, description="Extra energy at the turning point (fraction)"
    )
    max_saving: float = Field(default=0.3, ge=0, lt=1, description="Floor: 1 - max_saving")
    industrial_park: bool = False
    park_congestion: float = Field(
        default=0.06, ge=0, le=1, description="Share of digital savings lost in a park"
    )


class FuelSwitchConfig(StrictModel):
    """Part of X delivered by moving heat input from one fuel meter to a cleaner one
    (e.g. kiln coal to biomass), instead of burning less: the second abatement route."""

    from_meter: Identifier
    to_meter: Identifier
    share: float = Field(default=0.3, gt=0, le=1, description="Share of X delivered by switching")


class AbatementConfig(StrictModel):
    """Abatement capability X of the coordination model (defaults: its reference case)."""

    a_m: float = Field(default=1.0, ge=0, description="Productivity of firm effort E_M")
    a_p: float = Field(default=0.8, ge=0, description="Productivity of platform effort E_P")
    functional_availability: float = Field(default=0.6, ge=0, le=1, description="F")
    delta: float = Field(default=0.2, ge=0, description="Decay of X per period")
    period_s: float = Field(default=3600.0, gt=0, description="X is tCO2e per this period")
    scale: float = Field(default=1.0, gt=0, description="tCO2e per period for one model unit of X")
    max_reduction: float = Field(
        default=0.6, ge=0, le=1, description="Ceiling on a meter's reduction (fraction)"
    )
    fuel_switch: FuelSwitchConfig | None = None

    def tonnes(self, x: float, seconds: float) -> float:
        """tCO2e avoided over ``seconds`` at capability ``x`` (model units; X is
        ``scale`` tCO2e per ``period_s`` for each unit): the one conversion every
        surface uses between the model's X and measured tonnes."""
        return x * self.scale * seconds / self.period_s


class SimulationConfig(StrictModel):
    shift: ShiftConfig = ShiftConfig()
    digital: DigitalConfig = DigitalConfig()
    abatement: AbatementConfig = AbatementConfig()


class EconomicsConfig(StrictModel):
    """What a unit of the plant's output is worth: the price it sells at and the share
    of that which is value added (the rest buys inputs). Each figure names its source;
    carbon emission performance (value added per tCO2e) is computed from them."""

    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    output_price: float = Field(gt=0, description="per unit of the output meters' unit")
    output_price_source: str = Field(min_length=1)
    value_added_share: float = Field(gt=0, le=1, description="value added / gross output")
    value_added_share_source: str = Field(min_length=1)

    @property
    def value_added_per_unit(self) -> float:
        return self.output_price * self.value_added_share


SparkplugId = Annotated[str, Field(pattern=r"^[^+#/]{1,64}$")]
"""Sparkplug B group, edge node and device ids: topic levels, no MQTT wildcards."""


class SparkplugMetric(StrictModel):
    """One metric of an edge node (or of one of its devices) that is one of our meters."""

    name: str = Field(min_length=1, description="The metric's name in its birth certificate")
    device: SparkplugId | None = Field(default=None, description="Device id; absent: a node metric")
    meter: Identifier
    unit: str | None = Field(
        default=None,
        description="The metric's engineering unit, if another spelling than the meter's "
        "(checked through pint: `tonne` for a meter in `t`); absent: the meter's unit",
    )


class SparkplugConfig(StrictModel):
    """The plant's Sparkplug B edge node, read by its agent (docs/wire-format.md)."""

    group: SparkplugId
    edge_node: SparkplugId
    host_id: SparkplugId | None = Field(
        default=None,
        description="Our Sparkplug host application id: the agent publishes its STATE "
        "(spBv1.0/STATE/HOST_ID) for edge nodes that wait for their primary host",
    )
    metrics: tuple[SparkplugMetric, ...] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _one_meter_per_metric(
        cls, metrics: tuple[SparkplugMetric, ...]
    ) -> tuple[SparkplugMetric, ...]:
        seen: set[tuple[str | None, str]] = set()
        for metric in metrics:
            if (metric.device, metric.name) in seen:
                raise ValueError(f"metric {metric.name!r} of {metric.device or 'the node'} twice")
            seen.add((metric.device, metric.name))
        return metrics


class PlantConfig(StrictModel):
    id: Identifier
    name: str
    archetype: str
    timezone: str = "UTC"
    grid_region: str
    factor_set: str
    meters: tuple[MeterConfig, ...] = Field(min_length=1)
    simulation: SimulationConfig = SimulationConfig()
    economics: EconomicsConfig | None = None
    sparkplug: SparkplugConfig | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("meters")
    @classmethod
    def _unique_meters(cls, meters: tuple[MeterConfig, ...]) -> tuple[MeterConfig, ...]:
        seen: set[str] = set()
        for meter in meters:
            if meter.id in seen:
                raise ValueError(f"meter id {meter.id!r} appears twice")
            seen.add(meter.id)
        return meters

    @model_validator(mode="after")
    def _fuel_switch_meters(self) -> Self:
        switch = self.simulation.abatement.fuel_switch
        if switch is None:
            return self
        for name in (switch.from_meter, switch.to_meter):
            meter = self.meter(name)
            if meter is None or meter.activity is None or meter.output:
                raise ValueError(
                    f"simulation.abatement.fuel_switch: {name!r} is not a fuel meter of this plant"
                )
        return self

    @model_validator(mode="after")
    def _sparkplug_meters(self) -> Self:
        if self.sparkplug is None:
            return self
        for index, metric in enumerate(self.sparkplug.metrics):
            if self.meter(metric.meter) is None:
                raise ValueError(
                    f"sparkplug.metrics[{index}].meter: this plant has no meter {metric.meter!r}"
                )
        return self

    def meter(self, meter_id: str) -> MeterConfig | None:
        return next((m for m in self.meters if m.id == meter_id), None)


class BrokerConfig(StrictModel):
    url: str = "mqtt://127.0.0.1:1883"
    username_env: str | None = Field(default=None, description="Env var holding the username")
    password_env: str | None = Field(default=None, description="Env var holding the password")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        if not re.fullmatch(r"mqtts?://[^:/\s]+(:\d{1,5})?/?", value):
            raise ValueError("expected mqtt://HOST:PORT or mqtts://HOST:PORT")
        return value


class OutboxFullPolicy(StrEnum):
    REJECT_NEW = "reject_new"  # refuse new readings (dead-lettered as outbox_full)
    DROP_OLDEST = "drop_oldest"  # discard the oldest unsent readings to make room


class MqttVersion(StrEnum):
    V5 = "5"
    V311 = "3.1.1"


class Uplink(StrEnum):
    """How telemetry travels from the agents to the platform (docs/operations.md,
    "Which intake path")."""

    MQTT = "mqtt"  # the broker's telemetry topics; workers share them as an MQTT 5 group
    JETSTREAM = "jetstream"  # a replicated NATS JetStream stream, one durable pull consumer


NATS_URL_PATTERN = r"nats://[^:/\s]+(:\d{1,5})?/?"
# JetStream names: no dots (a dot separates subject tokens), no wildcards, no spaces.
JETSTREAM_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class JetStreamConfig(StrictModel):
    """The NATS JetStream path between agents and platform (``uplink: jetstream``)."""

    servers: tuple[str, ...] = Field(
        default=(), description="Seed URLs nats://HOST:PORT of the cluster's nodes"
    )
    stream: JETSTREAM_NAME = "CARBONLINK_TELEMETRY"
    subject_prefix: str = Field(
        default="carbonlink.v1",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Telemetry subjects are PREFIX.PLANT.telemetry",
    )
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="Stream replicas [default: 3 on a cluster of three or more nodes, else 1]",
    )
    # A re-sent batch carries the message id it had: JetStream drops it if the first copy
    # landed within this window. It must outlast the agent's longest retry of one batch
    # (a publish times out after publish_timeout_s, then backs off up to 10 s).
    duplicate_window_s: Duration = Field(default=600.0, gt=0)
    # What the stream keeps (limits retention): a platform stopped for less loses nothing.
    max_age_s: Duration = Field(default=7 * 86_400.0, gt=0)
    durable: JETSTREAM_NAME = Field(
        default="carbonlink-platform", description="The platform workers' one pull consumer"
    )
    # Longer than a worker's worst fetch-to-ack time (a full intake written through the
    # spill file: seconds), short enough that a dead worker's messages move on quickly.
    ack_wait_s: Duration = Field(default=30.0, gt=0)
    # A backstop only: workers park a message as poison on its 5th delivery (or on this
    # one, if smaller), so JetStream never gives up on a message silently before that.
    max_deliver: int = Field(default=8, ge=2)
    max_ack_pending: int = Field(
        default=20_000, ge=1, description="Unacknowledged messages across all workers"
    )
    fetch_batch: int = Field(default=256, ge=1, le=10_000, description="Messages per pull")
    publish_timeout_s: Duration = Field(default=5.0, gt=0)

    @field_validator("servers")
    @classmethod
    def _nats_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not re.fullmatch(NATS_URL_PATTERN, url):
                raise ValueError(f"expected nats://HOST:PORT, got {url!r}")
        return value


class MetricsEndpoint(StrictModel):
    """Where a service serves its Prometheus metrics (agents and the coordinator; the
    platform serves them on its HTTP API)."""

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics at http://metrics_host:PORT/metrics (0: any "
        "free port); unset: off",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics bind to")


class AgentConfig(MetricsEndpoint):
    uplink: Uplink = Field(default=Uplink.MQTT, description="mqtt or jetstream (see `jetstream`)")
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    # At most what the platform takes in one message: a larger batch would be refused.
    batch_max_readings: int = Field(default=500, ge=1, le=wire.MAX_TELEMETRY_READINGS)
    batch_max_delay_s: float = Field(default=0.5, gt=0)
    outbox_dir: str = Field(default="../var/outbox", description="Relative to the config file")
    outbox_max_readings: int = Field(default=2_000_000, ge=1)
    outbox_full_policy: OutboxFullPolicy = OutboxFullPolicy.REJECT_NEW
    mqtt_version: MqttVersion = Field(
        default=MqttVersion.V311,
        description="5 lets the agent keep a telemetry batch whose PUBACK says 'no matching "
        "subscribers' (nobody would ever get it) and send it again; 3.1.1 brokers (the "
        "demo's, NATS, RabbitMQ 3.10) cannot say so",
    )


class PlatformConfig(StrictModel):
    intake: Uplink = Field(
        default=Uplink.MQTT, description="Where telemetry is read: mqtt or jetstream"
    )
    store: str = "sqlite:///../var/carbonlink.sqlite"
    write_batch_max: int = Field(default=10_000, ge=1, description="Readings per store write")
    write_concurrency: int = Field(
        default=2, ge=1, le=16, description="Store writes in flight at once"
    )
    # Both bounds count what is received but not yet acknowledged (queued or being
    # written); past either, the platform stops reading its socket and the broker holds
    # the rest, so memory stays bounded whatever the load.
    queue_max_messages: int = Field(default=20_000, ge=1)
    queue_max_readings: int = Field(default=100_000, ge=1)
    mqtt_version: MqttVersion = Field(
        default=MqttVersion.V5, description="5 lets the platform set its receive window"
    )
    mqtt_receive_maximum: int = Field(
        default=20_000,
        ge=1,
        le=65_535,
        description="MQTT 5 Receive Maximum: unacknowledged messages the broker may send",
    )
    spill_path: str = Field(
        default="../var/platform-spill.sqlite", description="Relative to the config file"
    )
    client_id: str = "carbonlink-platform"
    startup_probe_s: Duration = Field(
        default=15.0,
        gt=0,
        description="At startup, how long the platform waits for a probe sent on "
        "carbonlink/v1/_probe/telemetry to come back through its telemetry subscription "
        "before it refuses to run",
    )
    audit_topics: bool = Field(
        default=True,
        description="Count what is published under carbonlink/v1/ where no service listens "
        "(one worker of a group audits: `carbonlink platform --audit`)",
    )
    memory_trim_s: Duration = Field(
        default=DEFAULT_TRIM_INTERVAL_S,
        ge=0,
        description="How often the platform hands the memory it freed back to the "
        "operating system (glibc malloc_trim; docs/performance.md, 'Flat memory'); 0: never",
    )
    allocator: Allocator = Field(
        default="auto",
        description="The platform's memory allocator. jemalloc keeps its memory flat when "
        "the cores are busy, where glibc's creeps up (docs/performance.md, 'Flat memory'): "
        "auto runs on jemalloc when it is installed (Debian: libjemalloc2), else on the "
        "system's; jemalloc refuses to start without it; system: glibc's, trimmed every "
        "memory_trim_s",
    )


class CoordinationConfig(MetricsEndpoint):
    """Defaults of ``carbonlink coordinate``; the platform's API reads the same journal."""

    journal: str = Field(
        default="../var/coordination-ledger.sqlite",
        description="Ledger of reports plus the coordinator's journal; relative to this file",
    )
    policy: str = Field(default="policies/stage3.yaml", description="Relative to this file")
    shadows: tuple[str, ...] = Field(
        default=(), description="Policies evaluated live beside the active one"
    )
    period_s: Duration = Field(default=900.0, gt=0, description="Reporting period")
    read_lag_s: Duration = Field(
        default=60.0, description="A period is read this long after it ends (data in flight)"
    )
    signing_key_env: str = Field(
        default="CARBONLINK_LEDGER_KEY",
        description="Env var with the Ed25519 private key that signs reports (PEM, or 64 "
        "hex digits; `carbonlink coordinate --keygen` makes one); unset: unsigned",
    )
    signing_key_file: str | None = Field(
        default=None,
        description="File with that private key, relative to this file, used when the "
        "variable is unset; never commit it",
    )
    public_key: str | None = Field(
        default=None,
        description="Public key file (PEM) verifiers check signatures with, relative to "
        "this file [default: the signing key's public half, where it is set]",
    )


class ApiConfig(StrictModel):
    """Who may use the HTTP API. State-changing endpoints always need the token and are
    disabled while the variable is unset; reads need it only when asked to."""

    token_env: str = Field(
        default="CARBONLINK_API_TOKEN", description="Env var holding the API's bearer token"
    )
    read_requires_token: bool = Field(
        default=False, description="Reads (and the dashboard) need the token too"
    )


class ServicesFile(StrictModel):
    """Shape of ``config/carbonlink.yaml``."""

    plants_dir: str = "plants"
    factors_dir: str = "factors"
    plants: tuple[str, ...] | None = Field(
        default=None, description="Plant ids to load; all files in plants_dir when absent"
    )
    broker: BrokerConfig = BrokerConfig()
    agent: AgentConfig = AgentConfig()
    platform: PlatformConfig = PlatformConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    api: ApiConfig = ApiConfig()
    # validate_default: the check below must run when the section is left out, too.
    jetstream: JetStreamConfig = Field(default_factory=JetStreamConfig, validate_default=True)

    @field_validator("jetstream")
    @classmethod
    def _jetstream_servers(cls, value: JetStreamConfig, info: ValidationInfo) -> JetStreamConfig:
        users = [
            f"{section}.{key}: jetstream"
            for section, key in (("agent", "uplink"), ("platform", "intake"))
            if getattr(info.data.get(section), key, None) is Uplink.JETSTREAM
        ]
        if users and not value.servers:
            raise ValueError(f"servers: no NATS server given, but {' and '.join(users)}")
        return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a carbonlink service needs, validated."""

    path: Path
    services: ServicesFile
    plants: dict[str, PlantConfig]
    factor_sets_dir: Path

    def beside_config(self, relative: str) -> Path:
        """Paths in the config file are relative to that file, not to the cwd."""
        return (self.path.parent / relative).resolve()

    def journal_path(self) -> Path:
        return self.beside_config(self.services.coordination.journal)

    def policies_dir(self) -> Path:
        """Where policy files live: beside the coordinator's default policy."""
        return self.beside_config(self.services.coordination.policy).parent

    def outbox_path(self, plant_id: str) -> Path:
        return self.beside_config(self.services.agent.outbox_dir) / f"{plant_id}.sqlite"

    def plant(self, plant_id: str) -> PlantConfig:
        try:
            return self.plants[plant_id]
        except KeyError:
            known = ", ".join(sorted(self.plants))
            raise ConfigError(
                self.path, "plants", f"no plant {plant_id!r} (known: {known})"
            ) from None

    def factor_set(self, plant_id: str | None = None, *, name: str | None = None) -> FactorSet:
        """The factor set ``name``, or else the plant's, as its file in the config says
        now: the one lookup every service uses."""
        if name is None:
            if plant_id is None:
                raise ValueError("name a plant or a factor set")
            name = self.plant(plant_id).factor_set
        return load_factor_set(self.factor_sets_dir / f"{name}.yaml")

    def factor_versions(self) -> dict[str, tuple[str, str]]:
        """Each plant's (factor set, version) as the config names it now: what every
        surface counts a plant's emissions under."""
        return {
            plant: (chosen.name, chosen.version)
            for plant in self.plants
            for chosen in (self.factor_set(plant),)
        }


FactorLookup = Callable[[str], "FactorSet"]
"""A plant id's factor set (``Settings.factor_set``): what services take instead of paths."""


def load_factor_set(path: str | Path) -> FactorSet:
    """A factor set file, read again only when it changes (recompute reads the new one)."""
    path = Path(path)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = -1  # missing: FactorSet.load says so, with the path
    return _factor_set_at(path, stamp)


@functools.lru_cache(maxsize=64)
def _factor_set_at(path: Path, stamp: int) -> FactorSet:
    from carbonlink.emissions import FactorSet

    return FactorSet.load(path)


def secret_from_env(var: str | None) -> str | None:
    """Secrets never live in the repo: config names an environment variable instead."""
    return os.environ.get(var) if var else None


def resolve_config_path(path: str | Path | None) -> Path:
    """``--config``, else ``$CARBONLINK_CONFIG``, else ``config/carbonlink.yaml``."""
    chosen = path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH
    return Path(chosen)


def load_config(path: str | Path | None = None) -> Settings:
    """Load and cross-check the whole configuration; raises ConfigError on any problem."""
    config_path = resolve_config_path(path)
    if not config_path.is_file():
        raise ConfigError(config_path, "<file>", "not found (pass --config FILE)")
    services = load_yaml_model(config_path, ServicesFile)
    base = config_path.parent
    plants_dir = base / services.plants_dir
    factors_dir = base / services.factors_dir
    if not plants_dir.is_dir():
        raise ConfigError(config_path, "plants_dir", f"{plants_dir} is not a directory")
    plants: dict[str, PlantConfig] = {}
    for plant_file in sorted(plants_dir.glob("*.yaml")):
        plant = load_yaml_model(plant_file, PlantConfig)
        if plant.id in plants:
            raise ConfigError(plant_file, "id", f"plant id {plant.id!r} is used by another file")
        _check_meters_against_library(plant_file, plant, factors_dir)
        plants[plant.id] = plant
    if services.plants is not None:
        missing = [p for p in services.plants if p not in plants]
        if missing:
            raise ConfigError(config_path, "plants", f"no plant file for {', '.join(missing)}")
        plants = {p: plants[p] for p in services.plants}
    if not plants:
        raise ConfigError(config_path, "plants_dir", f"no plant files in {plants_dir}")
    return Settings(config_path, services, plants, factors_dir)


def _check_meters_against_library(plant_file: Path, plant: PlantConfig, factors_dir: Path) -> None:
    # Imported here: the factor library loads its data on first use, which only
    # services that read plant files need.
    from carbonlink.emissions import FactorLibrary

    factor_set_path = factors_dir / f"{plant.factor_set}.yaml"
    if not factor_set_path.is_file():
        raise ConfigError(plant_file, "factor_set", f"no factor set file {factor_set_path}")
    factor_set = load_factor_set(factor_set_path)
    library = FactorLibrary.builtin()
    for index, meter in enumerate(plant.meters):
        if meter.activity is None:
            continue
        try:
            factor_set.resolve(library, meter.activity, meter.unit, region=plant.grid_region)
        except CarbonlinkError as exc:
            raise ConfigError(plant_file, f"meters[{index}]", str(exc)) from exc
