"""Tampered and malformed ledgers through ``carbonlink coordinate --verify-ledger``, run
as a subprocess the way a government's verifier runs it.

Every case starts from a copy of a journal a real coordinator wrote and signed
(``ledger_corpus``), changes it (or the store) one way, and checks the exit code and
the line that names the report and the problem. No case may end in a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import pytest

from carbonlink.coordination import Journal, generate_key_pair
from carbonlink.coordination._journal import timestamp_runs
from tests.coordination import ledger_corpus as corpus
from tests.coordination.ledger_corpus import World
from tests.servers import MosquittoServer

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

REPO: Final = Path(__file__).resolve().parents[2]
OK: Final = 0
BROKEN: Final = 1
USAGE: Final = 2
# Subprocesses at once: the machine has two cores.
WORKERS: Final = 2
CLI_TIMEOUT_S: Final = 120


def stage(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["stage"] == n


def late(body: dict[str, Any]) -> bool:
    return body["stage"] == 3 and body["period_start_ms"] == corpus.LATE_FROM - 12 * 60_000


@dataclass(frozen=True)
class Case:
    """Change a copy (journal, store) with ``change``; verify with ``args`` (KEY and
    STORE stand for the public key and the store); expect ``exit`` and every one of
    ``says`` in stdout (``{i}``: the index ``change`` returned), none of ``not_says``."""

    name: str
    change: Callable[[World, Path, Path], int | None]
    args: tuple[str, ...]
    exit: int
    says: tuple[str, ...]
    not_says: tuple[str, ...] = ()


# --- changes ---------------------------------------------------------------------------------


def nothing(world: World, journal: Path, store: Path) -> None:
    return None


def the_late_report(world: World, journal: Path, store: Path) -> int:
    """No change; the index of the report whose period has late data."""
    return corpus.first_index(journal, late)


def edit_only(test: Callable[[dict[str, Any]], bool], change: Callable[[dict[str, Any]], object]):
    """Change a body and leave its hash: a clumsy forger."""

    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, test)
        body = corpus.bodies(journal)[index]
        change(body)
        corpus.rewrite_text(journal, index, json.dumps(body))
        return index

    return apply


def rewritten(test: Callable[[dict[str, Any]], bool], change: Callable[[dict[str, Any]], object]):
    """Change a body and re-hash the chain from it: a careful forger without the key."""

    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, test)
        corpus.rewrite(journal, index, change)
        return index

    return apply


def stored_text(test: Callable[[dict[str, Any]], bool], text: Callable[[str], object]):
    """Store something else as a body's text."""

    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, test)
        with sqlite3.connect(journal) as db:
            (original,) = db.execute("SELECT body FROM reports WHERE idx = ?", (index,)).fetchone()
        corpus.rewrite_text(journal, index, text(original))
        return index

    return apply


def column(test: Callable[[dict[str, Any]], bool], name: str, value: Callable[[Any], object]):
    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, test)
        with sqlite3.connect(journal) as db:
            (old,) = db.execute(
                f"SELECT {name} FROM reports WHERE idx = ?",
                (index,),
            ).fetchone()
        corpus.set_column(journal, index, name, value(old))
        return index

    return apply


def halve_late_data(world: World, journal: Path, store: Path) -> int:
    """The abuse of the late-data allowance: claim that half of a period came late. The
    period row and the report both say only the readings up to mid-period were counted,
    consistently with storage, the report commits to the changed row, and the chain is
    re-hashed."""
    index = corpus.first_index(journal, late)
    body = corpus.bodies(journal)[index]
    (row,) = corpus.period_rows(journal, body)
    cutoff = row.start_ms + 7 * 60_000
    with sqlite3.connect(store) as db:
        kept = db.execute(
            "SELECT meter, ts_ms, co2e_kg FROM emissions WHERE plant = ? AND ts_ms > ? "
            "AND ts_ms <= ? AND factor_version = ?",
            (row.plant, row.start_ms, cutoff, row.factor_version),
        ).fetchall()
    readings, kg = len(kept), math.fsum(co2e for _, _, co2e in kept)
    meters = {meter for meter, _, _ in kept}
    counted = {m: timestamp_runs(t for meter, t, _ in kept if meter == m) for m in meters}
    changed = replace(row, readings=readings, tco2e=kg / 1000, counted=counted)
    corpus.replace_rows(journal, [changed])

    def change(body: dict[str, Any]) -> None:
        body["reported_tco2e"] = kg / 1000
        body["readings"] = readings
        corpus.commit_to(journal, body)

    corpus.rewrite(journal, index, change)
    return index


