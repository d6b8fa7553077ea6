"""The README's short tour, run as a newcomer pastes it.

The commands are read from README.md's "A short tour" block and run word for word in a
copy of the repository's ``config/`` (so ``var/`` lands in a temporary folder), with
three substitutions a test cannot avoid: the broker address (a private Mosquitto on a
free port instead of 127.0.0.1:1883, in the commands and in the config), the HTTP
ports, and ``.venv/bin/carbonlink`` (the interpreter running the tests). The
long-running ``coordinate`` commands are left out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pandas as pd
import pytest

from carbonlink.core.clock import wall_clock_ms
from carbonlink.platform import open_store
from tests.servers import MosquittoServer, free_port
from tests.waiting import wait_for

REPO: Final = Path(__file__).resolve().parents[1]
CARBONLINK: Final = str(Path(sys.executable).parent / "carbonlink")
DEADLINE_S: Final = 60.0
# The agent stamps readings with its wall clock and the platform stores them as they come;
# a backfill ending now leaves its newest reading at most one sample period ahead of the
# moment it was published, never hours.
FUTURE_TOLERANCE_MS: Final = 5_000


def tour_commands() -> list[str]:
    """The short tour's commands, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    block = text.split("## A short tour", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def _adapt(command: str, broker_port: int, ports: dict[str, int]) -> str:
    command = command.replace(".venv/bin/carbonlink", shlex.quote(CARBONLINK))
    command = command.replace("127.0.0.1:1883", f"127.0.0.1:{broker_port}")
    command = re.sub(r"-h 127\.0\.0\.1 ", f"-h 127.0.0.1 -p {broker_port} ", command)
    for old, new in ports.items():
        command = command.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    return command


