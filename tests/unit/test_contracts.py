"""wgs_contracts: wire round-trips, tagged unions, subjects vs streams, resource quantities, labels."""

import json
import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from wgs_contracts import SCHEMA_VERSION, labels, subjects
from wgs_contracts.instance_events import EVENT_KINDS
from wgs_contracts.messages import (
    WIRE_TYPES,
    ApiKeysRevoked,
    AssignmentsReply,
    AssignmentsRequest,
    ControlCommand,
    CreateInstance,
    DeleteInstance,
    DrainReply,
    DrainRequest,
    HandOffReply,
    HandOffRequest,
    InstanceSpec,
    InstanceStatus,
    InstanceStatusChanged,
    MigrateReply,
    MigrateRequest,
    NodeCommand,
    NodeHeartbeat,
    NodeStatusChanged,
    Provider,
    SandboxPhoneKnown,
    SandboxPhoneLookup,
    SchedulerLeaderElected,
    SnapshotTaken,
    StartInstance,
    StopInstance,
)
from wgs_contracts.resources import InvalidQuantity, format_cpu, parse_cpu, parse_memory
from wgs_contracts.streams import ALL_STREAMS, COMMANDS, DEAD_LETTERS, EVENTS, NODE_COMMANDS, StreamSpec

AT = datetime(2024, 5, 17, 12, 34, 56, 789_000, tzinfo=UTC)
SPEC = InstanceSpec(
    instance_id=7,
    tenant_id=3,
    provider=Provider.SANDBOX,
    nano_cpus=500_000_000,
    memory_bytes=256 * 2**20,
    pids_limit=128,
)
START = StartInstance(spec=SPEC, generation=4)

# One sample per wire type, every field set to a non-default, meaningful value.
SAMPLES: dict[type, Any] = {
    CreateInstance: CreateInstance(instance_id=7, tenant_id=3),
    DeleteInstance: DeleteInstance(instance_id=8, tenant_id=3),
    StartInstance: START,
    StopInstance: StopInstance(instance_id=7, tenant_id=3, generation=4, remove=False),
    InstanceStatusChanged: InstanceStatusChanged(
        instance_id=7,
        tenant_id=3,
        generation=4,
        node="n1",
        status=InstanceStatus.RUNNING,
        reason="container started",
        event_id="0123456789abcdef0123456789abcdef",
        at=AT,
    ),
    NodeHeartbeat: NodeHeartbeat(
        node="n1",
        runtime="docker",
        nano_cpus=4_000_000_000,
        memory_bytes=8 * 2**30,
        providers=("sandbox", "whatsmeow"),
        running_instances=(7, 9),
        at=AT,
    ),
    SchedulerLeaderElected: SchedulerLeaderElected(holder="scheduler-host-1:4242", at=AT),
    AssignmentsRequest: AssignmentsRequest(node="n2"),
    AssignmentsReply: AssignmentsReply(
        node="n1",
        assignments=(
            START,
            StartInstance(
                spec=InstanceSpec(
                    instance_id=9,
                    tenant_id=5,
                    provider=Provider.WHATSMEOW,
                    nano_cpus=1_000_000_000,
                    memory_bytes=2**30,
                    pids_limit=256,
                ),
                generation=1,
            ),
        ),
    ),
    NodeStatusChanged: NodeStatusChanged(node="n1", status="lost", moved_instances=(7, 9), at=AT),
    ApiKeysRevoked: ApiKeysRevoked(tenant_id=3, key_ids=(11, 12), at=AT),
    SnapshotTaken: SnapshotTaken(
        node="n1",
        instance_id=7,
        generation=4,
        reason="periodic",
        version=12,
        size_bytes=10 * 2**20,
        pause_ms=3.5,
        at=AT,
    ),
    HandOffRequest: HandOffRequest(instance_id=7, generation=4),
    HandOffReply: HandOffReply(ok=False, version=12, error="final snapshot failed"),
    MigrateRequest: MigrateRequest(instance_id=7, target_node="n2"),
    MigrateReply: MigrateReply(
        status=200,
        node="n2",
        error="none",
        running=InstanceStatusChanged(
            instance_id=7,
            tenant_id=3,
            generation=5,
            node="n2",
            status=InstanceStatus.RUNNING,
            reason="migrated",
            event_id="fedcba9876543210fedcba9876543210",
            at=AT,
        ),
    ),
    DrainRequest: DrainRequest(node="n1"),
    DrainReply: DrainReply(status=200, node="n1", moved=(7,), failed={9: "no room"}, error="partly"),
    SandboxPhoneLookup: SandboxPhoneLookup(phone="491700000002"),
    SandboxPhoneKnown: SandboxPhoneKnown(known=False),
}


