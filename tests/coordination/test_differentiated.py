"""Differentiated policies (terms per plant or per sector) and a carbon price counted
once: in the files, the backtest (the real CLI), and the coordinator on a real Mosquitto
whose ledger reports carry each plant's rates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Final

import aiomqtt
import pandas as pd
import pytest
from click.testing import CliRunner

from carbonlink.cli import main
from carbonlink.config import Settings
from carbonlink.coordination import (
    CoordinationParams,
    Coordinator,
    Journal,
    load_policy,
    stage1_nash,
    stage2_government,
    stage3_joint,
)
from carbonlink.coordination.model._params import with_carbon_price
from carbonlink.errors import ConfigError
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import open_store
from carbonlink.storage import Store
from tests.coordination.conftest import REFERENCE_YAML
from tests.coordination.recording import HOUR, START_MS, flat_settings, record
from tests.servers import MosquittoServer

CEMENT: Final = "df-cement"
MILL: Final = "df-mill"
QUARTER: Final = HOUR // 4
HOURS: Final = 3
#: Stage 2 with a higher social value for cement (the sector) and a cap of 0.5 there,
#: and fixed rates for one mill.
POLICY: Final = f"""
name: differentiated
params: {REFERENCE_YAML}
stage: 2
sectors:
  cement: {{params: {{g: 1.2}}, subsidy_cap: 0.5}}
plants:
  {MILL}: {{subsidy_rates: {{M: 0.3, P: 0.2}}}}
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    directory = tmp_path_factory.mktemp("differentiated")
    settings = flat_settings(directory / "config", {CEMENT: "cement-01", MILL: "textiles-01"})
    url = f"sqlite:///{directory / 'store.sqlite'}"
    store = open_store(url)
    record(settings, store, list(settings.plants.values()), START_MS, HOURS)
    store.close()
    return settings, url


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "differentiated.yaml"
    path.write_text(POLICY)
    return path


def test_terms_apply_per_sector_then_per_plant(
    recorded: tuple[Settings, str], policy_file: Path, reference: CoordinationParams
) -> None:
    settings, _ = recorded
    policy = load_policy(policy_file)
    policy.check_plants(settings.plants)
    cement = policy.params_for(settings.plant(CEMENT))
    assert (cement.g, cement.theta_max) == (1.2, 0.5)
    mill = policy.params_for(settings.plant(MILL))
    assert (mill.g, mill.theta_max) == (reference.g, reference.theta_max)
    assert policy.subsidy_rates_for(settings.plant(MILL)) == (0.3, 0.2)
    assert policy.subsidy_rates_for(settings.plant(CEMENT)) is None


