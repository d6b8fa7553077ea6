"""Prometheus metrics: one registry per service, read from the service's own counters
when scraped, so the hot paths keep counting as they did (``prometheus-client``).

The platform serves its registry at ``/metrics`` on its HTTP API; an agent and the
coordinator serve theirs on the port their config names (``metrics_port``, off by
default) through ``MetricsServer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "CollectorRegistry",
    "Metric",
    "MetricsServer",
    "counter",
    "exposition",
    "gauge",
    "registry_reading",
    "store_latency",
]

# Store writes take ~1 ms (SQLite, small batch) to seconds (a large InfluxDB batch, or
# one waiting out a compaction): buckets span both.
STORE_LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class _Reading(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return list(self._read())


def registry_reading(read: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A registry of its own (never the global one: the demo runs several services in
    one process) whose metrics ``read`` gives at every scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reading(read))
    return registry


def counter(
    name: str, documentation: str, samples: Mapping[tuple[str, ...], float] | float,
    labels: tuple[str, ...] = (),
) -> CounterMetricFamily:  # fmt: skip
    """A counter family: one value, or one per tuple of ``labels`` values."""
    family = CounterMetricFamily(name, documentation, labels=list(labels) or None)
    if isinstance(samples, Mapping):
        for values, value in sorted(samples.items()):
            family.add_metric(list(values), value)
    elif not labels:
        family = CounterMetricFamily(name, documentation, value=samples)
    return family


def gauge(
    name: str, documentation: str, samples: Mapping[tuple[str, ...], float] | float,
    labels: tuple[str, ...] = (),
) -> GaugeMetricFamily:  # fmt: skip
    family = GaugeMetricFamily(name, documentation, labels=list(labels) or None)
    if isinstance(samples, Mapping):
        for values, value in sorted(samples.items()):
            family.add_metric(list(values), value)
    elif not labels:
        family = GaugeMetricFamily(name, documentation, value=samples)
    return family


def store_latency(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "carbonlink_store_write_seconds",
        "Time one store write (a batch) took, seconds",
        registry=registry,
        buckets=STORE_LATENCY_BUCKETS_S,
    )


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (``CONTENT_TYPE_LATEST``)."""
    return generate_latest(registry)


class MetricsServer:
    """``/metrics`` on host:port, served from a thread of its own until ``close``."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port = int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
