"""The rules behind the end-to-end tests, without a broker: Sparkplug sessions (aliases,
seq wrap and gaps, bdSeq, rebirth pacing), unit spellings, and plant-file mistakes that
stop a service at startup with file, key and problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from tahutils.tahu import sparkplug_b_pb2 as pb

from carbonlink import wire
from carbonlink.agent import MeterValidator, SparkplugHost, SparkplugOutcome
from carbonlink.config import AgentConfig, PlantConfig, SparkplugConfig, load_config
from carbonlink.errors import ConfigError
from tests.configs import write_config

NOW = 1_795_420_800_000
GROUP, NODE = "plant-a", "gw-1"


def plant(**sparkplug: Any) -> PlantConfig:
    return PlantConfig.model_validate({
        "id": "p1", "name": "test", "archetype": "cement", "grid_region": "CN",
        "factor_set": "any",
        "meters": [
            {"id": "coal", "activity": "other_bituminous_coal", "unit": "t",
             "sample_period_s": 60, "nominal_per_hour": 20, "rated_per_hour": 30},
        ],
        "sparkplug": {"group": GROUP, "edge_node": NODE,
                      "metrics": [{"name": "Coal", "meter": "coal"}], **sparkplug},
    })  # fmt: skip


def host() -> SparkplugHost:
    config = plant()
    assert isinstance(config.sparkplug, SparkplugConfig)
    return SparkplugHost(config, config.sparkplug)


# Where each Sparkplug datatype's value goes in a metric (Tahu's protobuf).
_VALUE_FIELDS = {
    "Double": "double_value",
    "Int64": "long_value",
    "Int32": "int_value",
    "String": "string_value",
    "Boolean": "boolean_value",
}


def payload(seq: int | None, *metrics: tuple[str | None, int | None, str, Any]) -> bytes:
    """A Sparkplug payload of (name, alias, datatype, value) metrics."""
    built = pb.Payload(timestamp=NOW)
    if seq is not None:
        built.seq = seq
    for name, alias, kind, value in metrics:
        metric = built.metrics.add()
        if name is not None:
            metric.name = name
        if alias is not None:
            metric.alias = alias
        metric.datatype = pb.DataType.Value(kind)
        setattr(metric, _VALUE_FIELDS[kind], value)
    return bytes(built.SerializeToString())


def topic(kind: str) -> str:
    return f"spBv1.0/{GROUP}/{kind}/{NODE}"


def born(seq: int = 0, bd_seq: int = 7) -> SparkplugHost:
    found = host()
    birth = payload(seq, ("bdSeq", None, "Int64", bd_seq), ("Coal", 1, "Double", 0.0),
                    ("Temperature", 2, "Double", 80.0))  # fmt: skip
    assert found.handle(topic("NBIRTH"), birth, NOW) == SparkplugOutcome()
    return found


def reasons(outcome: Any) -> list[str]:
    return [error.reason for error in outcome.refused]


def test_data_by_alias_becomes_readings_unmapped_metrics_are_ignored() -> None:
    node = born()
    outcome = node.handle(
        topic("NDATA"), payload(1, (None, 1, "Double", 0.4), (None, 2, "Double", 81.0)), NOW
    )
    assert reasons(outcome) == []
    (message,) = outcome.messages
    assert (message.meter, message.unit, message.kind) == ("coal", "t", "interval")
    assert [(s.ts_ms, s.value) for s in message.samples] == [(NOW, 0.4)]
    assert node.view()["ignored_metrics"] == 1


def test_unknown_alias_text_and_nan_are_refused_one_by_one() -> None:
    node = born()
    outcome = node.handle(
        topic("NDATA"), payload(1, (None, 9, "Double", 1.0), ("Coal", None, "Double", math.nan)),
        NOW,
    )  # fmt: skip
    assert reasons(outcome) == [wire.Reason.UNKNOWN_METRIC, wire.Reason.NOT_FINITE]
    assert "alias 9" in outcome.refused[0].detail
    text = node.handle(topic("NDATA"), payload(2, ("Coal", None, "String", "high")), NOW)
    assert reasons(text) == [wire.Reason.BAD_SCHEMA]


def test_seq_wraps_at_255_and_a_gap_refuses_until_the_rebirth() -> None:
    node = born(seq=254)
    assert (
        reasons(node.handle(topic("NDATA"), payload(255, ("Coal", None, "Double", 1)), NOW)) == []
    )
    assert reasons(node.handle(topic("NDATA"), payload(0, ("Coal", None, "Double", 1)), NOW)) == []
    gap = node.handle(topic("NDATA"), payload(2, ("Coal", None, "Double", 1)), NOW)
    assert (reasons(gap), gap.rebirth) == ([wire.Reason.SEQ_GAP], True)
    assert "expected 1" in gap.refused[0].detail
    after = node.handle(topic("NDATA"), payload(3, ("Coal", None, "Double", 1)), NOW + 1000)
    assert (reasons(after), after.rebirth) == ([wire.Reason.NO_BIRTH], False)  # asked already
    later = node.handle(topic("NDATA"), payload(4, ("Coal", None, "Double", 1)), NOW + 6000)
    assert later.rebirth  # asked again: the first request went unanswered
    rebirth = payload(0, ("bdSeq", None, "Int64", 7), ("Coal", 1, "Double", 0.0))
    node.handle(topic("NBIRTH"), rebirth, NOW + 7000)
    resumed = node.handle(topic("NDATA"), payload(1, (None, 1, "Double", 1.0)), NOW + 8000)
    assert reasons(resumed) == []
    assert len(resumed.messages) == 1


def test_only_the_death_of_this_session_takes_the_node_offline() -> None:
    node = born(bd_seq=7)
    node.handle(topic("NDEATH"), payload(None, ("bdSeq", None, "Int64", 6)), NOW)
    assert node.view()["online"] is True  # a late will of the last session
    node.handle(topic("NDEATH"), payload(None, ("bdSeq", None, "Int64", 7)), NOW)
    assert node.view()["online"] is False
    dead = node.handle(topic("NDATA"), payload(1, ("Coal", None, "Double", 1)), NOW)
    assert reasons(dead) == [wire.Reason.NO_BIRTH]


def test_bad_protobuf_and_wrong_topics_are_refused() -> None:
    node = born()
    assert reasons(node.handle(topic("NDATA"), b"\xff\x00garbage", NOW)) == [
        wire.Reason.MALFORMED_PROTOBUF
    ]
    assert reasons(node.handle(f"spBv1.0/{GROUP}/NDATA/other", b"", NOW)) == [
        wire.Reason.MISADDRESSED
    ]
    assert reasons(node.handle(f"spBv1.0/{GROUP}/XDATA/{NODE}", b"", NOW)) == [
        wire.Reason.MISADDRESSED
    ]
    # Our own rebirth request comes back on the node's topics: not a refusal.
    assert node.handle(topic("NCMD"), wire.encode_rebirth(NOW), NOW) == SparkplugOutcome()


@pytest.mark.parametrize(
    ("sent", "accepted", "hint"),
    [("tonne", True, None), ("tonnes", True, None), ("kg", False, "1 kg = 0.001 t"),
     ("kWh", False, None), ("t", True, None)],
)  # fmt: skip
def test_unit_spellings_pint_knows_are_the_same_unit(
    sent: str, accepted: bool, hint: str | None
) -> None:
    validator = MeterValidator(plant(), AgentConfig(), lambda: NOW)
    message = wire.MeterMessage("p1", "coal", sent, "interval", None, (wire.Sample(NOW, 0.3),))
    verdict = validator.check(message)
    assert bool(verdict.accepted) is accepted
    if not accepted:
        (error,) = verdict.rejected
        assert error.reason == wire.Reason.WRONG_UNIT
        assert hint is None or hint in error.detail


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        ({"payload": {"format": "json", "value": "$[["}}, "meters[0].payload.value",
         "not a JSONPath"),
        ({"payload": {"format": "json"}}, "meters[0].payload", "needs `value`"),
        ({"payload": {"format": "bare", "value": "$.v"}}, "meters[0].payload",
         "apply to format json"),
        ({"payload": {"format": "csv"}}, "meters[0].payload.format", "'envelope', 'bare'"),
    ],
)  # fmt: skip
def test_payload_mistakes_stop_the_service_with_file_key_and_problem(
    tmp_path: Path, edit: dict[str, Any], key: str, problem: str
) -> None:
    path = write_config(tmp_path, plants={"p1": "cement-01"})
    plant_file = tmp_path / "plants" / "p1.yaml"
    data = yaml.safe_load(plant_file.read_text())
    data["meters"][0].update(edit)
    plant_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == str(plant_file)
    assert caught.value.key.startswith(key)
    assert problem in caught.value.problem


def test_sparkplug_metric_of_an_unknown_meter_stops_the_service(tmp_path: Path) -> None:
    path = write_config(tmp_path, plants={"p1": "cement-01"})
    plant_file = tmp_path / "plants" / "p1.yaml"
    data = yaml.safe_load(plant_file.read_text())
    data["sparkplug"] = {"group": "g", "edge_node": "n",
                         "metrics": [{"name": "Coal", "meter": "ghost"}]}  # fmt: skip
    plant_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == str(plant_file)
    assert "sparkplug.metrics[0].meter" in str(caught.value)
    assert "no meter 'ghost'" in caught.value.problem