def tag_of(cls: type) -> str:
    tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
    assert isinstance(tag, str)
    return tag


# --- messages ------------------------------------------------------------------------------------


def test_every_wire_type_has_a_sample():
    missing = [t.__name__ for t in WIRE_TYPES if t not in SAMPLES]
    assert not missing, f"add a round-trip sample for {missing}"
    assert set(SAMPLES) == set(WIRE_TYPES)


@pytest.mark.parametrize("cls", WIRE_TYPES, ids=lambda t: t.__name__)
def test_sample_sets_every_field(cls):
    sample = SAMPLES[cls]
    assert type(sample) is cls
    for field in msgspec.structs.fields(cls):
        value = getattr(sample, field.name)
        assert value is not None, field.name
        if field.name != "schema_version" and field.default is not msgspec.NODEFAULT:
            assert value != field.default, f"{cls.__name__}.{field.name} left at its default"


@pytest.mark.parametrize("cls", WIRE_TYPES, ids=lambda t: t.__name__)
def test_round_trip(cls):
    sample = SAMPLES[cls]
    data = msgspec.json.encode(sample)
    raw = json.loads(data)
    assert raw["type"] == tag_of(cls)
    assert raw["schema_version"] == SCHEMA_VERSION
    decoded = msgspec.json.decode(data, type=cls)
    assert type(decoded) is cls
    assert decoded == sample


def test_tags_are_unique():
    tags = [tag_of(t) for t in WIRE_TYPES]
    assert len(tags) == len(set(tags))


@pytest.mark.parametrize("cls", [CreateInstance, DeleteInstance], ids=lambda t: t.__name__)
def test_control_command_union_dispatches_on_tag(cls):
    decoded = msgspec.json.decode(msgspec.json.encode(SAMPLES[cls]), type=ControlCommand)
    assert type(decoded) is cls
    assert decoded == SAMPLES[cls]


@pytest.mark.parametrize("cls", [StartInstance, StopInstance], ids=lambda t: t.__name__)
def test_node_command_union_dispatches_on_tag(cls):
    decoded = msgspec.json.decode(msgspec.json.encode(SAMPLES[cls]), type=NodeCommand)
    assert type(decoded) is cls
    assert decoded == SAMPLES[cls]


def test_delete_and_create_with_same_fields_are_told_apart():
    body = b'{"type":"instance.delete","instance_id":5,"tenant_id":2}'
    decoded = msgspec.json.decode(body, type=ControlCommand)
    assert decoded == DeleteInstance(instance_id=5, tenant_id=2)


def test_explicit_schema_version_in_json():
    body = b'{"type":"instance.create","schema_version":1,"instance_id":11,"tenant_id":2}'
    decoded = msgspec.json.decode(body, type=ControlCommand)
    assert decoded == CreateInstance(instance_id=11, tenant_id=2, schema_version=1)
    assert decoded.schema_version == 1


def test_missing_schema_version_defaults_to_current():
    body = b'{"type":"instance.stop","instance_id":1,"tenant_id":2,"generation":3}'
    decoded = msgspec.json.decode(body, type=NodeCommand)
    assert decoded == StopInstance(instance_id=1, tenant_id=2, generation=3)
    assert decoded.schema_version == SCHEMA_VERSION
    assert isinstance(decoded, StopInstance)
    assert decoded.remove is True


