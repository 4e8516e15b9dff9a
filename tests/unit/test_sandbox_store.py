"""The sandbox's state folder: snapshot + append-only journal, replay, torn tails, compaction, copies, migration."""

import asyncio
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wgs_sandbox import state as state_module
from wgs_sandbox import store
from wgs_sandbox.http import Request
from wgs_sandbox.provider import SandboxProvider
from wgs_sandbox.state import State

PHONE = "491700000001"
PEER = "491700000002"
TEXT = {"type": "text", "text": "hello"}


def make(folder: Path) -> SandboxProvider:
    return SandboxProvider(instance_id="7", data_dir=folder, phone=PHONE)


async def call(provider: SandboxProvider, method: str, path: str, body: Any = None, **query: Any) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    response = await provider.handle(Request(method, path, {k: [str(v)] for k, v in query.items()}, {}, raw))
    return response.status, response.body


async def pair(provider: SandboxProvider) -> None:
    qr = (await call(provider, "GET", "/qr"))[1]["qr"]
    assert (await call(provider, "POST", "/sandbox/scan", {"qr": qr}))[0] == 200


async def send(provider: SandboxProvider, message_id: str) -> tuple[int, Any]:
    return await call(provider, "POST", "/messages", {"id": message_id, "to": PEER, "content": TEXT})


def as_json(state: State) -> dict[str, Any]:
    """A state as the JSON object of a snapshot (what `State.from_json` reads)."""
    return json.loads(
        json.dumps(
            {
                "phone_id": state.phone_id,
                "next_seq": state.next_seq,
                "outbox": state.outbox,
                "sent": state.sent,
                "delivered": list(state.delivered),
            }
        )
    )


def saved(provider: SandboxProvider) -> dict[str, Any]:
    """The durable state as plain JSON (what a restart must give back)."""
    return as_json(provider.saved)


def journal(folder: Path) -> Path:
    [path] = sorted(folder.glob("journal-*.jsonl"))
    return path


async def paired_with_sends(folder: Path, sends: int = 3) -> SandboxProvider:
    provider = make(folder)
    await pair(provider)
    for number in range(sends):
        assert (await send(provider, f"m{number}"))[0] == 200
    return provider


# --- torn and corrupt records ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(lambda record: record[: len(record) // 2], id="half-a-record"),
        pytest.param(lambda record: b"\0" * 300, id="zeros"),
        pytest.param(lambda record: record[:12] + b"X" + record[13:], id="bad-checksum-last-line"),
        pytest.param(lambda record: record[:-1], id="no-newline"),
    ],
)
async def test_a_torn_last_record_is_ignored_and_cut_off_before_the_next_append(tmp_path, tail, caplog):
    first = await paired_with_sends(tmp_path)
    expected = saved(first)
    first.store.close()
    record = store.encode_record([["s", "torn", "sent"], ["e", {"seq": 99, "type": "x", "at": "", "data": {}}]])
    with open(journal(tmp_path), "ab") as fh:
        fh.write(tail(record))

    second = make(tmp_path)
    assert saved(second) == expected
    assert "ignoring a torn record" in caplog.text
    assert (await send(second, "after"))[0] == 200  # appended where the torn record began
    expected = saved(second)
    second.store.close()

    third = make(tmp_path)
    assert saved(third) == expected
    assert "torn" not in third.sent


async def test_a_corrupt_record_in_the_middle_refuses_to_start(tmp_path):
    (await paired_with_sends(tmp_path)).store.close()
    path = journal(tmp_path)
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"m0","sent"', b'"m0","SENT"', 1)  # the first send, not the last
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=r"corrupt record at byte \d+ followed by more records \(checksum mismatch\)"):
        make(tmp_path)


async def test_a_journal_gap_or_a_newer_version_refuses_to_start(tmp_path):
    (await paired_with_sends(tmp_path)).store.close()
    journal(tmp_path).rename(tmp_path / store.journal_file(2))
    with pytest.raises(ValueError, match="do not continue the snapshot"):
        make(tmp_path)
    (tmp_path / store.journal_file(2)).unlink()
    (tmp_path / store.journal_file(1)).write_bytes(store.encode_record({"version": 3, "journal": 1}))
    with pytest.raises(ValueError, match="journal version 3, this provider reads 2"):
        make(tmp_path)


# --- replay and compaction -----------------------------------------------------------------------------


async def test_a_restart_after_many_changes_replays_them_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_JOURNAL_BYTES", 16 * 1024)
    monkeypatch.setattr(state_module, "MAX_REMEMBERED", 50)
    monkeypatch.setattr(state_module, "MAX_OUTBOX", 40)
    provider = make(tmp_path)
    await pair(provider)
    for number in range(400):
        assert (await send(provider, f"m{number}"))[0] == 200
        if number % 3 == 0:
            await call(provider, "POST", "/sandbox/receipt", {"id": f"m{number}", "status": "read"})
        if number % 7 == 0:
            await call(provider, "POST", "/sandbox/deliver", {"id": f"x{number}", "from": PEER, "content": TEXT})
        if number % 11 == 0:
            await call(provider, "POST", "/events/ack", {"seq": provider.next_seq - 5})
        if number % 97 == 0:
            await call(provider, "POST", "/logout")
            await pair(provider)
    expected = saved(provider)
    assert provider.store.generation > 3  # compacted several times
    assert len(expected["sent"]) == 50
    assert len(expected["outbox"]) <= 40
    provider.store.close()

    again = make(tmp_path)
    assert saved(again) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.journal_file(again.store.generation), "snapshot.json"]


