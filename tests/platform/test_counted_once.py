"""One number per reading on every surface, after a recompute stored a second version.

`carbonlink recompute --factor-set ipcc2006-cn-ets` keeps the cn-ets figures beside the
plant's own (its config names ipcc2006-cn2023). Every surface must then count each
reading once, under the plant's current factor set version, and say which: the store's
totals, `carbonlink query`, the API (series, windows, KPIs, totals) and, on InfluxDB,
the Grafana dashboard's own queries (read from config/grafana, with the factor set the
real `carbonlink platform` process recorded at its start). Run on SQLite and on a real
InfluxDB 1.x.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from carbonlink.config import Settings, load_config
from carbonlink.storage import Store, StoredReading, open_store
from carbonlink.web.api import create_app
from tests.configs import write_config
from tests.servers import InfluxDBServer, MosquittoServer
from tests.waiting import exited, wait_for

REPO: Final = Path(__file__).resolve().parents[2]
CARBONLINK: Final = str(Path(sys.executable).parent / "carbonlink")
DASHBOARD: Final = REPO / "config" / "grafana" / "dashboards" / "carbonlink-plant.json"
PLANT: Final = "once-cement"
T0: Final = 1_795_420_800_000  # 2026-11-23T08:00:00Z
MINUTE: Final = 60_000
MINUTES: Final = 120
END: Final = T0 + (MINUTES + 1) * MINUTE
DEADLINE_S: Final = 30.0
# (meter, unit, value per minute): cement-01's meters, steady.
METERS: Final = (
    ("kiln-coal", "t", 0.37),
    ("kiln-biomass", "t", 0.02),
    ("kiln-petcoke", "t", 0.075),
    ("grid-main", "kWh", 420.0),
    ("clinker-output", "t", 3.47),
)


@dataclass(frozen=True)
class Backend:
    url: str
    influxdb: InfluxDBServer | None = None  # with the database name, for Grafana's queries
    database: str = ""


@pytest.fixture(params=["sqlite", "influxdb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(f"sqlite:///{tmp_path / 'store.sqlite'}")
    server: InfluxDBServer = request.getfixturevalue("influxdb")
    database: str = request.getfixturevalue("influx_database")
    return Backend(server.store_url(database), server, database)


@pytest.fixture
def world(tmp_path: Path, backend: Backend, mosquitto: MosquittoServer) -> Settings:
    config = write_config(
        tmp_path / "config",
        plants={PLANT: "cement-01"},
        broker_url=mosquitto.url,
        store=backend.url,
        client_id=f"once-{tmp_path.name}",
    )
    store = open_store(backend.url)
    store.write(
        [
            StoredReading(PLANT, meter, T0 + m * MINUTE, value, unit, MINUTE, "measured", None)
            for m in range(1, MINUTES + 1)
            for meter, unit, value in METERS
        ]
    )
    store.close()
    return load_config(config)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [CARBONLINK, *args, "--config", str(settings.path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def _platform_records_its_assignment(settings: Settings, store: Store) -> None:
    """Start the real platform process and wait until it has recorded the assignment."""
    log = settings.path.parent / "platform.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CARBONLINK, "platform", "--config", str(settings.path)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: PLANT in store.assigned_factors(), "the platform to record the assignment",
            DEADLINE_S, abort_if=exited(process), detail=log.read_text,
        )  # fmt: skip
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)


def _grafana(server: InfluxDBServer, database: str, versions: tuple[str, str]) -> dict[str, Any]:
    """Run the dashboard's queries as Grafana would over [T0, END]."""
    dashboard = json.loads(DASHBOARD.read_text())
    interval_ms = 15 * MINUTE

    def sub(query: str, factor_set: str = "", version: str = "") -> str:
        return (
            query.replace("$timeFilter", f"time >= {T0}ms AND time <= {END}ms")
            .replace("$__interval_ms", str(interval_ms))
            .replace("$__interval", f"{interval_ms}ms")
            .replace("$plant", PLANT)
            .replace("$factor_set", factor_set)
            .replace("$factor_version", version)
        )

    def rows(query: str) -> list[tuple[dict[str, str], list[Any]]]:
        result = server.query(database, query)["results"][0]
        return [(s.get("tags", {}), v) for s in result.get("series", []) for v in s["values"]]

    variables = {v["name"]: v["query"] for v in dashboard["templating"]["list"]}
    chosen = {
        name: rows(sub(variables[name]))[0][1][1] for name in ("factor_set", "factor_version")
    }
    assert (chosen["factor_set"], chosen["factor_version"]) == versions
    panels = {p["id"]: p for p in dashboard["panels"]}
    out: dict[str, Any] = {"variables": chosen}
    for panel_id, key in ((11, "total"), (2, "by_source"), (3, "by_scope"), (12, "band")):
        out[key] = {
            t["alias"]: rows(sub(t["query"], *versions)) for t in panels[panel_id]["targets"]
        }
    out["interval_ms"] = interval_ms
    return out


