"""SQLite counts sequence gaps from runs of consecutive numbers kept as numbers are
recorded (one row per run, not per number): the same counts as the numbers themselves
give, whatever order they arrive in, repeats and resets included, and a store from
before the runs table gets them built from what it recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from carbonlink.storage import SqliteStore

MAX_GAP = 50


def naive_gaps(numbers: dict[str, set[int]]) -> dict[str, int]:
    gaps = {}
    for agent, seqs in numbers.items():
        ordered = sorted(seqs)
        steps = np.diff(ordered)
        gaps[agent] = int(sum(s - 1 for s in steps if 1 < s <= MAX_GAP + 1))
    return gaps


@pytest.mark.parametrize("seed", range(5))
def test_runs_count_what_the_numbers_count(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    numbers: dict[str, set[int]] = {}
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        for _ in range(40):
            rows = []
            for _ in range(int(rng.integers(1, 30))):
                agent = f"agent-{int(rng.integers(0, 3))}"
                # Mostly near each other (gaps, late fills, repeats), sometimes a reset.
                seq = (
                    int(rng.integers(1, 200))
                    if rng.random() < 0.95
                    else int(rng.integers(10**6, 10**6 + 5))
                )
                rows.append((agent, seq))
                numbers.setdefault(agent, set()).add(seq)
            store.record_sequences(rows)
            assert store.sequence_gaps(MAX_GAP) == naive_gaps(numbers)
        runs = store._db.execute("SELECT count(*) FROM sequence_runs").fetchone()[0]
        assert runs < sum(len(s) for s in numbers.values())  # runs, not numbers
    finally:
        store.close()


def test_a_store_from_before_the_runs_table_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with SqliteStore(path):
        pass
    db = sqlite3.connect(path)
    db.execute("DROP TABLE sequence_runs")
    db.executemany(
        "INSERT INTO telemetry_sequences VALUES (?,?)",
        [("a", s) for s in (1, 2, 3, 7, 8, 20)] + [("b", 5)],
    )
    db.commit()
    db.close()
    with SqliteStore(path) as store:
        assert store.sequence_gaps(MAX_GAP) == {"a": 3 + 11, "b": 0}
        store.record_sequences([("a", s) for s in range(4, 7)])
        assert store.sequence_gaps(MAX_GAP) == {"a": 11, "b": 0}
