"""Recompute under a changed factor set: both versions stored, totals in the hand ratio."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from carbonlink.config import load_config
from carbonlink.platform.recompute import recompute
from carbonlink.storage import SqliteStore, StoredReading
from carbonlink.web.api import create_app
from tests.configs import write_config

T0 = 1_795_420_800_000
MINUTE = 60_000
PLANT = "rc-cement"
FACTOR_SET = "ipcc2006-cn2023"
# Other bituminous coal, IPCC 2006 1.A.2 defaults per TJ: 94,600 kg CO2, 10 kg CH4,
# 1.5 kg N2O; AR5 GWP 28 (CH4) and 265: 94,600 + 280 + 397.5 kg CO2e.
CO2E_PER_TJ_V1 = 94_600 + 10 * 28 + 1.5 * 265
CO2_OVERRIDE_PER_TJ = 2 * 94_600
CO2E_PER_TJ_V2 = CO2_OVERRIDE_PER_TJ + 10 * 28 + 1.5 * 265
V1, V2 = "2.0.0", "2.1.0"
TJ_PER_T = 0.0258  # net calorific value 25.8 GJ/t


def coal(minute: int, tonnes: float) -> StoredReading:
    return StoredReading(
        PLANT, "kiln-coal", T0 + minute * MINUTE, tonnes, "t", MINUTE, "measured", None
    )


def test_recompute_writes_a_new_version_beside_the_old(tmp_path: Path) -> None:
    config = write_config(tmp_path, plants={PLANT: "cement-01"})
    store = SqliteStore(tmp_path / "store.sqlite")
    store.write([coal(m, t) for m, t in ((1, 1.0), (2, 2.0), (3, 0.5), (4, 9.0))])
    store.write(
        [
            StoredReading(
                PLANT, "clinker-output", T0 + 5 * MINUTE, 5.0, "t", MINUTE, "measured", None
            )
        ]
    )

    first = recompute(store, load_config(config), PLANT, start_ms=T0, end_ms=T0 + 4 * MINUTE)
    assert (first.factor_version, first.readings, first.skipped) == (V1, 3, 0)
    assert first.co2e_kg == pytest.approx(3.5 * TJ_PER_T * CO2E_PER_TJ_V1)

    factor_file = tmp_path / "factors" / f"{FACTOR_SET}.yaml"
    changed = yaml.safe_load(factor_file.read_text())
    changed["version"] = V2
    changed["overrides"] = {
        "other_bituminous_coal": {
            "co2": {"value": CO2_OVERRIDE_PER_TJ, "unit": "kg/TJ"},
            "source": "test: twice the IPCC default",
        }
    }
    factor_file.write_text(yaml.safe_dump(changed))
    settings = load_config(config)

    second = recompute(store, settings, PLANT, start_ms=T0, end_ms=T0 + 4 * MINUTE)
    assert (second.factor_version, second.readings) == (V2, 3)
    assert second.co2e_kg / first.co2e_kg == pytest.approx(CO2E_PER_TJ_V2 / CO2E_PER_TJ_V1)

    v1 = store.emissions(PLANT, factor_set=FACTOR_SET, factor_version=V1)
    v2 = store.emissions(PLANT, factor_set=FACTOR_SET, factor_version=V2)
    assert v1["co2e_kg"].sum() == pytest.approx(first.co2e_kg)  # untouched
    assert v2["co2e_kg"].sum() == pytest.approx(second.co2e_kg)
    assert store.count_readings(PLANT) == 5  # activity rewritten as it was, not duplicated

    # The API answers with the config's current version unless told otherwise.
    client = TestClient(create_app(store, settings))
    url = f"/api/v1/plants/{PLANT}/kpis"
    now = client.get(url).json()[0]
    before = client.get(url, params={"factor_version": V1}).json()[0]
    assert now["factor_version"] == V2
    assert now["total_tco2e"] == pytest.approx(second.co2e_kg / 1000)
    assert before["total_tco2e"] == pytest.approx(first.co2e_kg / 1000)
    assert now["output"] == 5.0
    store.close()


def test_recompute_of_an_unknown_factor_set_is_a_config_error(tmp_path: Path) -> None:
    from carbonlink.errors import ConfigError

    settings = load_config(write_config(tmp_path, plants={PLANT: "cement-01"}))
    store = SqliteStore(tmp_path / "store.sqlite")
    with pytest.raises(ConfigError):
        recompute(store, settings, PLANT, start_ms=None, end_ms=None, factor_set="nope")
    with pytest.raises(ConfigError, match="no plant"):
        recompute(store, settings, "nobody", start_ms=None, end_ms=None)
    store.close()