def test_every_surface_counts_each_reading_once(world: Settings, backend: Backend) -> None:
    settings = world
    span = ["--start", str(T0), "--end", str(END)]
    own = _cli(settings, "recompute", "--plant", PLANT, *span)
    assert "ipcc2006-cn2023 2.0.0" in own.stdout
    other = _cli(settings, "recompute", "--plant", PLANT, *span, "--factor-set", "ipcc2006-cn-ets")
    assert "kept beside" in other.stdout  # the CLI says the cn-ets figures do not count
    versions = settings.factor_versions()
    assert versions[PLANT] == ("ipcc2006-cn2023", "2.0.0")

    store = open_store(backend.url)
    try:
        _platform_records_its_assignment(settings, store)
        readings = MINUTES * len(METERS)
        counted = store.emissions(PLANT, factor_set="ipcc2006-cn2023", factor_version="2.0.0")
        beside = store.emissions(PLANT, factor_set="ipcc2006-cn-ets", factor_version="2.0.0")
        assert len(counted) == len(beside) == readings  # both versions are stored
        truth = float(counted["co2e_kg"].sum())
        assert float(beside["co2e_kg"].sum()) != pytest.approx(truth)
        # The store's totals: once, under the version asked.
        (row,) = store.totals(versions).to_dict("records")
        assert (row["readings"], row["factor_version"]) == (readings, "2.0.0")
        assert row["co2e_kg"] == pytest.approx(truth)

        # `carbonlink query`: one row per reading, the field named with its unit.
        query = _cli(settings, "query", "--plant", PLANT, "--format", "csv")
        table = pd.read_csv(io.StringIO(query.stdout))
        assert len(table) == readings
        assert table["co2e_kg"].sum() == pytest.approx(truth)
        assert set(table["factor_version"]) == {"2.0.0"}
        assert "counted once per reading under ipcc2006-cn2023 2.0.0" in query.stderr
        cn_ets = _cli(settings, "query", "--plant", PLANT, "--format", "csv",
                      "--factor-set", "ipcc2006-cn-ets")  # fmt: skip
        ets = pd.read_csv(io.StringIO(cn_ets.stdout))
        assert len(ets) == readings
        assert ets["co2e_kg"].sum() == pytest.approx(float(beside["co2e_kg"].sum()))

        # The API: series, windows, KPIs and totals give the same number, and its interval.
        client = TestClient(create_app(store, settings))
        base = f"/api/v1/plants/{PLANT}"
        series = pd.DataFrame(client.get(f"{base}/series").json())
        assert len(series) == readings
        assert series["co2e_kg"].sum() == pytest.approx(truth)
        windows = pd.DataFrame(client.get(f"{base}/windows", params={"window": "1h"}).json())
        assert windows["co2e_kg"].sum() == pytest.approx(truth)
        windows15 = pd.DataFrame(client.get(f"{base}/windows", params={"window": "15m"}).json())
        (kpis,) = client.get(f"{base}/kpis").json()
        assert kpis["total_tco2e"] == pytest.approx(truth / 1000)
        (total,) = client.get("/api/v1/totals").json()
        assert total["co2e_t"] == pytest.approx(truth / 1000)
        assert total["factor_version"] == "2.0.0"
        assert kpis["total_tco2e_lower95"] == pytest.approx(total["co2e_t_lower95"])
        assert kpis["total_tco2e_upper95"] == pytest.approx(total["co2e_t_upper95"])
        assert total["co2e_t_lower95"] < total["co2e_t"] < total["co2e_t_upper95"]
    finally:
        store.close()

    if backend.influxdb is None:
        return
    # Grafana, on the same InfluxDB: its variables name what the platform recorded.
    grafana = _grafana(backend.influxdb, backend.database, versions[PLANT])
    ((_, (_, total_t)),) = grafana["total"]["CO2e"]
    assert total_t == pytest.approx(truth / 1000)
    ((_, (_, lower_half)),) = grafana["total"]["u95 lower"]
    ((_, (_, upper_half)),) = grafana["total"]["u95 upper"]
    assert total_t - lower_half == pytest.approx(kpis["total_tco2e_lower95"])
    assert total_t + upper_half == pytest.approx(kpis["total_tco2e_upper95"])
    hours = grafana["interval_ms"] / 3_600_000
    for panel in ("by_source", "by_scope"):
        (rates,) = grafana[panel].values()
        assert sum(v[1] for _, v in rates) * hours == pytest.approx(truth / 1000)
    band = grafana["band"]
    assert sum(v[1] for _, v in band["CO2e"]) == pytest.approx(truth / 1000)
    # The windowed band: each 15-minute window's interval matches the API's windows
    # (the dashboard groups by time(15m, 1ms): the platform's interval-end rule).
    lows = [c - h for (_, (_, c)), (_, (_, h)) in zip(band["CO2e"], band["u95 lower"], strict=True)]
    assert lows == pytest.approx((windows15["co2e_kg_lower95"] / 1000).tolist())
    assert not any(math.isnan(x) for x in lows)
