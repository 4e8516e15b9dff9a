"""The documented example subscriber receives events from the real JetStream stream."""

import importlib.util
from pathlib import Path

import nats
import pytest
from wgs_contracts import subjects
from wgs_contracts.messages import InstanceStatus, InstanceStatusChanged
from wgs_kit.messaging import encode

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "subscriber.py"


async def test_example_subscriber_prints_published_events(
    migrated: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = InstanceStatusChanged(
        instance_id=424242, tenant_id=1, generation=1, node="n", status=InstanceStatus.RUNNING
    )
    nc = await nats.connect(migrated["NATS_URL"])
    try:
        await nc.jetstream().publish(
            subjects.instance_status(424242), encode(event), headers={"Nats-Msg-Id": event.event_id}
        )
    finally:
        await nc.close()
    spec = importlib.util.spec_from_file_location("example_subscriber", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("NATS_URL", migrated["NATS_URL"])
    await module.follow(seconds=3)
    assert event.event_id in capsys.readouterr().out
