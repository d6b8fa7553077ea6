"""The stack's broker access control, on a real Mosquitto.

The broker runs on the very files docker-compose.yml gives it: config/mosquitto/
mosquitto.conf (only its listener, persistence, log and plugin locations pointed into a
temp dir), with the dynamic-security file that `carbonlink broker-access` writes from the
logins and their passwords, as the stack's broker-access service does before the broker
starts.

"Receives nothing" is shown without sleeping: after the refused message, the subscriber
is sent one it may read (a marker), through the same broker. Mosquitto handles messages
one at a time, so once the marker arrives, anything the refused message had turned into
would have arrived before it.

The roles are fixed, so tests cannot use unique topics: the module has a broker of its
own, and every check publishes its own payloads before it looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from carbonlink import wire
from carbonlink.agent import Agent
from carbonlink.config import Settings, load_config
from carbonlink.coordination import (
    Coordinator,
    Journal,
    generate_key_pair,
    load_policy,
    parse_anchor,
)
from carbonlink.coordination._signing import private_key_from_text
from carbonlink.core.clock import SimClock, wall_clock_ms
from carbonlink.mqtt.client import BrokerAddress, make_client, parse_broker_url
from carbonlink.platform import Ingestor, Platform, open_store
from carbonlink.simulators import simulate
from tests.servers import MosquittoServer
from tests.stack import (
    MOSQUITTO_DIR,
    REPO,
    USERS_VARIABLE,
    mqtt_users,
    password_variable,
)
from tests.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.mosquitto

PLATFORM: Final = "carbonlink.platform.1"
PLATFORM_2: Final = "carbonlink.platform.2"
COORDINATION: Final = "carbonlink.coordination"
MONITOR: Final = "carbonlink.monitor"
CEMENT: Final = "cement-01"
STEEL: Final = "steel-01"
CEMENT_METERS: Final = f"{CEMENT}.meters"
STEEL_METERS: Final = f"{STEEL}.meters"
ROOT: Final = wire.TOPIC_ROOT
SHARED_TELEMETRY: Final = f"$share/{secrets.token_hex(8)}/{wire.TELEMETRY_SUBSCRIPTION}"
NOT_AUTHORIZED: Final = 135  # MQTT 5 reason code 0x87
ACCEPTED: Final = {0, 16}  # success; success, but nobody is subscribed
WAIT_S: Final = 10.0

PASSWORDS: Final = {user: f"{user}-{secrets.token_hex(8)}" for user in mqtt_users()}


def directive(plant: str, effort: float = 1.0) -> bytes:
    return wire.encode_directive(
        wire.Directive(
            plant=plant, issued_ms=wall_clock_ms(), effective_ms=wall_clock_ms(),
            stage="advanced_symbiosis", effort_firm=effort, effort_platform=effort,
            sigma=1.25, subsidy_rate_firm=0.0, subsidy_rate_platform=0.0,
            carbon_price=0.0, policy="acl-test",
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    directory = tmp_path_factory.mktemp("stack-mosquitto")
    dynsec_file = directory / "auth" / "dynamic-security.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_PASSWORD_")}
    env[USERS_VARIABLE] = " ".join(PASSWORDS)
    env |= {password_variable(user): password for user, password in PASSWORDS.items()}
    subprocess.run(
        [sys.executable, "-m", "carbonlink", "broker-access", "--out", str(dynsec_file)],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with MosquittoServer(
        directory, config_file=MOSQUITTO_DIR / "mosquitto.conf", dynsec_file=dynsec_file
    ) as server:
        yield server


class Login:
    """One MQTT 5 connection under a username, driven synchronously (paho's own thread)."""

    def __init__(
        self,
        broker: MosquittoServer,
        user: str | None,
        password: str | None = None,
        *,
        client_id: str | None = None,
    ) -> None:
        self.user = user
        self.disconnects = 0
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._connected = threading.Event()
        self.connack: ReasonCode | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"acl-{user}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self._client.username_pw_set(
                user, PASSWORDS.get(user) if password is None else password
            )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = lambda _c, _u, mid, rc, _p: self._acks.__setitem__(mid, rc)
        self._client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._subacks.__setitem__(mid, rcs)
        self._client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, m.payload, m.retain)
        )
        self._broker = broker

    def _on_connect(
        self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.connack = rc
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.disconnects += 1

    def __enter__(self) -> Self:
        self._client.connect(self._broker.host, self._broker.port)
        self._client.loop_start()
        assert self._connected.wait(WAIT_S), f"{self.user}: no CONNACK"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (see ACCEPTED)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        what = f"{self.user}: PUBACK on {topic}"
        return int(wait_for(lambda: self._acks.get(info.mid), what, WAIT_S).value)

    def subscribe(self, *topics: str) -> list[int]:
        _, mid = self._client.subscribe([(t, 1) for t in topics])
        codes = wait_for(lambda: self._subacks.get(mid), f"{self.user}: SUBACK", WAIT_S)
        return [code.value for code in codes]

    def until(self, topic: str, payload: bytes) -> list[tuple[str, bytes, bool]]:
        """Everything received up to and including the marker (topic, payload)."""
        got = []
        while True:
            try:
                message = self.messages.get(timeout=WAIT_S)
            except queue.Empty:
                pytest.fail(f"{self.user}: the marker {payload!r} on {topic} never came: {got}")
            got.append(message)
            if message[:2] == (topic, payload):
                return got


def marker() -> bytes:
    return f'{{"marker":"{uuid.uuid4().hex}"}}'.encode()


def topics_of(messages: list[tuple[str, bytes, bool]]) -> set[str]:
    return {topic for topic, _, _ in messages}


# --- the files ---------------------------------------------------------------------------


def test_the_broker_runs_the_repository_files(broker: MosquittoServer) -> None:
    written = broker.config_path.read_text().splitlines()
    repo = (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines()
    settings = [line for line in repo if line.strip() and not line.startswith("#")]
    kept = [line for line in settings if line.split()[0] not in MosquittoServer.PLACE_KEYS]
    assert set(kept) <= set(written)
    assert {"allow_anonymous false", "max_queued_messages 0", "persistence true"} <= set(kept)
    assert any(line.startswith("plugin ") and "dynamic_security" in line for line in written)
    assert not [line for line in written if line.split()[:1] in (["acl_file"], ["password_file"])]
    assert "allow_anonymous true" not in written
    assert sorted(PASSWORDS) == sorted(mqtt_users())


# --- logging in --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), (CEMENT, "wrong"), ("nobody", "x"), (STEEL, None), (STEEL_METERS, None)],
    ids=["anonymous", "wrong-password", "unknown-user", "another-plants-password",
         "the-agents-password-for-the-meters"],
)  # fmt: skip
def test_who_cannot_log_in_is_refused(
    broker: MosquittoServer, user: str | None, password: str | None
) -> None:
    if user == STEEL:
        password = PASSWORDS[CEMENT]
    if user == STEEL_METERS:
        password = PASSWORDS[STEEL]
    with Login(broker, user, password) as login:
        assert not login.accepted, f"{user} logged in"


def test_anonymous_mqtt_3_1_1_is_refused_too(broker: MosquittoServer) -> None:
    refused = subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", "mqttv311",
         "-q", "1", "-t", wire.meter_topic(CEMENT, "kiln-coal"), "-m", "{}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "not authori" in (refused.stderr + refused.stdout).lower()


def test_every_login_of_the_stack_gets_in(broker: MosquittoServer) -> None:
    for user in PASSWORDS:
        with Login(broker, user) as login:
            assert login.accepted, f"{user}: {login.connack}"


def test_no_login_can_take_over_another_ones_session(broker: MosquittoServer) -> None:
    """A client id is the client's to choose; the broker renames every session after its
    username (use_username_as_clientid), so cement-01 connecting as the platform's client
    id neither throws the platform off nor receives a message meant for it."""
    with Login(broker, PLATFORM) as platform, Login(broker, STEEL) as steel:
        platform.subscribe(SHARED_TELEMETRY)
        with Login(broker, CEMENT_METERS, client_id=PLATFORM) as intruder:
            assert intruder.accepted
            end = marker()
            assert steel.publish(wire.telemetry_topic(STEEL), end) in ACCEPTED
            assert platform.until(wire.telemetry_topic(STEEL), end)
        assert platform.disconnects == 0


# --- a plant cannot write another plant's data --------------------------------------------


@pytest.mark.parametrize("forger", [CEMENT, CEMENT_METERS])
def test_a_plant_cannot_publish_another_plants_meter_readings(
    broker: MosquittoServer, forger: str
) -> None:
    with (
        Login(broker, STEEL) as steel_agent,
        Login(broker, STEEL_METERS) as steel_meters,
        Login(broker, forger) as cement,
    ):
        steel_agent.subscribe(wire.meter_subscription(STEEL))
        forged = wire.meter_topic(STEEL, "eaf-power")
        assert cement.publish(forged, b'{"v":1,"unit":"kWh","ts":0,"value":1e9}') == NOT_AUTHORIZED
        end = marker()
        assert steel_meters.publish(forged, end) in ACCEPTED
        assert steel_agent.until(forged, end) == [(forged, end, False)]


@pytest.mark.parametrize("forger", [CEMENT, CEMENT_METERS])
@pytest.mark.parametrize("kind", ["telemetry", "status", "deadletter", "sim-status"])
def test_a_plant_cannot_publish_another_plants_telemetry_status_or_dead_letters(
    broker: MosquittoServer, kind: str, forger: str
) -> None:
    topic = f"{ROOT}/{STEEL}/{kind}"
    owner = STEEL_METERS if kind == "sim-status" else STEEL
    with (
        Login(broker, PLATFORM) as platform,
        Login(broker, MONITOR) as monitor,
        Login(broker, forger) as cement,
        Login(broker, owner) as steel,
    ):
        watcher = platform if kind == "telemetry" else monitor
        watcher.subscribe(SHARED_TELEMETRY if kind == "telemetry" else f"{ROOT}/+/{kind}")
        assert cement.publish(topic, b'{"forged":true}') == NOT_AUTHORIZED
        end = marker()
        assert steel.publish(topic, end) in ACCEPTED
        assert [m for m in watcher.until(topic, end) if b"forged" in m[1]] == []


def test_meters_cannot_bypass_their_agent(broker: MosquittoServer) -> None:
    """The meters' login writes readings, not telemetry or status: those come through the
    agent. It may dead-letter on its own plant (a simulator refusing a directive does)."""
    with Login(broker, CEMENT_METERS) as meters:
        for topic in (wire.telemetry_topic(CEMENT), wire.status_topic(CEMENT)):
            assert meters.publish(topic, b"{}") == NOT_AUTHORIZED, topic
        assert meters.publish(wire.deadletter_topic(CEMENT), b"{}") in ACCEPTED


# --- a plant cannot read another plant's data ---------------------------------------------


@pytest.mark.parametrize("reader", [CEMENT, CEMENT_METERS])
def test_a_plant_cannot_read_another_plants_readings_telemetry_or_directives(
    broker: MosquittoServer, reader: str
) -> None:
    with (
        Login(broker, reader) as cement,
        Login(broker, STEEL) as steel,
        Login(broker, STEEL_METERS) as steel_meters,
        Login(broker, COORDINATION) as coordination,
    ):
        # The broker refuses most of these subscriptions, and checks each message it would
        # deliver on the rest: whatever the SUBACK says, nothing of steel-01 may arrive.
        foreign = [
            wire.meter_subscription(STEEL), wire.telemetry_topic(STEEL),
            wire.directive_topic(STEEL), wire.TELEMETRY_SUBSCRIPTION,
            f"$share/{uuid.uuid4().hex}/{wire.TELEMETRY_SUBSCRIPTION}", f"{ROOT}/#", "#",
        ]  # fmt: skip
        assert cement.subscribe(*foreign) == [NOT_AUTHORIZED] * len(foreign)
        cement.subscribe(wire.directive_topic(CEMENT))  # its own: where the marker comes
        assert steel_meters.publish(wire.meter_topic(STEEL, "eaf-power"), b"{}") in ACCEPTED
        assert steel.publish(wire.telemetry_topic(STEEL), b"{}") in ACCEPTED
        assert steel.publish(wire.status_topic(STEEL), b"{}") in ACCEPTED
        assert steel.publish(wire.deadletter_topic(STEEL), b"{}") in ACCEPTED
        assert coordination.publish(wire.directive_topic(STEEL), directive(STEEL)) in ACCEPTED
        end = directive(CEMENT, effort=2.0)
        assert coordination.publish(wire.directive_topic(CEMENT), end) in ACCEPTED
        received = cement.until(wire.directive_topic(CEMENT), end)
        assert {t for t in topics_of(received) if not t.startswith(f"{ROOT}/{CEMENT}/")} == set()


@pytest.mark.parametrize("reader", [CEMENT, CEMENT_METERS])
def test_a_plant_gets_no_retained_directive_but_its_own(
    broker: MosquittoServer, reader: str
) -> None:
    with Login(broker, COORDINATION) as coordination:
        for plant in (CEMENT, STEEL):
            published = coordination.publish(
                wire.directive_topic(plant), directive(plant), retain=True
            )
            assert published in ACCEPTED
    with Login(broker, reader) as cement:
        # Every plant's directives at once: refused, so no retained copy is delivered.
        assert cement.subscribe(f"{ROOT}/+/directives") == [NOT_AUTHORIZED]
        cement.subscribe(wire.directive_topic(CEMENT))
        end = directive(CEMENT, effort=5.0)  # not retained: the marker behind the retained
        with Login(broker, COORDINATION) as coordination:
            assert coordination.publish(wire.directive_topic(CEMENT), end) in ACCEPTED
        *got, _ = cement.until(wire.directive_topic(CEMENT), end)
        assert topics_of(got) == {wire.directive_topic(CEMENT)}
        assert all(retained for _, _, retained in got)


# --- directives: only coordination writes them, each plant reads its own --------------------


@pytest.mark.parametrize("user", [CEMENT, CEMENT_METERS, STEEL, PLATFORM, MONITOR])
def test_only_coordination_publishes_directives(broker: MosquittoServer, user: str) -> None:
    kept = directive(CEMENT, effort=3.0)
    with Login(broker, COORDINATION) as coordination:
        assert coordination.publish(wire.directive_topic(CEMENT), kept, retain=True) in ACCEPTED
    with Login(broker, user) as login:
        for plant in (CEMENT, STEEL):
            forged = directive(plant, effort=99.0)
            assert login.publish(wire.directive_topic(plant), forged, retain=True) == NOT_AUTHORIZED
    with Login(broker, CEMENT_METERS) as cement:
        cement.subscribe(wire.directive_topic(CEMENT))
        assert cement.until(wire.directive_topic(CEMENT), kept)[-1][2]  # retained, unchanged


def test_coordination_reaches_every_plant_and_writes_nothing_else(
    broker: MosquittoServer,
) -> None:
    plants = [u for u in PASSWORDS if "." not in u]
    assert sorted(plants) == sorted(p.stem for p in (REPO / "config" / "plants").glob("*.yaml"))
    with Login(broker, COORDINATION) as coordination:
        payloads = {plant: directive(plant, effort=4.0) for plant in plants}
        for plant, payload in payloads.items():
            assert (
                coordination.publish(wire.directive_topic(plant), payload, retain=True) in ACCEPTED
            )
        for topic in (wire.meter_topic(CEMENT, "kiln-coal"), wire.telemetry_topic(CEMENT)):
            assert coordination.publish(topic, b"{}") == NOT_AUTHORIZED
    for plant, payload in payloads.items():
        for user in (plant, f"{plant}.meters"):
            with Login(broker, user) as login:
                login.subscribe(wire.directive_topic(plant))
                assert login.until(wire.directive_topic(plant), payload)[-1][2], user


# --- telemetry: only the platform reads all of it ------------------------------------------


@pytest.mark.parametrize("worker", [PLATFORM, PLATFORM_2])
def test_only_the_platform_reads_every_plants_telemetry(
    broker: MosquittoServer, worker: str
) -> None:
    with (
        Login(broker, worker) as platform,
        Login(broker, COORDINATION) as coordination,
        Login(broker, MONITOR) as monitor,
        Login(broker, CEMENT) as cement,
        Login(broker, STEEL) as steel,
    ):
        platform.subscribe(SHARED_TELEMETRY, wire.STATUS_SUBSCRIPTION)
        for login in (coordination, monitor):
            login.subscribe(wire.TELEMETRY_SUBSCRIPTION, f"{ROOT}/+/meters/+")
        monitor.subscribe(wire.STATUS_SUBSCRIPTION)
        first, second = marker(), marker()
        assert cement.publish(wire.telemetry_topic(CEMENT), first) in ACCEPTED
        assert steel.publish(wire.telemetry_topic(STEEL), second) in ACCEPTED
        got = platform.until(wire.telemetry_topic(STEEL), second)
        assert (wire.telemetry_topic(CEMENT), first, False) in got
        coordination.subscribe(wire.LEDGER_ANCHOR_TOPIC)  # where its own marker comes back
        mine = marker()
        assert coordination.publish(wire.LEDGER_ANCHOR_TOPIC, mine) in ACCEPTED
        seen = coordination.until(wire.LEDGER_ANCHOR_TOPIC, mine)
        assert topics_of(seen) == {wire.LEDGER_ANCHOR_TOPIC}  # no telemetry, no readings
        status = marker()
        assert cement.publish(wire.status_topic(CEMENT), status) in ACCEPTED
        seen = monitor.until(wire.status_topic(CEMENT), status)
        assert not [t for t in topics_of(seen) if t.endswith("/telemetry") or "/meters/" in t]


def test_no_login_but_the_platforms_can_join_its_shared_subscription(
    broker: MosquittoServer,
) -> None:
    """Mosquitto's acl_file never checked SUBSCRIBE: any login could join the platform's
    group, be dealt its share of the batches, be refused the read, and those batches were
    lost (10 of 20 once). The dynamic-security plugin checks it: the broker refuses the
    subscription outright (reason 0x87), so no share is dealt, and every batch reaches
    the platform."""
    group = f"$share/{uuid.uuid4().hex}/{wire.TELEMETRY_SUBSCRIPTION}"
    with (
        Login(broker, PLATFORM) as platform,
        Login(broker, PLATFORM_2) as platform_2,
        Login(broker, STEEL) as steel,
    ):
        platform.subscribe(group, wire.status_topic(STEEL))
        for intruder in (CEMENT, CEMENT_METERS, COORDINATION, MONITOR):
            with Login(broker, intruder) as member:
                assert member.subscribe(group) == [NOT_AUTHORIZED], intruder
        # Another worker joins (QoS 1 granted); the status, not shared, brings the marker.
        assert platform_2.subscribe(group, wire.status_topic(STEEL)) == [1, 1]
        sent = [marker() for _ in range(20)]
        for payload in sent:
            assert steel.publish(wire.telemetry_topic(STEEL), payload) in ACCEPTED
        end = marker()
        assert steel.publish(wire.status_topic(STEEL), end) in ACCEPTED
        got = [p for t, p, _ in platform.until(wire.status_topic(STEEL), end) if p in sent]
        got += [p for _, p, _ in platform_2.until(wire.status_topic(STEEL), end) if p in sent]
    assert sorted(got) == sorted(sent), f"the platform's workers got {len(got)} of {len(sent)}"


def test_the_platform_and_the_monitor_write_no_readings(broker: MosquittoServer) -> None:
    for user in (PLATFORM, MONITOR):
        with Login(broker, user) as login:
            assert login.publish(wire.meter_topic(CEMENT, "kiln-coal"), b"{}") == NOT_AUTHORIZED
            assert login.publish(wire.telemetry_topic(CEMENT), b"{}") == NOT_AUTHORIZED
            assert login.publish(wire.status_topic(CEMENT), b"{}") == NOT_AUTHORIZED
    with Login(broker, PLATFORM) as platform:
        assert platform.publish(wire.deadletter_topic(CEMENT), b"{}") in ACCEPTED
    with Login(broker, MONITOR) as monitor:
        assert monitor.publish(wire.deadletter_topic(CEMENT), b"{}") == NOT_AUTHORIZED


# --- the pipeline under these logins ---------------------------------------------------------


def stack_settings(directory: Path, broker: MosquittoServer) -> Settings:
    """config/stack/carbonlink.yaml on the test broker and temp files, two plants."""
    services = yaml.safe_load((REPO / "config" / "stack" / "carbonlink.yaml").read_text())
    services["plants_dir"] = str(REPO / "config" / "plants")
    services["factors_dir"] = str(REPO / "config" / "factors")
    services["plants"] = [CEMENT, STEEL]
    services["broker"]["url"] = broker.url
    services["agent"]["outbox_dir"] = str(directory / "outbox")
    services["agent"]["batch_max_delay_s"] = 0.1
    services["platform"]["store"] = f"sqlite:///{directory / 'unused.sqlite'}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "carbonlink.yaml"
    path.write_text(yaml.safe_dump(services))
    return load_config(path)


def test_simulators_agents_platform_and_coordination_deliver_under_their_logins(
    broker: MosquittoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stack_settings(tmp_path / "config", broker)
    config = settings.services.broker
    assert config.username_env
    assert config.password_env

    def login(user: str) -> BrokerAddress:
        # What the CLI does in each container: the config names the variables, the
        # container's environment holds its own login.
        monkeypatch.setenv(config.username_env or "", user)
        monkeypatch.setenv(config.password_env or "", PASSWORDS[user])
        return parse_broker_url(config.url, config)

    # Each plant backfills the hour that ends now, as fast as the broker takes it (what
    # `carbonlink simulate --speed max --duration 1h` does); the rest keep the wall clock.
    run_ms = 3_600_000
    start_ms = wall_clock_ms() - run_ms
    plants = [settings.plant(CEMENT), settings.plant(STEEL)]
    group = secrets.token_hex(8)  # PLATFORM_SHARED_GROUP
    stores = [open_store(f"sqlite:///{tmp_path / f'store-{n}.sqlite'}") for n in (1, 2)]
    workers = [
        Platform(
            Ingestor.from_settings(settings), store, login(f"carbonlink.platform.{n}"),
            settings.services.platform, spill_path=tmp_path / f"spill-{n}.sqlite",
            shared_group=group, client_id=f"carbonlink-platform-{n}",
        )
        for n, store in enumerate(stores, start=1)
    ]  # fmt: skip
    agents = [
        Agent(
            plant, login(plant.id), settings.services.agent,
            outbox_path=settings.outbox_path(plant.id),
            factor_set=settings.factor_set(plant.id),
        )
        for plant in plants
    ]  # fmt: skip
    sim_logins = {plant.id: login(f"{plant.id}.meters") for plant in plants}
    ledger = Journal(tmp_path / "ledger.sqlite")
    reader = open_store(f"sqlite:///{tmp_path / 'store-1.sqlite'}")  # its own connection
    coordinator = Coordinator(
        settings, reader, login(COORDINATION),
        load_policy(REPO / "config" / "policies" / "stage3.yaml"), ledger,
        plants=[p.id for p in plants], period_s=900, wall_period_s=60,
    )  # fmt: skip

    async def scenario() -> list[int]:
        tasks = [asyncio.create_task(s.run()) for s in (*workers, *agents, coordinator)]
        try:
            for service in (*workers, *agents, coordinator):
                await asyncio.wait_for(service.connected.wait(), WAIT_S)
            await async_wait_for(lambda: coordinator.periods >= 1, "the first directives")
            runs = [
                simulate(
                    [plant],
                    sim_logins[plant.id],
                    SimClock(start_ms, speed=None),
                    duration_ms=run_ms,
                    factor_set=settings.factor_set,
                )
                for plant in plants
            ]
            stats = await asyncio.gather(*runs)
            # A counter meter's first register value only sets the agent's baseline.
            counters = [sum(m.reading == "counter" for m in plant.meters) for plant in plants]
            expected = sum(s.published_samples for s in stats) - sum(counters)
            await async_wait_for(
                lambda: sum(w.counters.stored for w in workers) >= expected, "stored"
            )
            await async_wait_for(
                lambda: all(
                    w.agent_states().get(p.id) == "online" for w in workers for p in plants
                ),
                "the agents' status at both workers",
            )
            assert all(s.directives >= 1 for s in stats), [s.directives for s in stats]
            return [expected, *(s.published_samples for s in stats)]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        expected, *published = asyncio.run(scenario())
        for agent in agents:
            assert agent.counters.rejected == {}, f"{agent.plant.id}: {agent.counters.rejected}"
        stored = [w.counters.stored for w in workers]
        assert sum(stored) == expected, f"split {stored} of {expected}"
        assert min(stored) > 0, f"split {stored}: one worker idle"
        assert sum(store.count_readings() for store in stores) == expected
        for worker in workers:
            assert worker.counters.rejected == {}
        print(f"per-plant logins: published {published}, stored {stored} (of {expected})")
    finally:
        ledger.close()
        reader.close()
        for worker, store in zip(workers, stores, strict=True):
            worker.close()
            store.close()


# --- the ledger's anchor: coordination writes it, a verifier reads it ------------------------


def test_the_coordinator_anchors_its_ledger_and_a_verifier_checks_against_it(
    broker: MosquittoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end under the stack's logins: the coordinator (carbonlink.coordination)
    steps stage 3 over two plants, signs its reports and publishes the anchor, retained;
    `carbonlink coordinate --verify-ledger --anchor broker` logged in as
    carbonlink.monitor reads it and checks the journal against it, with the public key
    alone. No other login may publish an anchor."""
    settings = stack_settings(tmp_path / "config", broker)
    config = settings.services.broker
    monkeypatch.setenv(config.username_env or "", COORDINATION)
    monkeypatch.setenv(config.password_env or "", PASSWORDS[COORDINATION])
    coordination_login = parse_broker_url(config.url, config)
    private, public = generate_key_pair(tmp_path / "ledger-key")
    journal_path = tmp_path / "journal.sqlite"
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = open_store(store_url)
    clock = [wall_clock_ms() - 3_600_000]
    quarter = 900_000
    with Journal(journal_path, signing_key=private_key_from_text(private.read_text())) as book:
        coordinator = Coordinator(
            settings, store, coordination_login,
            load_policy(REPO / "config" / "policies" / "stage3.yaml"), book,
            plants=[CEMENT, STEEL], clock_ms=lambda: clock[0], period_s=900, read_lag_s=0,
        )  # fmt: skip

        async def steps() -> None:
            async with make_client(coordination_login, COORDINATION) as client:
                for _ in range(4):
                    await coordinator.step(client)
                    clock[0] += quarter

        asyncio.run(steps())
        next_index, head = book.ledger.head()
    store.close()
    assert next_index == 6  # three periods of two plants, one joint report each

    with Login(broker, MONITOR) as monitor:
        monitor.subscribe(wire.LEDGER_ANCHOR_TOPIC)
        topic, payload, retained = monitor.messages.get(timeout=WAIT_S)
    assert (topic, retained) == (wire.LEDGER_ANCHOR_TOPIC, True)
    anchor = parse_anchor(payload)
    assert (anchor.next_index, anchor.head) == (next_index, head)
    assert anchor.key_id is not None
    for user in (CEMENT, CEMENT_METERS, PLATFORM, MONITOR):
        with Login(broker, user) as forger:
            forged = json.dumps({"next_index": 1, "head": "0" * 64}).encode()
            assert forger.publish(wire.LEDGER_ANCHOR_TOPIC, forged, retain=True) == NOT_AUTHORIZED

    def verify(journal: Path, user: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "CARBONLINK_LEDGER_KEY"}
        env |= {config.username_env or "": user, config.password_env or "": PASSWORDS[user]}
        return subprocess.run(
            [sys.executable, "-m", "carbonlink", "coordinate", "--config", str(settings.path),
             "--verify-ledger", str(journal), "--anchor", "broker", "--public-key", str(public),
             "--store", store_url],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    checked = verify(journal_path, MONITOR)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: 6 reports, chain intact and matches the anchor, every report signed" in (
        checked.stdout
    )
    truncated = tmp_path / "truncated.sqlite"
    shutil.copy(journal_path, truncated)
    with sqlite3.connect(truncated) as db:
        db.execute("DELETE FROM reports WHERE idx = ?", (next_index - 1,))
    cut = verify(truncated, MONITOR)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "BROKEN at report 5: the anchor says 6 reports; only 5 remain" in cut.stdout
    # A plant's login may not read the anchor: the verifier says where to look.
    unread = verify(journal_path, CEMENT)
    assert unread.returncode == 2, unread.stdout + unread.stderr
    assert "no retained anchor on carbonlink/v1/_coordination/ledger" in unread.stderr