@pytest.mark.parametrize(
    ("body", "union"),
    [
        (b'{"type":"instance.bogus","instance_id":1,"tenant_id":2}', ControlCommand),
        (b'{"type":"instance.bogus","instance_id":1,"tenant_id":2,"generation":3}', NodeCommand),
        # A member of the other family is an unknown tag here.
        (b'{"type":"instance.stop","instance_id":1,"tenant_id":2,"generation":3}', ControlCommand),
        (b'{"type":"instance.create","instance_id":1,"tenant_id":2}', NodeCommand),
        (b'{"instance_id":1,"tenant_id":2}', ControlCommand),
    ],
)
def test_unknown_or_missing_tag_is_rejected(body, union):
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=union)


def test_wrong_field_type_is_rejected():
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type":"instance.create","instance_id":"x","tenant_id":2}', type=CreateInstance)


# --- subjects ------------------------------------------------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a trailing `>` is one or more tokens."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def filters_overlap(a: str, b: str) -> bool:
    """True when some concrete subject matches both wildcard filters."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        if i >= len(ta) or i >= len(tb):
            return False
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            return True
        if x != "*" and y != "*" and x != y:
            return False
    return True


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("wgs.cmd.>", "wgs.cmd.instance.create", True),
        ("wgs.cmd.>", "wgs.cmd", False),
        ("wgs.node.*.cmd", "wgs.node.n1.cmd", True),
        ("wgs.node.*.cmd", "wgs.node.n1.x.cmd", False),
        ("wgs.node.*.cmd", "wgs.node.n1", False),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_matcher_itself(pattern, subject, expected):
    assert subject_matches(pattern, subject) is expected


def test_overlap_helper_itself():
    assert filters_overlap("wgs.evt.>", "wgs.evt.instance.*.status")
    assert filters_overlap("wgs.*.x", "wgs.y.*")
    assert not filters_overlap("wgs.cmd.>", "wgs.node.*.cmd")
    assert not filters_overlap("a.*", "a.*.b")


def test_builders_produce_documented_names():
    assert subjects.node_commands("n1") == "wgs.node.n1.cmd"
    assert subjects.instance_status(42) == "wgs.evt.instance.42.status"
    assert subjects.node_heartbeat("n1") == "wgs.evt.node.n1.heartbeat"
    assert subjects.node_assignments("n1") == "wgs.rpc.node.n1.assignments"
    assert subjects.dead_letter("scheduler-create") == "wgs.dlq.scheduler-create"
    assert subjects.INSTANCE_CREATE == "wgs.cmd.instance.create"
    assert subjects.INSTANCE_DELETE == "wgs.cmd.instance.delete"
    assert subjects.SCHEDULER_LEADER == "wgs.evt.scheduler.leader"
    assert subjects.tenant_keys_revoked(3) == "wgs.evt.tenant.3.keys_revoked"


def test_per_kind_filters_match_the_event_kinds():
    assert subjects.all_instance_events_of(EVENT_KINDS["instance.status"]) == subjects.ALL_INSTANCE_STATUS
    assert subjects.all_instance_events_of(EVENT_KINDS["connection"]) == subjects.ALL_INSTANCE_CONNECTION
    assert subjects.all_instance_events_of(EVENT_KINDS["message.status"]) == subjects.ALL_MESSAGE_STATUS
    for tag, kind in EVENT_KINDS.items():
        assert subject_matches(subjects.all_instance_events_of(kind), subjects.instance_event(7, kind)), tag
        assert subject_matches(subjects.ALL_INSTANCE_EVENTS, subjects.instance_event(7, kind)), tag


def test_builders_match_their_wildcards():
    assert subject_matches(subjects.ALL_NODE_COMMANDS, subjects.node_commands("n1"))
    assert subject_matches(subjects.ALL_INSTANCE_STATUS, subjects.instance_status(42))
    assert subject_matches(subjects.ALL_INSTANCE_EVENTS, subjects.instance_status(42))
    assert subject_matches(subjects.ALL_NODE_HEARTBEATS, subjects.node_heartbeat("n1"))
    assert subject_matches(subjects.ALL_NODE_ASSIGNMENTS, subjects.node_assignments("n1"))
    assert subject_matches(subjects.ALL_DEAD_LETTERS, subjects.dead_letter("x"))
    assert subject_matches(subjects.ALL_COMMANDS, subjects.INSTANCE_CREATE)
    assert subject_matches(subjects.ALL_TENANT_KEYS_REVOKED, subjects.tenant_keys_revoked(3))


def streams_matching(subject: str) -> list[StreamSpec]:
    return [s for s in ALL_STREAMS if any(subject_matches(f, subject) for f in s.subjects)]


@pytest.mark.parametrize(
    ("subject", "stream"),
    [
        (subjects.INSTANCE_CREATE, COMMANDS),
        (subjects.INSTANCE_DELETE, COMMANDS),
        (subjects.node_commands("n1"), NODE_COMMANDS),
        (subjects.node_commands("node-b"), NODE_COMMANDS),
        (subjects.instance_status(1), EVENTS),
        (subjects.instance_status(987654), EVENTS),
        (subjects.dead_letter("scheduler"), DEAD_LETTERS),
        (subjects.dead_letter("state-status"), DEAD_LETTERS),
    ],
)
def test_durable_subject_lands_in_exactly_one_stream(subject, stream):
    assert streams_matching(subject) == [stream]


@pytest.mark.parametrize(
    "subject",
    [
        subjects.node_heartbeat("n1"),
        subjects.SCHEDULER_LEADER,
        subjects.tenant_keys_revoked(3),
        subjects.node_assignments("n1"),
    ],
)
def test_core_nats_subjects_match_no_stream(subject):
    assert streams_matching(subject) == []


def test_stream_filters_do_not_overlap():
    filters = [(s.name, f) for s in ALL_STREAMS for f in s.subjects]
    for i, (name_a, a) in enumerate(filters):
        for name_b, b in filters[i + 1 :]:
            assert not filters_overlap(a, b), f"{name_a} {a!r} overlaps {name_b} {b!r}"


def test_stream_names_are_unique():
    names = [s.name for s in ALL_STREAMS]
    assert len(names) == len(set(names))


# --- resources -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * 2**20),
        ("2g", 2 * 2**30),
        ("256k", 256 * 2**10),
        ("512M", 512 * 2**20),
        ("1G", 2**30),
        ("1024", 1024),
        ("1.5g", int(1.5 * 2**30)),
        ("512mb", 512 * 2**20),
        (" 64m ", 64 * 2**20),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "invalid", "-1m", "12x", "0", "0m", "m", "1..5g", "1 t"])
def test_parse_memory_rejects(text):
    with pytest.raises(InvalidQuantity):
        parse_memory(text)


def test_invalid_quantity_is_a_value_error():
    assert issubclass(InvalidQuantity, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.5", 500_000_000),
        (2, 2_000_000_000),
        (0.25, 250_000_000),
        ("1", 1_000_000_000),
        ("0.001", 1_000_000),
        (1.5, 1_500_000_000),
    ],
)
def test_parse_cpu(value, expected):
    assert parse_cpu(value) == expected


@pytest.mark.parametrize(
    "value", ["0", "-1", "abc", True, False, math.nan, "nan", "inf", math.inf, "0.0001", -0.5, "", None]
)
def test_parse_cpu_rejects(value):
    with pytest.raises(InvalidQuantity):
        parse_cpu(value)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(500_000_000, "0.5"), (1_000_000_000, "1"), (2_000_000_000, "2"), (250_000_000, "0.25")],
)
def test_format_cpu(nanos, text):
    assert format_cpu(nanos) == text


def test_format_cpu_round_trips_parse_cpu():
    for text in ("0.5", "1", "0.25", "3", "0.001"):
        assert format_cpu(parse_cpu(text)) == text


# --- labels --------------------------------------------------------------------------------------


def test_provider_image():
    assert labels.provider_image("sandbox") == "wgs-provider-sandbox:latest"
    assert labels.provider_image(Provider.WHATSMEOW.value) == "wgs-provider-whatsmeow:latest"


def test_label_keys_are_distinct_and_namespaced():
    keys = [
        labels.MANAGED,
        labels.INSTANCE_ID,
        labels.TENANT_ID,
        labels.GENERATION,
        labels.PROVIDER,
        labels.NODE,
    ]
    assert len(set(keys)) == len(keys)
    assert all(k.startswith("io.wgs.") for k in keys)