@pytest.mark.parametrize(
    ("terms", "key", "problem"),
    [
        ("plants: {x: {params: {gee: 1}}}", "plants.x.params.gee", "not a parameter"),
        ("plants: {x: {params: {F: 2}}}", "plants.x.params.F", "less than or equal to 1"),
        ("sectors: {cement: {subsidy_cap: 0.3, subsidy_rates: {M: 0.4, P: 0.1}}}",
         "sectors.cement.subsidy_rates", "above the subsidy cap 0.3"),
    ],
)  # fmt: skip
def test_bad_terms_name_file_and_key(tmp_path: Path, terms: str, key: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nparams: {REFERENCE_YAML}\nstage: 2\n{terms}\n")
    with pytest.raises(ConfigError) as error:
        load_policy(path)
    assert error.value.key == key
    assert problem in str(error.value)


def test_unknown_plant_or_sector_fails_at_startup(
    recorded: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, _ = recorded
    for terms, key in (("plants: {nope: {}}", "plants.nope"), ("sectors: {glass: {}}",
                                                               "sectors.glass")):  # fmt: skip
        path = tmp_path / "typo.yaml"
        path.write_text(f"name: typo\nparams: {REFERENCE_YAML}\nstage: 2\n{terms}\n")
        with pytest.raises(ConfigError) as error:
            load_policy(path).check_plants(settings.plants)
        assert error.value.key == key


def test_backtest_applies_the_terms(
    recorded: tuple[Settings, str], policy_file: Path, tmp_path: Path
) -> None:
    settings, url = recorded
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "policy", "backtest", "--config", str(settings.path), "--store", url,
        "--policy", str(policy_file), "--out", str(out), "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    steps = pd.read_csv(out / "steps.csv")
    rates = steps.groupby("plant")[["theta_M", "theta_P"]].max()
    assert tuple(rates.loc[MILL]) == pytest.approx((0.3, 0.2))
    assert rates.loc[CEMENT].max() <= 0.5 + 1e-12  # the sector's cap binds on theta_P
    assert rates.loc[CEMENT, "theta_P"] == pytest.approx(0.5)
    assert (
        steps[steps["plant"] == MILL]["stage_name"] == "intermediate dependence (fixed rates)"
    ).all()


def test_coordinator_and_its_ledger_apply_the_terms(
    recorded: tuple[Settings, str], policy_file: Path, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    settings, url = recorded
    store: Store = open_store(url)
    times = [START_MS + k * QUARTER for k in range(6)]
    with Journal(tmp_path / "journal.sqlite") as journal:
        coordinator = Coordinator(
            settings, store, parse_broker_url(mosquitto.url), load_policy(policy_file),
            journal, clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip
        clock = [times[0]]

        async def run() -> None:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                for t in times:
                    clock[0] = t
                    await coordinator.step(client)

        asyncio.run(run())
        periods = journal.periods()
        reports = [e["body"] for e in journal.ledger.entries()]
    store.close()
    mill = periods[periods["plant"] == MILL]
    assert mill["subsidy_rate_firm"].tolist() == pytest.approx([0.3] * len(mill))
    cement = periods[periods["plant"] == CEMENT]
    assert cement["subsidy_rate_platform"].max() == pytest.approx(0.5)
    assert json.loads(json.dumps(cement["parameters"].iloc[0]))["g"] == 1.2
    # Stage 2 reports (hourly, verified) carry each plant's own rates and money unit.
    by_plant = {r["plant"]: r for r in reports}
    assert by_plant[MILL]["subsidy_rate_firm"] == pytest.approx(0.3)
    assert by_plant[CEMENT]["subsidy_rate_platform"] == pytest.approx(0.5)
    assert {r["money"] for r in reports} == {"kCNY"}


def test_carbon_price_is_a_transfer_counted_once(reference: CoordinationParams) -> None:
    """The firm pays the price on what it still emits, to the government: its value of a
    tonne abated rises by the price, the government's falls by it, Gs does not move."""
    priced = with_carbon_price(reference, 0.3)
    assert priced.gs == pytest.approx(reference.gs)
    assert stage1_nash(priced).E_M > stage1_nash(reference).E_M  # the firm abates more
    assert pytest.approx(stage3_joint(reference).E_M) == stage3_joint(priced).E_M
    # The welfare government needs to pay less for the same first-best push.
    assert stage2_government(priced).theta_M < stage2_government(reference).theta_M


def test_backtest_counts_the_carbon_bill(tmp_path: Path, reference: CoordinationParams) -> None:
    from carbonlink.coordination import PlantModel, PolicyEvaluator, StepInput, summarise

    path = tmp_path / "priced.yaml"
    path.write_text(f"name: priced\nparams: {REFERENCE_YAML}\nstage: 1\ncarbon_price: 0.3\n")
    free = tmp_path / "free.yaml"
    free.write_text(f"name: free\nparams: {REFERENCE_YAML}\nstage: 1\n")
    frames = []
    for policy in (load_policy(path), load_policy(free)):
        evaluator = PolicyEvaluator(policy, [PlantModel.believed("p", reference)], START_MS)
        for k in range(8):
            evaluator.step(START_MS + k * HOUR, START_MS + (k + 1) * HOUR,
                           {"p": StepInput(100.0, 20.0)})  # fmt: skip
        frames.append(evaluator.frame())
    priced, unpriced = frames
    assert priced["carbon_payment"].tolist() == pytest.approx(
        (0.3 * priced["emissions_t"]).tolist()
    )
    # The bill moves money from the firm to the government and nowhere else.
    row = priced.iloc[-1]
    x, cost = row["abatement_t"], row["cost_M"]
    assert row["payoff_M"] == pytest.approx(reference.m_M * x - cost - 0.3 * row["emissions_t"])
    assert row["payoff_G"] == pytest.approx(reference.g * x + 0.3 * row["emissions_t"])
    summary = summarise(pd.concat(frames)).set_index("policy")
    assert summary.loc["priced", "carbon_payment"] > 0
    assert summary.loc["free", "carbon_payment"] == 0
    assert unpriced["carbon_payment"].sum() == 0


def test_ledger_reports_re_derive_their_stage_3_transfers(
    recorded: tuple[Settings, str], mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """Each joint report holds what its transfers follow from: the parameters (carbon
    price included), efforts, sigma, the X settled at and the split that settled. A
    verifier recomputes them with ``recorded_transfers``."""
    from carbonlink.coordination._flows import recorded_transfers

    settings, url = recorded
    path = tmp_path / "priced-stage3.yaml"
    path.write_text(f"name: priced-stage3\nparams: {REFERENCE_YAML}\nstage: 3\ncarbon_price: 0.2\n")
    store: Store = open_store(url)
    clock = [START_MS]
    with Journal(tmp_path / "journal.sqlite") as journal:
        coordinator = Coordinator(
            settings, store, parse_broker_url(mosquitto.url), load_policy(path), journal,
            clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip

        async def run() -> None:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                for k in range(5):
                    clock[0] = START_MS + k * QUARTER
                    await coordinator.step(client)

        asyncio.run(run())
        reports = [e["body"] for e in journal.ledger.entries()]
    store.close()
    assert len(reports) == 2 * 4  # two plants, four periods, joint every period
    for body in reports:
        assert body["split"] == "core"
        assert body["money"] == "kCNY"
        params = CoordinationParams.model_construct(None, **body["parameters"])
        x = body.get("observed_abatement")
        x = body["projected_abatement"] if x is None else x
        periods = (body["period_end_ms"] - body["period_start_ms"]) / 3_600_000
        expected = recorded_transfers(
            params, body["stage"], (body["effort_firm"], body["effort_platform"]),
            body["sigma"], (body["subsidy_rate_firm"], body["subsidy_rate_platform"]),
            x, periods, body["split"],
        )  # fmt: skip
        assert body["transfers"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert body["parameters"]["g"] == pytest.approx(0.8 - 0.2)  # the price, counted once
