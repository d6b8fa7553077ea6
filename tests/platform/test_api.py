"""The HTTP API: TestClient for the endpoints, one real uvicorn server read by pandas."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from carbonlink.config import Settings, load_config
from carbonlink.platform.recompute import recompute
from carbonlink.storage import SqliteStore, StoredReading
from carbonlink.web.api import create_app, serve
from tests.configs import write_config
from tests.servers import HOST, free_port
from tests.waiting import wait_for

T0 = 1_795_420_800_000  # 2026-11-23T08:00:00Z
MINUTE = 60_000
CEMENT, TEXTILES = "api-cement", "api-textiles"
READY_TIMEOUT_S = 30.0


def reading(plant: str, meter: str, unit: str, minute: int, value: float) -> StoredReading:
    return StoredReading(plant, meter, T0 + minute * MINUTE, value, unit, MINUTE, "measured", None)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[SqliteStore, Settings]]:
    """Two plants, 30 minutes of readings, emissions under the current factor sets."""
    settings = load_config(
        write_config(tmp_path, plants={CEMENT: "cement-01", TEXTILES: "textiles-01"})
    )
    store = SqliteStore(tmp_path / "store.sqlite")
    store.write(
        [reading(CEMENT, "kiln-coal", "t", m, 0.4) for m in range(1, 31)]
        + [reading(CEMENT, "grid-main", "kWh", m, 420.0) for m in range(1, 31)]
        + [reading(CEMENT, "clinker-output", "t", m, 3.5) for m in range(1, 31)]
        + [reading(TEXTILES, "boiler-coal", "t", m, 0.05) for m in range(1, 31)]
        + [reading(TEXTILES, "fabric-output", "t", m, 0.07) for m in range(1, 31)]
    )
    for plant in (CEMENT, TEXTILES):
        recompute(store, settings, plant, start_ms=None, end_ms=None)
    yield store, settings
    store.close()


@pytest.fixture
def client(world: tuple[SqliteStore, Settings]) -> TestClient:
    store, settings = world
    return TestClient(create_app(store, settings, health=lambda: {"received": 7, "lag_s": 0.5}))


def test_plants_meters_and_openapi(client: TestClient, world: tuple[SqliteStore, Settings]) -> None:
    plants = client.get("/api/v1/plants").json()
    assert [p["plant"] for p in plants] == [CEMENT, TEXTILES]
    assert plants[0]["factor_set"] == "ipcc2006-cn2023"
    assert plants[0]["factor_version"] == "2.0.0"
    assert plants[0]["gwp"] == "AR5"
    assert plants[0]["grid_region_applied"] == "CN-East"  # the set pins none
    meters = client.get(f"/api/v1/plants/{CEMENT}/meters").json()
    # In the plant file's order, every meter.
    assert [m["id"] for m in meters] == [m.id for m in world[1].plant(CEMENT).meters]
    assert {"kiln-coal", "grid-main", "clinker-output"} <= {m["id"] for m in meters}
    by_id = {m["id"]: m for m in meters}
    assert by_id["clinker-output"]["output"] is True
    assert by_id["kiln-coal"]["output"] is False
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/plants/{plant}/windows" in paths
    assert "/api/v1/totals" in paths


def test_series_as_json_and_csv(client: TestClient) -> None:
    params = {"meter": "kiln-coal", "field": "value", "start": "2026-11-23T08:10:00Z"}
    url = f"/api/v1/plants/{CEMENT}/series"
    records = client.get(url, params=params | {"end": str(T0 + 12 * MINUTE)}).json()
    assert [r["time"] for r in records] == ["2026-11-23T08:10:00.000Z", "2026-11-23T08:11:00.000Z"]
    assert [r["value"] for r in records] == [0.4, 0.4]
    assert [r["unit"] for r in records] == ["t", "t"]
    response = client.get(url, params=params | {"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    frame = pd.read_csv(io.StringIO(response.text))
    assert list(frame.columns) == ["time", "plant", "meter", "value", "unit"]
    assert len(frame) == 21  # 08:10 .. 08:30
    # An emission field is named as what it is, with its unit and the version counted.
    co2e = pd.DataFrame(client.get(url, params={"meter": "kiln-coal"}).json())
    assert list(co2e.columns) == [
        "time",
        "plant",
        "meter",
        "co2e_kg",
        "unit",
        "factor_set",
        "factor_version",
    ]
    assert set(co2e["unit"]) == {"kg CO2e"}
    assert set(co2e["factor_version"]) == {"2.0.0"}


def test_windows_add_up_to_the_series(client: TestClient) -> None:
    url = f"/api/v1/plants/{CEMENT}"
    series = pd.DataFrame(client.get(f"{url}/series").json())
    windows = pd.DataFrame(client.get(f"{url}/windows", params={"window": "15m"}).json())
    # Readings end 08:01..08:30: (08:00, 08:15] and (08:15, 08:30], 15 each.
    assert windows["window_start"].tolist() == [
        "2026-11-23T08:00:00.000Z",
        "2026-11-23T08:15:00.000Z",
    ]
    assert windows["readings"].tolist() == [45, 45]  # coal, grid, clinker
    assert windows["co2e_kg"].sum() == pytest.approx(series["co2e_kg"].sum())
    assert (windows["co2e_kg_lower95"] < windows["co2e_kg"]).all()
    assert (windows["co2e_kg_upper95"] > windows["co2e_kg"]).all()
    assert set(windows["factor_version"]) == {"2.0.0"}
    by_source = pd.DataFrame(
        client.get(f"{url}/windows", params={"window": "1h", "by": "source"}).json()
    )
    assert sorted(by_source["source"]) == ["electricity", "fuel", "process"]
    electricity = by_source.set_index("source").loc["electricity"]
    assert electricity["activity"] == pytest.approx(30 * 420.0)
    assert electricity["activity_unit"] == "kWh"


def test_kpis_and_totals(client: TestClient, world: tuple[SqliteStore, Settings]) -> None:
    store, _ = world
    kpis = client.get(f"/api/v1/plants/{TEXTILES}/kpis").json()
    assert len(kpis) == 1
    textiles = kpis[0]
    co2e_t = store.emissions(TEXTILES)["co2e_kg"].sum() / 1000
    assert textiles["total_tco2e"] == pytest.approx(co2e_t)
    assert textiles["output"] == pytest.approx(30 * 0.07)
    assert textiles["carbon_intensity"] == pytest.approx(co2e_t / (30 * 0.07))
    assert textiles["energy_share_other_bituminous_coal"] == pytest.approx(1.0)
    # 1.5 t of coal x 25.8 GJ/t
    assert textiles["energy_gj"] == pytest.approx(1.5 * 25.8)
    totals = pd.DataFrame(client.get("/api/v1/totals", params={"by": "plant"}).json())
    assert totals["plant"].tolist() == [CEMENT, TEXTILES]
    assert totals["co2e_t"].iloc[1] == pytest.approx(co2e_t)
    assert totals["factor_version"].tolist() == ["2.0.0", "2.0.0"]
    assert totals["co2e_t_lower95"].iloc[1] < co2e_t < totals["co2e_t_upper95"].iloc[1]
    # The KPI's interval and the total's agree: one number per fact.
    assert textiles["total_tco2e_lower95"] == pytest.approx(totals["co2e_t_lower95"].iloc[1])
    assert textiles["total_tco2e_upper95"] == pytest.approx(totals["co2e_t_upper95"].iloc[1])
    by_scope = pd.DataFrame(client.get("/api/v1/totals?by=scope&window=15m").json())
    assert set(by_scope["scope"]) == {1, 2}
    assert by_scope["co2e_kg"].sum() == pytest.approx(totals["co2e_kg"].sum())


def test_health_reports_the_providers_counters(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    assert body["ingestion"] == {"received": 7, "lag_s": 0.5}
    assert body["store"].startswith("sqlite:///")


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        (f"/api/v1/plants/{CEMENT}/series?field=bogus", "field"),
        (f"/api/v1/plants/{CEMENT}/series?start=yesterday", "start"),
        (f"/api/v1/plants/{CEMENT}/series?start=2026-11-23T08:00:00", "start"),  # no offset
        (f"/api/v1/plants/{CEMENT}/kpis?start=2000&end=1000", "end"),
        (f"/api/v1/plants/{CEMENT}/windows?window=7m", "window"),
        (f"/api/v1/plants/{CEMENT}/windows?by=colour", "by"),
        ("/api/v1/totals?format=xml", "format"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    client: TestClient, path: str, parameter: str
) -> None:
    response = client.get(path)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", parameter]
    assert error["msg"]


def test_unknown_plant_is_404_with_the_known_ones(client: TestClient) -> None:
    response = client.get("/api/v1/plants/nobody/kpis")
    assert response.status_code == 404
    assert response.json()["detail"] == f"no plant 'nobody' (known: {CEMENT}, {TEXTILES})"


def test_real_server_reads_straight_into_pandas(world: tuple[SqliteStore, Settings]) -> None:
    store, settings = world
    port = free_port()
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(create_app(store, settings), HOST, port))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # how the test stops it
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    base = f"http://{HOST}:{port}/api/v1"
    try:
        _wait_until_up(f"{base}/health")
        windows = pd.read_json(f"{base}/plants/{CEMENT}/windows?window=15m&by=scope")
        assert list(windows.columns[:2]) == ["window_start", "scope"]
        assert len(windows) == 4  # two windows x scopes 1 and 2
        series = pd.read_csv(f"{base}/plants/{CEMENT}/series?format=csv", parse_dates=["time"])
        assert len(series) == 90
        assert windows["co2e_kg"].sum() == pytest.approx(series["co2e_kg"].sum())
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=READY_TIMEOUT_S)
    assert not thread.is_alive()
    assert task.cancelled()


def _wait_until_up(url: str) -> None:
    wait_for(
        lambda: httpx.get(url, trust_env=False).status_code == httpx.codes.OK,
        f"{url} to answer", READY_TIMEOUT_S, ignoring=(httpx.TransportError,),
    )  # fmt: skip
