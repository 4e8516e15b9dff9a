"""GenerationLedger: the highest generation seen per instance, persisted atomically."""

import json
import os
from pathlib import Path

from wgs_node_agent import fencing
from wgs_node_agent.fencing import GenerationLedger


def test_empty_ledger(tmp_path):
    ledger = GenerationLedger(tmp_path / "generations.json")
    assert ledger.seen(7) == 0
    assert not ledger.is_stale(7, 1)
    assert not (tmp_path / "generations.json").exists()


def test_records_only_increases(tmp_path):
    ledger = GenerationLedger(tmp_path / "generations.json")
    ledger.record(7, 3)
    assert ledger.seen(7) == 3
    ledger.record(7, 2)
    assert ledger.seen(7) == 3
    ledger.record(7, 3)
    assert ledger.seen(7) == 3
    ledger.record(7, 5)
    assert ledger.seen(7) == 5


def test_instances_are_independent(tmp_path):
    ledger = GenerationLedger(tmp_path / "generations.json")
    ledger.record(7, 3)
    ledger.record(8, 1)
    assert (ledger.seen(7), ledger.seen(8), ledger.seen(9)) == (3, 1, 0)


def test_is_stale(tmp_path):
    ledger = GenerationLedger(tmp_path / "generations.json")
    ledger.record(7, 3)
    assert ledger.is_stale(7, 2)
    assert ledger.is_stale(7, 0)
    assert not ledger.is_stale(7, 3)  # the current generation is not stale
    assert not ledger.is_stale(7, 4)
    assert not ledger.is_stale(8, 1)  # another instance is unaffected


def test_is_stale_does_not_record(tmp_path):
    ledger = GenerationLedger(tmp_path / "generations.json")
    ledger.is_stale(7, 9)
    assert ledger.seen(7) == 0


def test_persists_across_instances(tmp_path):
    path = tmp_path / "generations.json"
    first = GenerationLedger(path)
    first.record(7, 3)
    first.record(12, 8)
    second = GenerationLedger(path)
    assert second.seen(7) == 3
    assert second.seen(12) == 8
    assert second.is_stale(7, 2)
    second.record(7, 2)
    assert GenerationLedger(path).seen(7) == 3
    second.record(7, 4)
    assert GenerationLedger(path).seen(7) == 4
    assert GenerationLedger(path).seen(12) == 8


def test_creates_parent_folder(tmp_path):
    path = tmp_path / "agent" / "state" / "generations.json"
    GenerationLedger(path).record(1, 1)
    assert GenerationLedger(path).seen(1) == 1


def test_file_is_plain_json(tmp_path):
    path = tmp_path / "generations.json"
    ledger = GenerationLedger(path)
    ledger.record(7, 3)
    ledger.record(8, 1)
    assert json.loads(path.read_text()) == {"7": 3, "8": 1}


def test_written_atomically_without_leftovers(tmp_path, monkeypatch):
    path = tmp_path / "generations.json"
    ledger = GenerationLedger(path)
    ledger.record(7, 1)
    replaced: list[tuple[str, dict, dict]] = []
    real_replace = os.replace

    def spy(src, dst):
        # At swap time the new file is complete and the old one still intact.
        replaced.append((str(dst), json.loads(Path(src).read_text()), json.loads(Path(dst).read_text())))
        real_replace(src, dst)

    monkeypatch.setattr(fencing.os, "replace", spy)
    ledger.record(7, 2)
    assert replaced == [(str(path), {"7": 2}, {"7": 1})]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generations.json"]
    assert not list(tmp_path.glob("*.tmp"))


def test_no_write_when_not_newer(tmp_path, monkeypatch):
    path = tmp_path / "generations.json"
    ledger = GenerationLedger(path)
    ledger.record(7, 5)
    calls: list[object] = []
    monkeypatch.setattr(fencing.os, "replace", lambda *args: calls.append(args))
    ledger.record(7, 5)
    ledger.record(7, 4)
    assert calls == []
