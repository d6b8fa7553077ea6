"""Read-only coordination endpoints over the coordinator's journal (docs/coordination.md):
its status, the ledger of reports (and its verification, also against storage), the
period-by-period decisions, the transfers, and the shadow-policy comparison.

The coordinator may run in another process: the journal is a SQLite file (WAL) opened
read-only per request, so the API never blocks it and never writes to it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final

import pandas as pd
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response

from carbonlink import __version__ as _version
from carbonlink.coordination import (
    DROP_STATE_KEY,
    PARTIES,
    STATUS_STATE_KEY,
    Ed25519PublicKey,
    Journal,
    body_problem,
    verify_journal,
)
from carbonlink.storage import Store

__all__ = ["COORDINATION_PREFIX", "add_coordination_routes", "coordination_app"]

COORDINATION_PREFIX: Final = "/api/v1/coordination"
DEFAULT_LEDGER_LIMIT: Final = 200
MAX_LEDGER_LIMIT: Final = 10_000
Format = Annotated[str, Query(alias="format", pattern="^(json|csv)$")]
# Every endpoint answers 503 until a coordinator has written the journal.
NOT_YET: Final[dict[int | str, dict[str, Any]]] = {
    503: {"description": "No coordination journal yet: the reason says where it was looked for"}
}
JSON: Final[dict[int | str, dict[str, Any]]] = NOT_YET | {
    200: {"content": {"application/json": {}}}
}
TABLE: Final[dict[int | str, dict[str, Any]]] = NOT_YET | {
    200: {
        "description": "JSON, or CSV with ?format=csv",
        "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
    }
}


def _json(data: object) -> Response:
    # NaN (an empty efficiency, say) is not JSON: send null instead.
    return Response(json.dumps(_finite(data), allow_nan=False), media_type="application/json")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def add_coordination_routes(
    app: FastAPI,
    journal_path: Path,
    store: Store | None = None,
    *,
    public_key: Ed25519PublicKey | None = None,
) -> None:
    """Serve the journal at ``journal_path``; 503 until a coordinator has written it.
    ``public_key`` checks the reports' signatures when the ledger is verified."""

    @contextmanager
    def journal() -> Iterator[Journal]:
        try:
            opened = Journal.open_readonly(journal_path)
        except FileNotFoundError:
            raise HTTPException(
                503,
                f"no coordination journal at {journal_path}: is `carbonlink coordinate` running?",
            ) from None
        try:
            yield opened
        finally:
            opened.close()

    @app.get(
        f"{COORDINATION_PREFIX}/status",
        summary="Coordinator: policy, stage, estimates",
        responses=JSON,
    )
    def status() -> Response:
        with journal() as book:
            state = book.load_state(STATUS_STATE_KEY)
            drop = book.load_state(DROP_STATE_KEY)
            head = book.ledger.head()
            reports = len(book.ledger)
        if state is None:
            raise HTTPException(503, "the coordinator has not completed a period yet")
        state["ledger"] = {"reports": reports, "next_index": head[0], "head": head[1]}
        state["drop"] = drop  # None unless the demo measured one
        return _json(state)

    @app.get(
        f"{COORDINATION_PREFIX}/ledger",
        summary="Reports to the government, hash-chained",
        responses=TABLE,
    )
    def ledger(
        # Bounded: SQLite integers are 64-bit, and a larger index would be a 500, not a 422.
        since: Annotated[int, Query(ge=0, le=2**62, description="First report index")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LEDGER_LIMIT)] = DEFAULT_LEDGER_LIMIT,
        plant: str | None = None,
        newest: Annotated[bool, Query(description="The newest `limit` reports")] = False,
        fmt: Format = "json",
    ) -> Response:
        with journal() as book:
            if newest:
                since = max(0, len(book.ledger) - limit)
            entries = book.ledger.entries(since=since, limit=limit)
        if plant is not None:
            entries = [e for e in entries if e["body"] is not None and e["body"]["plant"] == plant]
        if fmt == "csv":
            rows = [
                {"index": e["index"], "hash": e["hash"]}
                | {k: v for k, v in e["body"].items() if k not in ("transfers", "parameters")}
                | {f"transfer_{p}": e["body"]["transfers"][p] for p in PARTIES}
                for e in entries
                if _well_formed(e)
            ]
            return Response(pd.DataFrame(rows).to_csv(index=False), media_type="text/csv")
        return _json(entries)

    @app.get(
        f"{COORDINATION_PREFIX}/ledger/verify",
        summary="Check the chain (and storage)",
        responses=JSON | {400: {"description": "Asked to check storage, but no store here"}},
    )
    def verify(
        against_store: Annotated[
            bool, Query(description="Also re-derive every report from storage")
        ] = False,
    ) -> Response:
        """What `carbonlink coordinate --verify-ledger` prints, as JSON: ``lines`` are
        its lines, the other fields the same figures one by one."""
        if against_store and store is None:
            raise HTTPException(400, "this server has no store to verify against")
        with journal() as book:
            try:
                verification = verify_journal(
                    book, key=public_key, store=store if against_store else None
                )
            except sqlite3.DatabaseError as exc:
                raise HTTPException(503, f"the journal cannot be read: {exc}") from None
        return _json(verification.as_json())

    @app.get(
        f"{COORDINATION_PREFIX}/periods",
        summary="Decisions and estimates per period",
        responses=TABLE,
    )
    def periods(
        plant: str | None = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_LEDGER_LIMIT)] = None,
        fmt: Format = "json",
    ) -> Response:
        with journal() as book:
            frame = book.periods(plant, limit=limit)
        if fmt == "csv":
            frame = frame.assign(parameters=[json.dumps(p) for p in frame["parameters"]])
            return Response(frame.to_csv(index=False), media_type="text/csv")
        return _json(frame.to_dict("records"))

    @app.get(
        f"{COORDINATION_PREFIX}/transfers",
        summary="Transfers per report, and running totals",
        responses=JSON,
    )
    def transfers(plant: str | None = None) -> Response:
        """In time order: reports reach the ledger when their sharing delay has passed,
        so a stage-1 total can follow stage-3 reports of later windows there."""
        with journal() as book:
            entries = [e for e in book.ledger.entries() if _well_formed(e)]
        entries.sort(key=lambda e: (e["body"]["period_end_ms"], e["index"]))
        rows: list[dict[str, Any]] = []
        totals = dict.fromkeys(PARTIES, 0.0)
        for entry in entries:
            body = entry["body"]
            if plant is not None and body["plant"] != plant:
                continue
            for party in PARTIES:
                totals[party] += float(body["transfers"][party])
            row: dict[str, Any] = {
                "index": entry["index"],
                "plant": body["plant"],
                "stage": body["stage"],
                "period_end_ms": body["period_end_ms"],
            }
            row |= {p: body["transfers"][p] for p in PARTIES}
            row |= {f"cumulative_{p}": totals[p] for p in PARTIES}
            rows.append(row)
        return _json({"rows": rows, "totals": totals, "balance": sum(totals.values())})

    @app.get(
        f"{COORDINATION_PREFIX}/shadows",
        summary="Active policy versus shadow policies",
        responses=JSON,
    )
    def shadows(
        history: Annotated[bool, Query(description="Every step, not only the latest")] = False,
    ) -> Response:
        with journal() as book:
            records = book.shadows(history=history)
        return _json(records)


def _well_formed(entry: dict[str, Any]) -> bool:
    """A listing skips a report whose body is not one (``ledger/verify`` says which)."""
    return entry["body"] is not None and body_problem(entry["body"]) is None


def coordination_app(
    journal_path: Path,
    store: Store | None = None,
    *,
    public_key: Ed25519PublicKey | None = None,
) -> FastAPI:
    """The coordination endpoints on their own (``carbonlink coordinate --http``)."""
    app = FastAPI(
        title="carbonlink coordination",
        version=_version,
        description="The coordinator's ledger, decisions and shadow-policy comparison.",
    )
    add_coordination_routes(app, journal_path, store, public_key=public_key)
    return app
