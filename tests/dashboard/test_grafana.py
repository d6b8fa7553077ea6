"""The Grafana provisioning asks only for what the platform really writes to InfluxDB."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from carbonlink.storage import (
    ACTIVITY_MEASUREMENT,
    ASSIGNMENT_MEASUREMENT,
    EMISSION_FIELDS,
    EMISSIONS_MEASUREMENT,
    Emission,
    StoredReading,
)
from carbonlink.storage._base import ACTIVITY_FIELDS
from carbonlink.storage._influxdb_v1 import assignment_lines, reading_lines

GRAFANA: Final = Path(__file__).resolve().parents[2] / "config" / "grafana"
# The emissions dashboards (InfluxQL); the pipeline's health reads Prometheus and is
# checked against the services' real /metrics (tests/test_metrics.py).
PIPELINE: Final = GRAFANA / "dashboards" / "carbonlink-pipeline.json"
DASHBOARDS: Final = sorted(p for p in (GRAFANA / "dashboards").glob("*.json") if p != PIPELINE)
# Text fields: written, but not in the numeric field lists.
TEXT_FIELDS: Final = {
    ACTIVITY_MEASUREMENT: {"unit", "quality"},
    EMISSIONS_MEASUREMENT: {"converted_unit"},
    ASSIGNMENT_MEASUREMENT: set(),
}
NUMERIC_FIELDS: Final = {
    ACTIVITY_MEASUREMENT: set(ACTIVITY_FIELDS),
    EMISSIONS_MEASUREMENT: set(EMISSION_FIELDS),
    ASSIGNMENT_MEASUREMENT: {"assigned"},
}

_FROM = re.compile(r'\bFROM\s+"(\w+)"', re.IGNORECASE)
_SELECT = re.compile(r"^\s*SELECT\s+(.*?)\s+FROM\b", re.IGNORECASE)
_WHERE = re.compile(r"\bWHERE\s+(.*?)(?:\s+GROUP\s+BY\b|$)", re.IGNORECASE)
_GROUP_BY = re.compile(r"\bGROUP\s+BY\s+(.*?)(?:\s+fill\(|$)", re.IGNORECASE)
_WITH_KEY = re.compile(r'\bWITH\s+KEY\s*=\s*"(\w+)"', re.IGNORECASE)
_QUOTED = re.compile(r'"(\w+)"')
# A subquery in FROM: (SELECT ... ), with function calls nested two deep inside it.
_SUBQUERY = re.compile(r"\((SELECT\s(?:[^()]|\((?:[^()]|\([^()]*\))*\))*)\)", re.IGNORECASE)
_ALIAS = re.compile(r'\bAS\s+"(\w+)"', re.IGNORECASE)


def _written() -> dict[str, tuple[set[str], set[str]]]:
    """(tags, fields) per measurement, read off the line protocol the store writes."""
    emission = Emission(
        "coal", "fuel", 1, "1.A.2", "set", "1", "AR5", 1.0, "TJ", 1.0, 0.0, 0.0, 1.0, 0.0
    )
    reading = StoredReading("p", "m", 0, 1.0, "t", 60_000, "measured", emission)
    written: dict[str, tuple[set[str], set[str]]] = {}
    for line in reading_lines(reading) + assignment_lines({"p": ("set", "1")}, 0):
        key, fields, _ = line.split(" ")
        measurement, *tags = key.split(",")
        written[measurement] = (
            {t.split("=")[0] for t in tags},
            {f.split("=")[0] for f in fields.split(",")},
        )
    return written


WRITTEN: Final = _written()


def _queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "query" and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def test_written_sets_match_the_storage_constants() -> None:
    for measurement, (_, fields) in WRITTEN.items():
        assert fields == NUMERIC_FIELDS[measurement] | TEXT_FIELDS[measurement]


def _statements(query: str) -> tuple[list[str], str | None, set[str]]:
    """The statements that read a measurement (subqueries, or the query itself), the
    outer query over subqueries if there is one, and the aliases the subqueries define."""
    inner = _SUBQUERY.findall(query)
    if not inner:
        return [query], None, set()
    outer = _SUBQUERY.sub("(subquery)", query)
    return inner, outer, {a for q in inner for a in _ALIAS.findall(q)}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_influxql_query_names_written_measurements_fields_and_tags(path: Path) -> None:
    queries = list(_queries(json.loads(path.read_text())))
    assert len(queries) >= 7
    for whole in queries:
        statements, outer, aliases = _statements(whole)
        if outer is not None:
            select = _SELECT.search(outer)
            assert select is not None, outer
            assert set(_QUOTED.findall(select.group(1))) <= aliases, outer
        for query in statements:
            _check_statement(query)


def _check_statement(query: str) -> None:
    measurements = _FROM.findall(query)
    assert len(measurements) == 1, query
    assert measurements[0] in WRITTEN, query
    tags, fields = WRITTEN[measurements[0]]
    if (key := _WITH_KEY.search(query)) is not None:
        assert key.group(1) in tags, query
    if (select := _SELECT.search(query)) is not None:
        selected = set(_QUOTED.findall(select.group(1))) - set(_ALIAS.findall(query))
        assert selected, query
        assert selected <= NUMERIC_FIELDS[measurements[0]], query
    if (where := _WHERE.search(query)) is not None:
        assert set(_QUOTED.findall(where.group(1))) <= tags | fields, query
    if (group := _GROUP_BY.search(query)) is not None:
        assert set(_QUOTED.findall(group.group(1))) <= tags, query


def test_every_emissions_query_counts_one_factor_set_version() -> None:
    # After a recompute several versions are stored side by side: a query across them
    # would count each reading twice. The variables name the version the platform counts.
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for query in _queries(dashboard):
            for statement in _statements(query)[0]:
                if _FROM.findall(statement) == [EMISSIONS_MEASUREMENT]:
                    assert "\"factor_set\" = '$factor_set'" in statement, statement
                    assert "\"factor_version\" = '$factor_version'" in statement, statement
        variables = {v["name"]: v["query"] for v in dashboard["templating"]["list"]}
        for name in ("factor_set", "factor_version"):
            assert f'FROM "{ASSIGNMENT_MEASUREMENT}"' in variables[name]


def test_dashboards_cover_sources_scopes_energy_and_quality() -> None:
    queries = [q for path in DASHBOARDS for q in _queries(json.loads(path.read_text()))]
    grouped = {
        g for q in queries for m in [_GROUP_BY.search(q)] if m for g in _QUOTED.findall(m.group(1))
    }
    assert {"source", "scope", "activity", "meter"} <= grouped
    assert any('"quality"' in q for q in queries)


def test_provisioning_points_at_the_dashboards_and_influxql() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/carbonlink.yaml").read_text())
    prometheus = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())[
        "datasources"
    ]
    assert [s["uid"] for s in prometheus] == ["carbonlink-prometheus"]
    assert {t["datasource"]["uid"] for p in json.loads(PIPELINE.read_text())["panels"]
            for t in p["targets"]} == {"carbonlink-prometheus"}  # fmt: skip
    (source,) = datasources["datasources"]
    assert source["type"] == "influxdb"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["dbName"] == "carbonlink"
    used = {
        t["datasource"]["uid"]
        for path in DASHBOARDS
        for p in json.loads(path.read_text())["panels"]
        for t in p.get("targets", [])
    }
    assert used == {source["uid"]}
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/carbonlink.yaml").read_text())
    assert providers["providers"][0]["type"] == "file"
