"""The AsyncAPI document is generated from the contracts and committed up to date."""

import json
from pathlib import Path

from wgs_contracts.asyncapi import asyncapi_document
from wgs_contracts.instance_events import EVENT_TYPES
from wgs_contracts.messages import InstanceStatusChanged

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_committed_document_matches_the_contracts():
    committed = json.loads(DOC.read_text())
    assert committed == json.loads(json.dumps(asyncapi_document())), "run: python scripts/asyncapi.py"


def test_every_public_event_has_a_channel_a_message_and_a_schema():
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    names = {t.__name__ for t in (*EVENT_TYPES, InstanceStatusChanged)}
    assert names <= set(document["components"]["messages"])
    assert names <= set(document["components"]["schemas"])
    for channel in document["channels"].values():
        for parameter in channel.get("parameters", {}):
            assert "{" + parameter + "}" in channel["address"]
    for operation in document["operations"].values():
        assert operation["action"] == "receive"
        assert operation["channel"]["$ref"].removeprefix("#/channels/") in document["channels"]