class Tour:
    def __init__(self, work: Path, broker: MosquittoServer) -> None:
        self.work = work
        self.ports = {"8080": free_port(), "8081": free_port()}
        self.broker = broker
        self.background: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "CARBONLINK_CONFIG": ""}
        self.env.pop("CARBONLINK_CONFIG")

    def command(self, fragment: str) -> str:
        (found,) = [c for c in tour_commands() if fragment in c]
        return _adapt(found, self.broker.port, self.ports)

    def run(self, fragment: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        # A shell, as the reader's: the commands hold $(date ...) and shell quoting.
        done = subprocess.run(  # noqa: S602
            self.command(fragment), shell=True, cwd=self.work, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, f"{fragment}: {done.stderr[-2000:]}"
        return done

    def start(self, fragment: str, log: str) -> None:
        command = self.command(fragment).removesuffix("&").strip()
        with (self.work / log).open("wb") as out:
            self.background.append(
                subprocess.Popen(
                    shlex.split(command), cwd=self.work, env=self.env, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip

    def get(self, url: str) -> Any:
        def answer() -> Any:
            response = httpx.get(url, timeout=5, trust_env=False)
            return response.json() if response.status_code == httpx.codes.OK else None

        return wait_for(
            answer, f"{url} to answer", DEADLINE_S,
            ignoring=(httpx.TransportError,), detail=self.logs,
        )  # fmt: skip

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in self.work.glob("*.log"))

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in self.background:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def tour(tmp_path: Path, mosquitto_private: MosquittoServer) -> Iterator[Tour]:
    shutil.copytree(REPO / "config", tmp_path / "config")
    # Commands without --broker use the config's broker: the private one, never a broker
    # this machine may run on 127.0.0.1:1883.
    services = tmp_path / "config" / "carbonlink.yaml"
    services.write_text(
        services.read_text().replace(
            "url: mqtt://127.0.0.1:1883", f"url: mqtt://127.0.0.1:{mosquitto_private.port}"
        )
    )
    session = Tour(tmp_path, mosquitto_private)
    yield session
    session.stop()


def _until(check: Any, what: str, shown: Any = None) -> Any:
    return wait_for(check, what, DEADLINE_S, detail=shown)


def _counters_add_up(agent: dict[str, Any]) -> None:
    counters = agent["counters"]
    assert counters["received"] == (
        counters["accepted"] + sum(counters["rejected"].values()) + counters["baselines"]
    ), counters


def test_the_factor_commands_print_what_the_readme_says(tour: Tour) -> None:
    assert "other_bituminous_coal" in tour.run("factors list").stdout
    coal = tour.run("factors compute other_bituminous_coal 1 t --format json").stdout
    # 1 t x 25.8 GJ/t x (94,600 + 10 x 28 + 1.5 x 265) kg/TJ, AR5 plain CH4 GWP.
    assert '"co2e_kg": 2458.1595' in coal
    grid = tour.run("factors compute electricity 1000 kWh --region CN-East --year 2023").stdout
    assert "550" in grid  # MEE/NBS 2023 East China grid, 0.5500 kg/kWh


@pytest.mark.slow
def test_the_short_tour_stores_everything_in_the_past_and_counts_once(tour: Tour) -> None:
    agent_url = f"http://127.0.0.1:{tour.ports['8081']}/view"
    platform_url = f"http://127.0.0.1:{tour.ports['8080']}/api/v1"
    tour.start("carbonlink platform --broker", "platform.log")
    tour.start("carbonlink agent --plant cement-01", "agent.log")
    tour.get(f"{platform_url}/health")
    _until(lambda: tour.get(agent_url)["connected"], "the agent to connect")

    before_ms = wall_clock_ms()
    # The plants' last day with faults on the wire: a backfill ending now, no clock_skew.
    tour.run("--speed 1440 --duration 1d --faults")
    after_ms = wall_clock_ms()
    # 1,440 minutes x 5 meters, less the 10 minutes of the injected dropout.
    view = _until(
        lambda: (v := tour.get(agent_url))["counters"]["received"] >= 1440 * 5 - 10 and v,
        "the fault day to reach the agent",
        lambda: tour.get(agent_url)["counters"],
    )
    counters = view["counters"]
    _counters_add_up(view)
    assert "clock_skew" not in counters["rejected"], counters
    # Only the injected faults are refused: the out-of-order readings and the spikes.
    assert set(counters["rejected"]) <= {"out_of_order", "implausible"}, counters
    assert sum(counters["rejected"].values()) < 20, counters
    health = _until(
        lambda: (
            (h := tour.get(f"{platform_url}/health"))["ingestion"]["stored"] >= counters["accepted"]
            and h
        ),
        "the platform to store what the agent accepted",
    )["ingestion"]
    # One definition of "rejected": the totals by reason, by plant and by stage agree.
    assert sum(health["rejected"].values()) == sum(health["rejected_by_plant"].values())
    assert sum(health["rejected"].values()) == sum(health["rejected_at"].values())

    query = tour.run("carbonlink query --store sqlite:///var/carbonlink.sqlite").stdout
    table = pd.read_csv(pd.io.common.StringIO(query))
    assert list(table.columns) == [
        "time",
        "plant",
        "meter",
        "co2e_kg",
        "unit",
        "factor_set",
        "factor_version",
    ]
    assert len(table) == table[["time", "meter"]].drop_duplicates().shape[0]  # once each
    assert set(table["unit"]) == {"kg CO2e"}
    kpis = tour.get(f"{platform_url}/plants/cement-01/kpis")[0]
    assert kpis["total_tco2e"] == pytest.approx(table["co2e_kg"].sum() / 1000)
    assert kpis["total_tco2e_lower95"] < kpis["total_tco2e"] < kpis["total_tco2e_upper95"]

    # The backfill's newest reading, before the hand-sent one below (stamped later).
    backfill_last = _time_range(tour)[1]
    assert backfill_last <= after_ms + FUTURE_TOLERANCE_MS, "backfilled data in the future"

    # One reading by hand, as docs/wire-format.md describes: accepted, and counted once.
    accepted = tour.get(agent_url)["counters"]["accepted"]
    tour.run("mosquitto_pub -h 127.0.0.1 -q 1 -t carbonlink/v1/cement-01/meters/kiln-coal")
    sent_ms = wall_clock_ms()
    _until(
        lambda: tour.get(agent_url)["counters"]["accepted"] == accepted + 1,
        "the hand-sent reading",
        lambda: tour.get(agent_url)["counters"],
    )
    assert "3 advanced symbiosis" in tour.run("policy solve --params").stdout

    tour.stop()
    first, last = _time_range(tour)
    assert first >= before_ms - 24 * 3600 * 1000 - 60_000
    assert last <= sent_ms + FUTURE_TOLERANCE_MS, "data in the future"


def _time_range(tour: Tour) -> tuple[int, int]:
    store = open_store(f"sqlite:///{tour.work / 'var' / 'carbonlink.sqlite'}", read_only=True)
    try:
        return store.time_range("cement-01") or (0, 0)
    finally:
        store.close()


def test_query_of_a_mistyped_store_fails_and_creates_nothing(tour: Tour) -> None:
    done = subprocess.run(
        [CARBONLINK, "query", "--store", "sqlite:///typo/x.sqlite", "--plant", "cement-01"],
        cwd=tour.work, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no store at typo/x.sqlite" in done.stderr
    assert not (tour.work / "typo").exists()
    unknown = subprocess.run(
        [CARBONLINK, "query", "--plant", "cement-99"],
        cwd=tour.work, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unknown.returncode != 0
    assert "no plant 'cement-99' (known: cement-01" in unknown.stderr