def row_changed(test: Callable[[dict[str, Any]], bool], **values: Any):
    """Change the period row a report was made from, not the report."""

    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, test)
        rows = corpus.period_rows(journal, corpus.bodies(journal)[index])
        corpus.replace_rows(journal, [replace(rows[0], **values)])
        return index

    return apply


def row_sql(test: Callable[[dict[str, Any]], bool], assignment: str, *params: object):
    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, test)
        body = corpus.bodies(journal)[index]
        with sqlite3.connect(journal) as db:
            db.execute(
                f"UPDATE periods SET {assignment} WHERE plant = ? AND start_ms = ?",
                (*params, body["plant"], body["period_start_ms"]),
            )
        return index

    return apply


def row_deleted(world: World, journal: Path, store: Path) -> int:
    index = corpus.first_index(journal, stage(3))
    body = corpus.bodies(journal)[index]
    with sqlite3.connect(journal) as db:
        db.execute(
            "DELETE FROM periods WHERE plant = ? AND start_ms = ?",
            (body["plant"], body["period_start_ms"]),
        )
    return index


def store_sql(statement: str):
    """Change storage inside the first stage-3 report's window."""

    def apply(world: World, journal: Path, store: Path) -> int:
        index = corpus.first_index(journal, stage(3))
        body = corpus.bodies(journal)[index]
        with sqlite3.connect(store) as db:
            changed = db.execute(
                statement, (body["plant"], body["period_start_ms"] + 5 * 60_000)
            ).rowcount
        assert changed >= 1
        return index

    return apply


def newest_removed(world: World, journal: Path, store: Path) -> int:
    with Journal.open_readonly(journal) as book:
        next_index, head = book.ledger.head()
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM reports WHERE idx = ?", (next_index - 1,))
    (journal.parent / "anchor").write_text(f"{next_index}:{head}")
    return next_index - 1


def file_replaced(content: bytes):
    def apply(world: World, journal: Path, store: Path) -> None:
        journal.write_bytes(content)

    return apply


def table_dropped(world: World, journal: Path, store: Path) -> None:
    with sqlite3.connect(journal) as db:
        db.execute("DROP TABLE reports")


def other_key(world: World, journal: Path, store: Path) -> None:
    generate_key_pair(journal.parent / "other-key")


# --- body changes ----------------------------------------------------------------------------


def halve_tco2e(body: dict[str, Any]) -> None:
    body["reported_tco2e"] /= 2


def move_money(body: dict[str, Any]) -> None:
    body["transfers"]["M"] += 1.0
    body["transfers"]["G"] -= 1.0


