"""The platform's allocator (``platform.allocator``; core.memory, docs/performance.md
"Flat memory"), checked on the real `carbonlink platform` process: by default it runs on
jemalloc where that is installed, in the process it was started as (same PID: a
supervisor's signals and the tests' pids still reach it), says so on /metrics, takes
telemetry through the broker and stops cleanly; ``system`` keeps glibc's; a value it does
not know, or ``jemalloc`` where there is none, stops it at startup with file, key and
problem. Whether jemalloc keeps memory flat is the soak's to say (`benchmarks/run`)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carbonlink import wire
from carbonlink.core import memory
from carbonlink.core.clock import wall_clock_ms
from tests.configs import write_config
from tests.servers import MosquittoServer, free_port
from tests.test_end_to_end import mosquitto_pub
from tests.test_metrics import scrape, until, value

needs_jemalloc = pytest.mark.skipif(
    memory.find_jemalloc() is None, reason="no libjemalloc.so.2 (scripts/install-services)"
)


def _config(tmp_path: Path, broker: MosquittoServer, plant: str, allocator: str) -> Path:
    config = write_config(
        tmp_path / "config", plants={plant: "cement-01"}, broker_url=broker.url,
        client_id=f"platform-{plant}",
    )  # fmt: skip
    services = yaml.safe_load(config.read_text())
    services["platform"]["allocator"] = allocator
    config.write_text(yaml.safe_dump(services))
    return config


def _platform(tmp_path: Path, config: Path, broker: MosquittoServer, port: int) -> list[str]:
    return [
        sys.executable, "-m", "carbonlink", "platform", "--config", str(config),
        "--broker", broker.url, "--store", f"sqlite:///{tmp_path / 'store.sqlite'}",
        "--http", f"127.0.0.1:{port}",
    ]  # fmt: skip


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("allocator", "expected"),
    [
        pytest.param("auto", "jemalloc", marks=needs_jemalloc),
        pytest.param("jemalloc", "jemalloc", marks=needs_jemalloc),
        ("system", "system"),
    ],
)
def test_the_platform_runs_on_the_allocator_it_is_configured_with(
    tmp_path: Path,
    topic_prefix: str,
    mosquitto_private: MosquittoServer,
    allocator: str,
    expected: str,
) -> None:
    plant = f"{topic_prefix}-cement"
    config = _config(tmp_path, mosquitto_private, plant, allocator)
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    process = subprocess.Popen(_platform(tmp_path, config, mosquitto_private, port))
    try:
        until(lambda: value(scrape(metrics), "carbonlink_platform_connected"), "subscribed")
        # Still the process that was started (exec, not a child), on the allocator asked for.
        assert ("libjemalloc" in _mapped(process.pid)) == (expected == "jemalloc")
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert (b"PYTHONMALLOC=malloc" in environ) == (expected == "jemalloc")
        samples = scrape(metrics)
        assert value(samples, "carbonlink_platform_allocator", allocator=expected) == 1
        # It takes telemetry as ever: a hostile message, then the canary.
        topic = wire.telemetry_topic(plant)
        now_ms = wall_clock_ms()
        canary = wire.TelemetryBatch(
            plant, f"agent-{plant}", 1, now_ms,
            (wire.Reading("kiln-coal", now_ms - 60_000, 0.38, "t", 60_000),),
        )  # fmt: skip
        mosquitto_pub(mosquitto_private, topic, b"\xff{not json")
        mosquitto_pub(mosquitto_private, topic, wire.encode_telemetry(canary))
        until(
            lambda: value(scrape(metrics), "carbonlink_platform_readings_stored_total") >= 1,
            "the canary stored",
        )
        refused = scrape(metrics)
        assert sum(v for (name, _), v in refused.items()
                   if name == "carbonlink_readings_rejected_total") >= 1  # fmt: skip
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


def test_an_unknown_allocator_stops_the_platform_at_startup(
    tmp_path: Path, topic_prefix: str, mosquitto_private: MosquittoServer
) -> None:
    config = _config(tmp_path, mosquitto_private, f"{topic_prefix}-cement", "tcmalloc")
    done = subprocess.run(
        _platform(tmp_path, config, mosquitto_private, free_port()),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert str(config) in done.stderr
    assert "allocator" in done.stderr
    assert "Traceback" not in done.stderr


def test_jemalloc_asked_for_where_there_is_none_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No machine here lacks it once scripts/install-services ran: the search is pointed
    # at an empty folder (the CLI turns this error into file, key and problem).
    monkeypatch.setattr(memory, "_LIBRARY_DIRS", ("/nonexistent",))
    monkeypatch.delenv(memory.ALLOCATOR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"libjemalloc\.so\.2 not found.*libjemalloc2"):
        memory.exec_with_jemalloc("jemalloc", ["platform"])
    memory.exec_with_jemalloc("auto", ["platform"])  # falls back: returns, nothing run
    memory.exec_with_jemalloc("system", ["platform"])
