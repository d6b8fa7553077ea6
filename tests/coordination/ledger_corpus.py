"""A signed coordination journal made by a real coordinator, and the ways to tamper with
it or break it that ``test_ledger_corpus`` runs through ``carbonlink coordinate
--verify-ledger`` as a subprocess.

The run: one cement line recorded into SQLite through the real platform path, a
coordinator on a real Mosquitto stepping stage 1 (self-reported), stage 2 within a
budget that binds (verified hourly reports, claims paid short) and stage 3 (joint, per
period), signing with an Ed25519 key. Three minutes of one stage-3 period are held
back from the store while the coordinator reads it and put back afterwards: late data,
as an agent's outbox delivers it after an outage.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiomqtt
import yaml

from carbonlink.config import Settings
from carbonlink.coordination import (
    Coordinator,
    Journal,
    generate_key_pair,
    load_policy,
    report_hash,
)
from carbonlink.coordination._journal import PeriodRow
from carbonlink.coordination._sharing import periods_digest
from carbonlink.coordination._signing import private_key_from_text
from carbonlink.mqtt.client import parse_broker_url
from carbonlink.platform import open_store
from tests.coordination.conftest import REFERENCE_YAML
from tests.coordination.recording import HOUR, START_MS, flat_settings, record
from tests.servers import MosquittoServer

PLANT: Final = "corpus-cement"
QUARTER: Final = HOUR // 4
STEPS: Final = 17  # four hours and the step that reads the last period
# The held-back readings: the last three minutes of the stage-3 period 3h00-3h15.
LATE_FROM: Final = START_MS + 3 * HOUR + 12 * 60_000
LATE_TO: Final = START_MS + 3 * HOUR + 15 * 60_000
POLICY: Final = {
    "name": "ledger-corpus",
    "description": "stage 1, stage 2 within a budget, stage 3",
    "params": str(REFERENCE_YAML),
    "schedule": [
        {"at": "+0s", "stage": 1},
        {"at": "+1h", "stage": 2},
        {"at": "+2h", "stage": 3},
    ],
    "government": "welfare",
    # 5/h is about 70% of what the plant claims unconstrained; 3 in all runs out within
    # the hour, so the government pays its claims short.
    "budget": {"amount": 5, "per": "1h", "total": 3},
}


@dataclass(frozen=True)
class World:
    settings: Settings
    store: Path
    journal: Path
    private_key: Path
    public_key: Path

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.store}"


def build(directory: Path, broker: MosquittoServer) -> World:
    settings = flat_settings(directory / "config", {PLANT: "cement-01"})
    store_path = directory / "store.sqlite"
    store = open_store(f"sqlite:///{store_path}")
    record(settings, store, list(settings.plants.values()), START_MS, 4.5)
    store.close()
    with sqlite3.connect(store_path) as db:  # the outage: these reach storage late
        for table in ("emissions", "activity"):
            db.execute(
                f"CREATE TABLE held_{table} AS SELECT * FROM {table} "
                "WHERE plant = ? AND ts_ms > ? AND ts_ms <= ?",
                (PLANT, LATE_FROM, LATE_TO),
            )
            db.execute(
                f"DELETE FROM {table} WHERE plant = ? AND ts_ms > ? AND ts_ms <= ?",
                (PLANT, LATE_FROM, LATE_TO),
            )
    private, public = generate_key_pair(directory / "keys" / "ledger-key")
    policy_path = directory / "ledger-corpus.yaml"
    policy_path.write_text(yaml.safe_dump(POLICY))
    journal_path = directory / "journal.sqlite"
    reader = open_store(f"sqlite:///{store_path}")
    clock = [START_MS]
    key = private_key_from_text(private.read_text())
    with Journal(journal_path, signing_key=key) as journal:
        coordinator = Coordinator(
            settings, reader, parse_broker_url(broker.url), load_policy(policy_path), journal,
            clock_ms=lambda: clock[0], period_s=900.0, read_lag_s=0.0,
        )  # fmt: skip

        async def run() -> None:
            async with aiomqtt.Client(broker.host, broker.port) as client:
                for k in range(STEPS):
                    clock[0] = START_MS + k * QUARTER
                    await coordinator.step(client)

        asyncio.run(run())
    reader.close()
    with sqlite3.connect(store_path) as db:  # the outage is over
        for table in ("emissions", "activity"):
            db.execute(f"INSERT INTO {table} SELECT * FROM held_{table}")
            db.execute(f"DROP TABLE held_{table}")
    return World(settings, store_path, journal_path, private, public)


# --- ways to change a copy ------------------------------------------------------------------


def bodies(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT body FROM reports ORDER BY idx").fetchall()
    return [json.loads(body) for (body,) in rows]


def first_index(path: Path, test: Callable[[dict[str, Any]], bool]) -> int:
    return next(i for i, body in enumerate(bodies(path)) if test(body))


def rewrite(path: Path, index: int, change: Callable[[dict[str, Any]], object]) -> None:
    """Edit report ``index`` with ``change`` (in place) and re-hash it and every report
    after it, as a careful forger without the private key would."""
    db = sqlite3.connect(path)
    rows = db.execute("SELECT idx, body, prev_hash FROM reports ORDER BY idx").fetchall()
    prev = rows[index][2]
    with db:
        for idx, text, _ in rows[index:]:
            body = json.loads(text)
            if idx == index:
                change(body)
            digest = report_hash(body, prev)
            db.execute(
                "UPDATE reports SET body = ?, prev_hash = ?, hash = ? WHERE idx = ?",
                (json.dumps(body, sort_keys=True), prev, digest, idx),
            )
            prev = digest
    db.close()


def rewrite_text(path: Path, index: int, text: object, *, rehash_after: bool = True) -> None:
    """Store ``text`` (anything SQLite holds) as report ``index``'s body, unhashable as it
    may be; the reports after it keep their hashes."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE reports SET body = ? WHERE idx = ?", (text, index))


def set_column(path: Path, index: int, column: str, value: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE reports SET {column} = ? WHERE idx = ?", (value, index))


def period_rows(path: Path, body: Mapping[str, Any]) -> list[PeriodRow]:
    with Journal.open_readonly(path) as journal:
        return [
            r
            for r in journal.period_rows(body["plant"])
            if r.start_ms >= body["period_start_ms"] and r.end_ms <= body["period_end_ms"]
        ]


def replace_rows(path: Path, rows: list[PeriodRow]) -> None:
    with Journal(path) as journal:
        journal.record_periods(rows)


def commit_to(path: Path, body: dict[str, Any]) -> None:
    """Point ``body``'s periods_sha256 at the journal's rows as they now are."""
    body["periods_sha256"] = periods_digest([r.digest() for r in period_rows(path, body)])


def copy(world: World, directory: Path, name: str) -> tuple[Path, Path]:
    """A copy of the journal and of the store to tamper with."""
    target = directory / name
    target.mkdir(parents=True)
    journal = target / "journal.sqlite"
    store = target / "store.sqlite"
    shutil.copy(world.journal, journal)
    shutil.copy(world.store, store)
    return journal, store
