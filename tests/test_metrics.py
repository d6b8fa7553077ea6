"""Prometheus metrics of the real processes: `carbonlink platform` (on its HTTP API),
`carbonlink agent` and `carbonlink coordinate` (on the port their config names), scraped
after real messages went through Mosquitto: a refused reading and then a valid canary."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from carbonlink import wire
from carbonlink.core.clock import wall_clock_ms
from tests.configs import REPO_CONFIG, write_config
from tests.servers import MosquittoServer, free_port
from tests.test_end_to_end import mosquitto_pub
from tests.waiting import wait_for

PIPELINE_DASHBOARD = REPO_CONFIG / "grafana" / "dashboards" / "carbonlink-pipeline.json"
DEADLINE_S = 120.0  # generous: the machine is shared, and three processes start


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``: (name, sorted labels) -> value; empty if not answering."""
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def until(check: Callable[[], object], what: str) -> object:
    return wait_for(check, what, DEADLINE_S)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def services(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> Iterator[tuple[str, dict[str, str]]]:
    plant = f"{topic_prefix}-cement"
    config = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=mosquitto_private.url,
        client_id=f"platform-{topic_prefix}",
    )  # fmt: skip
    ports = {name: free_port() for name in ("platform", "agent", "coordinator")}
    services_yaml = yaml.safe_load(config.read_text())
    services_yaml["agent"]["metrics_port"] = ports["agent"]
    services_yaml.setdefault("coordination", {})["metrics_port"] = ports["coordinator"]
    services_yaml["platform"]["memory_trim_s"] = 0.2  # trims within the test's seconds
    # glibc's allocator, which the trims act on (jemalloc, the default where it is
    # installed, needs none: tests/test_allocator.py).
    services_yaml["platform"]["allocator"] = "system"
    config.write_text(yaml.safe_dump(services_yaml))
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    carbonlink = [sys.executable, "-m", "carbonlink"]
    common = ["--config", str(config), "--broker", mosquitto_private.url]
    processes = [
        subprocess.Popen([*carbonlink, "platform", *common, "--store", store,
                          "--http", f"127.0.0.1:{ports['platform']}"]),
        subprocess.Popen([*carbonlink, "agent", *common, "--plant", plant]),
        subprocess.Popen([*carbonlink, "coordinate", *common, "--store", store,
                          "--policy", str(REPO_CONFIG / "policies" / "stage3.yaml"),
                          "--ledger", str(tmp_path / "journal.sqlite")]),
    ]  # fmt: skip
    urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    try:
        yield plant, urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        codes = [process.wait(timeout=30) for process in processes]
        assert codes == [0, 0, 0]


def test_processes_count_what_went_through_the_broker(
    services: tuple[str, dict[str, str]], mosquitto_private: MosquittoServer
) -> None:
    plant, urls = services
    until(lambda: value(scrape(urls["agent"]), "carbonlink_agent_connected", plant=plant),
          "the agent's metrics, connected")  # fmt: skip
    until(lambda: value(scrape(urls["platform"]), "carbonlink_platform_connected"),
          "the platform's metrics, subscribed")  # fmt: skip
    topic = f"carbonlink/v1/{plant}/meters/kiln-coal"
    now = wire.format_timestamp(wall_clock_ms() - 60_000)
    # Hostile first: a unit the meter does not measure in. Then the valid canary.
    mosquitto_pub(mosquitto_private, topic, '{"v":1,"unit":"furlong","kind":"interval",'
                  f'"samples":[{{"ts":"{now}","value":0.38}}]}}')  # fmt: skip
    mosquitto_pub(mosquitto_private, topic, '{"v":1,"unit":"t","kind":"interval",'
                  f'"samples":[{{"ts":"{now}","value":0.38}}]}}')  # fmt: skip

    platform = until(
        lambda: (
            (s := scrape(urls["platform"]))
            and value(s, "carbonlink_platform_readings_stored_total") >= 1
            and s
        ),
        "the canary to be stored",
    )
    assert isinstance(platform, dict)
    assert value(platform, "carbonlink_platform_messages_total") >= 1
    assert value(platform, "carbonlink_store_write_seconds_count") >= 1
    assert value(platform, "carbonlink_store_write_seconds_sum") > 0
    assert value(platform, "carbonlink_platform_spill_readings") == 0
    assert ("carbonlink_platform_intake_readings", ()) in platform
    # Freed memory is handed back to the OS while the platform runs (glibc here).
    trimmed = until(
        lambda: value(scrape(urls["platform"]), "carbonlink_platform_memory_trims_total") >= 2,
        "the platform to trim its heap",
    )
    assert trimmed
    assert value(scrape(urls["platform"]), "carbonlink_platform_memory_trim_seconds_total") > 0

    agent = until(
        lambda: (
            (s := scrape(urls["agent"]))
            and value(s, "carbonlink_agent_readings_forwarded_total", plant=plant) >= 1
            and s
        ),
        "the agent to forward the canary",
    )
    assert isinstance(agent, dict)
    assert value(agent, "carbonlink_agent_readings_received_total", plant=plant) == 2
    assert value(agent, "carbonlink_agent_readings_rejected_total", plant=plant,
                 reason=wire.Reason.WRONG_UNIT) == 1  # fmt: skip
    assert value(agent, "carbonlink_agent_outbox_readings", plant=plant) == 0
    # The platform hears the agent's refusal from its retained status, by reason.
    until(lambda: value(scrape(urls["platform"]), "carbonlink_readings_rejected_total",
                        at="agent", reason=wire.Reason.WRONG_UNIT) == 1,
          "the platform to count the agent's refusal")  # fmt: skip

    coordinator = until(
        lambda: (
            (s := scrape(urls["coordinator"]))
            and value(s, "carbonlink_coordinator_directives_total", plant=plant) >= 1
            and s
        ),
        "the coordinator's first directive",
    )
    assert isinstance(coordinator, dict)
    age = value(coordinator, "carbonlink_coordinator_directive_age_seconds", plant=plant)
    assert 0 <= age < DEADLINE_S + 60

    # The Grafana pipeline dashboard asks only for what these processes expose.
    exposed = {name for samples in (platform, agent, coordinator) for name, _ in samples}
    exposed |= {name for name, _ in scrape(urls["platform"])}
    dashboard = json.loads(PIPELINE_DASHBOARD.read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"carbonlink_\w+", target["expr"])
    }
    assert asked, "no metrics in the pipeline dashboard"
    assert asked <= exposed, f"asked for but not exposed: {sorted(asked - exposed)}"