async def test_compaction_while_concurrent_sends_are_committed(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_JOURNAL_BYTES", 8 * 1024)
    provider = make(tmp_path)
    await pair(provider)
    compactions = 0
    real_start = store.Store.start_next_journal

    def start_next_journal(self: store.Store) -> int:
        nonlocal compactions
        compactions += 1
        return real_start(self)

    monkeypatch.setattr(store.Store, "start_next_journal", start_next_journal)

    async def sender(worker: int) -> None:
        for number in range(40):
            assert (await send(provider, f"m{worker}-{number}"))[0] == 200
            if number % 10 == 9:  # as the node agent does, so the snapshot stays small
                assert (await call(provider, "POST", "/events/ack", {"seq": provider.next_seq - 1}))[0] == 200

    await asyncio.gather(*(sender(worker) for worker in range(16)))
    if provider._compaction:
        await provider._compaction
    assert compactions >= 3
    assert provider.store.generation == 1 + compactions
    expected = saved(provider)
    assert len(expected["sent"]) == 640
    provider.store.close()
    again = make(tmp_path)
    assert saved(again) == expected
    assert again.next_seq == provider.next_seq


async def test_sends_are_committed_while_a_compactions_snapshot_is_being_written(tmp_path, monkeypatch):
    """The snapshot is written in the background: the appends after the journal switch do not wait for it."""
    monkeypatch.setattr(store, "MAX_JOURNAL_BYTES", 4 * 1024)
    provider = make(tmp_path)
    await pair(provider)
    snapshot_started, release = threading.Event(), threading.Event()
    real_write = store.Store.write_snapshot

    def write_snapshot(self: store.Store, payload: bytes, generation: int) -> None:
        snapshot_started.set()
        assert release.wait(timeout=30)  # held until the sends below are committed
        real_write(self, payload, generation)

    monkeypatch.setattr(store.Store, "write_snapshot", write_snapshot)
    try:
        number = 0
        while not snapshot_started.is_set():
            number += 1
            assert number < 1_000, "no compaction started"
            assert (await send(provider, f"before-{number}"))[0] == 200
        sends = asyncio.gather(*(send(provider, f"during-{n}") for n in range(20)))
        during = await asyncio.wait_for(sends, timeout=10)
        assert all(status == 200 for status, _ in during)
    finally:
        release.set()
    assert provider._compaction is not None
    await provider._compaction
    expected = saved(provider)
    provider.store.close()
    again = make(tmp_path)
    assert saved(again) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.journal_file(again.store.generation), "snapshot.json"]