def set_field(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.__setitem__(name, value)


def scale_field(name: str, factor: float) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.__setitem__(name, body[name] * factor)


KEY, STORE = "KEY", "STORE"
CHECKED = (KEY, STORE)
SIGNATURE_FAILS = "signature does not verify"


CASES: Final = [
    # what a correct ledger gives
    Case("clean, signed, with late data", the_late_report, CHECKED, OK,
         ("OK: 10 reports, chain intact, every report signed (key ",
          "late data at report {i}", ": 15 readings, ", "1 with late data: 15 readings")),
    Case("clean, chain only", nothing, (), OK,
         ("OK: 10 reports, chain intact (signatures not checked: no public key; give "
          "--public-key FILE",)),
    Case("clean, no public key: late data cannot be accepted", the_late_report, (STORE,),
         BROKEN, ("MISMATCH at report {i}", "readings left out cannot be told from late ones",
                  "MISMATCH: 1 finding in 1 of 10 reports")),
    # forgers
    Case("edited body", edit_only(stage(3), halve_tco2e), (), BROKEN,
         ("BROKEN at report {i}: body was edited",)),
    Case("halved and re-hashed, signatures checked", rewritten(stage(3), halve_tco2e),
         (KEY,), BROKEN, ("BROKEN at report {i}: " + SIGNATURE_FAILS,)),
    Case("halved and re-hashed, storage checked", rewritten(stage(3), halve_tco2e),
         (STORE,), BROKEN, ("MISMATCH at report {i}", "reported_tco2e: report"),
         ("late data",)),
    Case("half a period claimed late, no public key", halve_late_data, (STORE,), BROKEN,
         ("MISMATCH at report {i}", "readings left out cannot be told from late ones")),
    Case("half a period claimed late, signatures checked", halve_late_data, CHECKED, BROKEN,
         ("BROKEN at report {i}: " + SIGNATURE_FAILS,)),
    Case("money moved in a stage-3 settlement", rewritten(stage(3), move_money), (STORE,),
         BROKEN, ("MISMATCH at report {i}", "transfers.M: report", "transfers.G: report")),
    Case("government paid more than the claims", rewritten(stage(2), move_money), (STORE,),
         BROKEN, ("MISMATCH at report {i}", "transfers.G: the government paid")),
    Case("claims inflated", rewritten(stage(2), scale_field("subsidy_claimed", 2.0)),
         (STORE,), BROKEN, ("MISMATCH at report {i}", "subsidy_claimed: report")),
    Case("effort inflated", rewritten(stage(3), scale_field("effort_firm", 2.0)), (STORE,),
         BROKEN, ("MISMATCH at report {i}", "effort_firm: report")),
    Case("a parameter changed",
         rewritten(stage(3), lambda b: b["parameters"].__setitem__("m_M", 9.0)), (STORE,),
         BROKEN, ("MISMATCH at report {i}", "parameters.m_M: report 9")),
    Case("a period row's effort changed", row_changed(stage(3), effort_firm=9.0), CHECKED,
         BROKEN, ("MISMATCH at report {i}", "effort_firm: period",
                  "not those the report was made from")),
    Case("a period row's X changed", row_changed(stage(3), x_start=123.0), (STORE,), BROKEN,
         ("MISMATCH at report {i}", "X at its start is 123")),
    Case("a period row removed", row_deleted, (STORE,), BROKEN,
         ("MISMATCH at report {i}", "no period rows for this window")),
    Case("newest report removed, anchored", newest_removed, ("--anchor", "ANCHOR"), BROKEN,
         ("BROKEN at report {i}: the anchor says 10 reports; only 9 remain",)),
    Case("a stored reading doubled",
         store_sql("UPDATE emissions SET co2e_kg = co2e_kg * 2 WHERE plant = ? AND ts_ms = ?"),
         CHECKED, BROKEN,
         ("MISMATCH at report {i}", "counted 75 readings", "storage holds 75 readings")),
    Case("a counted reading deleted from storage",
         store_sql("DELETE FROM emissions WHERE plant = ? AND ts_ms = ?"), CHECKED, BROKEN,
         ("MISMATCH at report {i}", "5 of the readings counted are no longer stored")),
    # malformed bodies
    Case("NaN in a body", stored_text(stage(3), lambda t: t.replace(
             '"reported_tco2e":', '"reported_tco2e":NaN,"x":')), (), BROKEN,
         ("BROKEN at report {i}: malformed body: not valid JSON (NaN is not a number",)),
    Case("a number too large", stored_text(stage(3), lambda t: t.replace(
             '"stage":3', '"stage":1e999')), (), BROKEN,
         ("BROKEN at report {i}: malformed body: not valid JSON (1e999 is too large",)),
    Case("a field missing", rewritten(stage(3), lambda b: b.pop("plant")), (), BROKEN,
         ("BROKEN at report {i}: malformed body: plant: Field required",)),
    Case("a stage as text", rewritten(stage(3), set_field("stage", "3")), (), BROKEN,
         ("BROKEN at report {i}: malformed body: stage: Input should be 1, 2 or 3",)),
    Case("a transfer as text",
         rewritten(stage(3), lambda b: b["transfers"].__setitem__("M", "1.5")), (), BROKEN,
         ("BROKEN at report {i}: malformed body: transfers.M: Input should be a valid number",)),
    Case("a transfer missing", rewritten(stage(3), lambda b: b["transfers"].pop("G")), (),
         BROKEN, ("BROKEN at report {i}: malformed body: transfers.G: Field required",)),
    Case("a count below zero", rewritten(stage(3), set_field("readings", -4)), (), BROKEN,
         ("BROKEN at report {i}: malformed body: readings: Input should be greater than",)),
    Case("a time beyond any clock", rewritten(stage(3), set_field("period_end_ms", 10**30)),
         (), BROKEN, ("BROKEN at report {i}: malformed body: period_end_ms: Input should be",)),
    Case("an unknown field", rewritten(stage(3), set_field("bonus", 1.0)), (), BROKEN,
         ("BROKEN at report {i}: malformed body: bonus: Extra inputs are not permitted",)),
    Case("a window ending before it starts",
         rewritten(stage(3), lambda b: b.__setitem__("period_end_ms", b["period_start_ms"] - 1)),
         (), BROKEN, ("BROKEN at report {i}: malformed body: period_end_ms: the window ends",)),
    Case("transfers that do not balance",
         rewritten(stage(3), lambda b: b["transfers"].__setitem__("M", b["transfers"]["M"] + 1)),
         (), BROKEN, ("BROKEN at report {i}: transfers do not sum to zero",)),
    Case("a truncated body", stored_text(stage(3), lambda t: t[: len(t) // 2]), (), BROKEN,
         ("BROKEN at report {i}: malformed body: not valid JSON",)),
    Case("a body that is a list", stored_text(stage(3), lambda t: "[1, 2]"), (), BROKEN,
         ("BROKEN at report {i}: malformed body: the body is a JSON list, not an object",)),
    Case("a body nested without end", stored_text(stage(3), lambda t: "[" * 100_000), (),
         BROKEN, ("BROKEN at report {i}: malformed body: not valid JSON (nested too deeply)",)),
    Case("a body stored as a number", stored_text(stage(3), lambda t: 42), (), BROKEN,
         ("BROKEN at report {i}: malformed body: the body is a JSON int, not an object",)),
    Case("a body stored as bytes", stored_text(stage(3), lambda t: b"\x00\xff"), (), BROKEN,
         ("BROKEN at report {i}: malformed body: the body is stored as bytes, not text",)),
    Case("a truncated hash", column(stage(3), "hash", lambda h: h[:10]), (), BROKEN,
         ("BROKEN at report {i}: its hash is not a SHA-256 digest",)),
    Case("a truncated link", column(stage(3), "prev_hash", lambda h: h[:10]), (), BROKEN,
         ("BROKEN at report {i}: prev_hash does not match the report before",)),
    # signatures
    Case("a truncated signature", column(stage(3), "signature", lambda s: s[:64] + "0"),
         (KEY,), BROKEN, ("BROKEN at report {i}: " + SIGNATURE_FAILS,)),
    Case("a signature removed", column(stage(3), "signature", lambda s: None), (KEY,),
         BROKEN, ("BROKEN at report {i}: report is unsigned",)),
    Case("an HMAC signature", column(stage(3), "signature", lambda s: "ab" * 32), (KEY,),
         BROKEN, ("BROKEN at report {i}: signed with an HMAC key by an older carbonlink",)),
    Case("another verifier's key", other_key, ("--public-key", "OTHER"), BROKEN,
         ("BROKEN at report 0: signature does not verify: it names key",)),
    Case("the private key given as the public one", nothing, ("--public-key", "PRIVATE"),
         USAGE, (), ()),
    # not a journal
    Case("not a database", file_replaced(os.urandom(4096)), (), BROKEN,
         ("BROKEN at report 0: the reports table cannot be read: file is not a database",)),
    Case("an empty file", file_replaced(b""), (), BROKEN,
         ("BROKEN at report 0: the reports table cannot be read: no such table: reports",)),
    Case("no reports table", table_dropped, (), BROKEN,
         ("BROKEN at report 0: the reports table cannot be read",)),
    Case("NaN in a period row",
         row_sql(stage(3), "parameters = replace(parameters, '\"m_M\":', '\"m_M\":NaN,\"y\":')"),
         (STORE,), BROKEN, ("MISMATCH: periods: cannot be read:", "NaN is not a number")),
    Case("text in a period row's number", row_sql(stage(3), "tco2e = ?", "lots"), (STORE,),
         BROKEN, ("MISMATCH: periods: cannot be read:", "tco2e: not a finite number")),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory = tmp_path_factory.mktemp("ledger-corpus")
    with MosquittoServer(directory / "broker") as broker:
        return corpus.build(directory / "world", broker)


@dataclass(frozen=True)
class Outcome:
    index: int | None
    run: subprocess.CompletedProcess[str]


def run_case(world: World, directory: Path, case: Case) -> Outcome:
    journal, store = corpus.copy(world, directory, case.name.replace(" ", "-").replace(",", ""))
    index = case.change(world, journal, store)
    substitutes = {
        KEY: ["--public-key", str(world.public_key)],
        STORE: ["--store", f"sqlite:///{store}"],
        "ANCHOR": [(journal.parent / "anchor").read_text()]
        if (journal.parent / "anchor").exists()
        else [],
        "OTHER": [str(journal.parent / "other-key.pub")],
        "PRIVATE": [str(world.private_key)],
    }
    args = [part for arg in case.args for part in substitutes.get(arg, [arg])]
    config = ["--config", str(world.settings.path)]
    command = [sys.executable, "-m", "carbonlink", "coordinate", *config,
               "--verify-ledger", str(journal), *args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "CARBONLINK_LEDGER_KEY"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    return Outcome(index, done)


@pytest.fixture(scope="module")
def outcomes(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    directory = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {c.name: pool.submit(run_case, world, directory, c) for c in CASES}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_verifier_says_what_is_wrong(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.name]
    out, err = outcome.run.stdout, outcome.run.stderr
    assert "Traceback" not in out + err, err
    assert outcome.run.returncode == case.exit, f"{out}\n{err}"
    for text in case.says:
        assert text.format(i=outcome.index) in out, out
    for text in case.not_says:
        assert text not in out, out
    print(f"{case.name}:\n{out}")  # what a verifier reads (pytest -s)
    if case.exit == USAGE:
        assert err.startswith("carbonlink: error: --public-key: "), err
        assert "this is a private key" in err, err