@pytest.mark.parametrize("entries", [0, 1, 7, 9])
def test_a_snapshot_encoded_in_pieces_is_the_state_as_json(monkeypatch, entries):
    monkeypatch.setattr(store, "SNAPSHOT_SLICE", 3)
    state = State(phone_id=PHONE if entries else None, next_seq=entries + 1)
    for number in range(entries):
        state.apply(["e", {"seq": number + 1, "type": "message.status", "at": "t", "data": {"n": "ü"}}])
        state.apply(["s", f"m{number}", "sent"])
        state.apply(["d", f"in{number}"])
    at_once = json.dumps({"version": store.VERSION, "journal": 5, "state": as_json(state)}, separators=(",", ":"))
    view = store.SnapshotView.of(state)
    state.apply(["s", "later", "read"])  # a change after the view was taken is not in it
    pieces = list(view.pieces(5))
    assert b"".join(pieces) == at_once.encode()  # the bytes of the snapshot encoded at once, as before
    assert len(pieces) == 4 + 3 * -(-entries // 3)  # head, 3 separators, then one piece per slice of each kind


async def test_the_provider_answers_requests_between_the_pieces_of_a_snapshot(tmp_path, monkeypatch):
    """Encoded at once, a snapshot of 10 000 remembered ids holds the provider for 12-16 ms (decision 42)."""
    monkeypatch.setattr(store, "MAX_JOURNAL_BYTES", 16 * 1024)
    monkeypatch.setattr(store, "SNAPSHOT_SLICE", 10)
    provider = make(tmp_path)
    await pair(provider)
    order: list[str] = []
    real_pieces = store.SnapshotView.pieces

    def pieces(self: store.SnapshotView, generation: int) -> Iterator[bytes]:
        for piece in real_pieces(self, generation):
            order.append("piece")
            yield piece

    monkeypatch.setattr(store.SnapshotView, "pieces", pieces)
    ticking = True

    async def tick() -> None:
        while ticking:
            order.append("tick")
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    number = 0
    while provider._compaction is None:
        number += 1
        assert number < 1_000, "no compaction started"
        assert (await send(provider, f"m{number}"))[0] == 200
    await provider._compaction
    ticking = False
    await ticker
    encoded = "".join("p" if step == "piece" else "t" for step in order)
    assert encoded.count("p") > 10  # the ids of the sends above, 10 per piece
    assert "pp" not in encoded, encoded  # the loop ran between any two pieces
    expected = saved(provider)
    provider.store.close()
    assert saved(make(tmp_path)) == expected


class CopyingOs:
    """The `os` module for `wgs_sandbox.store`, copying the state folder before and after each file-system step.

    Writes go out half by half with a copy in between, as if the container froze during a write.
    """

    STEPS = frozenset({"write", "fsync", "fdatasync", "replace", "unlink", "ftruncate", "close", "open"})

    def __init__(self, folder: Path, copies: Path) -> None:
        self.folder, self.copies = folder, copies
        self.taken: list[tuple[Path, int]] = []  # (copy, records durable when it was taken)
        self.durable = 0

    def copy(self) -> None:
        target = self.copies / str(len(self.taken))
        shutil.copytree(self.folder, target)
        self.taken.append((target, self.durable))

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args: Any) -> Any:
            self.copy()
            if name == "write" and len(args[1]) > 16:
                args = (args[0], args[1][: len(args[1]) // 2])
            result = real(*args)
            self.copy()
            return result

        return step


def test_a_copy_of_the_folder_taken_at_any_step_loads_a_state_the_provider_had(tmp_path, monkeypatch):
    folder, copies = tmp_path / "data", tmp_path / "copies"
    folder.mkdir()
    copies.mkdir()
    monkeypatch.setattr(store, "MAX_JOURNAL_BYTES", 700)
    history = [as_json(State())]
    live = State()
    snapshot: tuple[bytes, int] | None = None  # a compaction's snapshot, not yet written
    copying = CopyingOs(folder, copies)
    with monkeypatch.context() as patched:
        patched.setattr(store, "os", copying)
        journaled = store.Store(folder)
        for number in range(60):
            event = {"seq": number + 1, "type": "message.status", "at": "t", "data": {"message_id": f"m{number}"}}
            ops: list[list[Any]] = [["s", f"m{number}", "sent"], ["e", event]]
            if number % 4 == 3:
                ops.append(["a", number - 1])
            for op in ops:
                live.apply(op)
            record = store.encode_record(ops)
            due = journaled.compaction_due(len(record)) and snapshot is None
            journaled.append(record)
            copying.durable += 1
            history.append(as_json(live))
            if snapshot is not None:  # written while the next journal already holds a record, as it may be
                journaled.write_snapshot(*snapshot)
                snapshot = None
            if due:
                view = store.SnapshotView.of(live)
                generation = journaled.start_next_journal()
                snapshot = (b"".join(view.pieces(generation)), generation)
        journaled.close()
    assert journaled.generation >= 5  # compacted, with copies between all its steps
    assert len(copying.taken) > 500
    for copy, durable in copying.taken:
        loaded = store.Store(copy)
        found = as_json(loaded.state)
        loaded.close()
        # every record acknowledged so far, perhaps the one being written, nothing else
        assert found in history[durable : durable + 2], (copy, durable, sorted(os.listdir(copy)))


# --- migration -------------------------------------------------------------------------------------------


async def test_a_version_1_state_file_is_migrated(tmp_path):
    event = {"seq": 4, "type": "connection", "at": "2026-01-01T00:00:00.000Z", "data": {"state": "connected"}}
    version_1 = {
        "phone_id": PHONE,
        "next_seq": 5,
        "outbox": [event],
        "sent": {"m1": "delivered", "m2": "sent"},
        "delivered": ["x1"],
        "version": 1,
    }
    (tmp_path / store.LEGACY_FILE).write_text(json.dumps(version_1))
    provider = make(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.journal_file(1), store.SNAPSHOT_FILE]
    health = (await call(provider, "GET", "/health"))[1]
    assert (health["state"], health["phone_id"], health["last_seq"]) == ("connected", PHONE, 5)
    assert (await call(provider, "GET", "/events"))[1]["events"][0] == event
    assert await send(provider, "m1") == (200, {"id": "m1", "status": "sent"})  # remembered: not sent again
    assert await call(provider, "POST", "/sandbox/receipt", {"id": "m2", "status": "read"}) == (
        200,
        {"id": "m2", "status": "read"},
    )
    assert (await call(provider, "POST", "/sandbox/deliver", {"id": "x1", "from": PEER, "content": TEXT}))[0] == 200
    assert provider.next_seq == 8  # connected, delivered, read; x1 was not announced again
    expected = saved(provider)
    provider.store.close()

    # A copy taken between writing the snapshot and deleting state.json: the snapshot wins.
    (tmp_path / store.LEGACY_FILE).write_text(json.dumps({**version_1, "next_seq": 1}))
    again = make(tmp_path)
    assert saved(again) == expected
    assert not (tmp_path / store.LEGACY_FILE).exists()
