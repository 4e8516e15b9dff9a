"""The instance's durable state in the data folder: a snapshot plus an append-only journal.

Files (format version 2):

- `snapshot.json`: `{"version": 2, "journal": G, "state": {...}}`, the state with every change
  of the journals before generation G applied and none of journal G's. Replaced atomically
  (temporary file, fsync, rename, fsync of the folder). Absent: the empty state, G = 1.
- `journal-<G>.jsonl`: one record per line, `<crc32 of the JSON, 8 hex digits> <JSON>\\n`. The
  first record is the header `{"version": 2, "journal": G}`, each further one the list of
  operations (`wgs_sandbox.state`) of one request, so a request's changes replay all or not at
  all. Records are appended, several per fsync (group commit by the provider).

Start: load the snapshot, replay the journals from its generation on, in order. The last record
of the last journal may be torn or corrupt (a crash or a copy during an append): it is ignored
(logged) and cut off before the next append. A bad record anywhere else, a missing or foreign
journal or a snapshot of a newer version raises: crashing (and being restarted) beats starting
over and reusing sequence numbers the node agent has already published.

Compaction, when the journal outgrows max(MAX_JOURNAL_BYTES, 2 x the last snapshot) (so its cost
per change stays bounded as the state grows), in two steps:
1. `start_next_journal`: appends go to journal G+1 from now on (a header and an fsync: quick);
2. `write_snapshot`, while appends go on: the snapshot of the state after the last record of
   journal G, with generation G+1 (rename), then journal G is deleted. The provider takes that
   state as a `SnapshotView` before the switch and encodes it piece by piece on its loop.
A copy of the folder taken at any instant (the node agent freezes the container and copies it)
holds either the old snapshot with journals G and G+1 (replayed in order), or the new one and
G is skipped: either way snapshot + journal prefix = a state the provider had.

A version 1 folder (one `state.json`) is migrated on start: its content is written as the
snapshot, then `state.json` is deleted (a copy holding both loads the snapshot).
"""

import contextlib
import json
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgs_sandbox.state import State

log = logging.getLogger(__name__)
VERSION = 2
SNAPSHOT_FILE = "snapshot.json"
LEGACY_FILE = "state.json"  # version 1: the whole state, rewritten on every change
JOURNAL_NAME = re.compile(r"journal-(\d+)\.jsonl")
MAX_JOURNAL_BYTES = 4 * 1024 * 1024
SNAPSHOT_SLICE = 1_000  # entries per piece of an encoded snapshot: about half a millisecond each


def journal_file(generation: int) -> str:
    """The file name of journal `generation`."""
    return f"journal-{generation:08d}.jsonl"


def compact_json(value: Any) -> str:
    """`value` as JSON without spaces."""
    return json.dumps(value, separators=(",", ":"))


def encode_record(value: Any) -> bytes:
    """One journal line: checksum, space, compact JSON (which never holds a raw newline), newline."""
    payload = compact_json(value).encode()
    return b"%08x %b\n" % (zlib.crc32(payload), payload)


def decode_record(line: bytes) -> Any:
    """The value of one journal line (without its newline); ValueError when it is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        raise ValueError("not a journal record")
    if int(line[:8], 16) != zlib.crc32(line[9:]):
        raise ValueError("checksum mismatch")
    return json.loads(line[9:])


def read_journal(path: Path, generation: int) -> tuple[list[list[Any]], int, str | None]:
    """The records of a journal after its header, the length of its intact part, and what is wrong with its tail.

    A damaged record followed by another line raises; a damaged or unterminated last one is
    reported as the tail problem.
    """
    data = path.read_bytes()
    records: list[list[Any]] = []
    position = 0
    while position < len(data):
        end = data.find(b"\n", position)
        try:
            if end < 0:
                raise ValueError("no newline")
            value = decode_record(data[position:end])
        except ValueError as exc:
            if 0 <= end < len(data) - 1:
                raise ValueError(
                    f"{path}: corrupt record at byte {position} followed by more records ({exc})"
                ) from None
            return records, position, f"torn record at byte {position} ({len(data) - position} bytes: {exc})"
        if position == 0:
            check_header(path, generation, value)
        elif not isinstance(value, list):
            raise ValueError(f"{path}: record at byte {position} is not a list of operations")
        else:
            records.append(value)
        position = end + 1
    return records, position, None


def check_header(path: Path, generation: int, header: Any) -> None:
    """Raise unless `header` is the header of journal `generation` of a version this code reads."""
    if not isinstance(header, dict) or header.get("journal") != generation:
        raise ValueError(f"{path}: not the header of journal {generation}")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: journal version {header.get('version')}, this provider reads {VERSION}")


def fsync_folder(folder: Path) -> None:
    """Make renames, creations and deletions in `folder` durable."""
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


@dataclass(frozen=True)
class SnapshotView:
    """A state's content at one moment, which later changes of the state do not touch (its lists are
    its own, and events are never modified once emitted).

    Taken in lists (about 2 ms for 10 000 ids of each kind), not as a copy of its ordered maps
    (about 5 ms); encoded `pieces` at a time, so that a provider on an event loop answers requests
    between them: at once, 10 000 ids of each kind took 12-16 ms, all that time holding the
    interpreter's lock even in a worker thread (decision 42).
    """

    phone_id: str | None
    next_seq: int
    outbox: list[dict[str, Any]]
    sent: list[tuple[str, str]]
    delivered: list[str]

    @classmethod
    def of(cls, state: State) -> "SnapshotView":
        """The view of `state` now."""
        return cls(state.phone_id, state.next_seq, list(state.outbox), list(state.sent.items()), list(state.delivered))

    def pieces(self, generation: int) -> Iterator[bytes]:
        """The content of `snapshot.json` (the journals before `generation` included), in pieces of at
        most SNAPSHOT_SLICE entries: under its header, the JSON object `State.from_json` reads."""
        yield (
            f'{{"version":{VERSION},"journal":{generation},"state":{{"phone_id":{compact_json(self.phone_id)},'
            f'"next_seq":{self.next_seq},"outbox":['
        ).encode()
        yield from _slices(self.outbox, lambda part: compact_json(part)[1:-1])
        yield b'],"sent":{'
        yield from _slices(self.sent, lambda part: compact_json(dict(part))[1:-1])
        yield b'},"delivered":['
        yield from _slices(self.delivered, lambda part: compact_json(part)[1:-1])
        yield b"]}}"


def _slices(entries: list[Any], encode: Callable[[list[Any]], str]) -> Iterator[bytes]:
    """`entries` encoded SNAPSHOT_SLICE at a time by `encode` (a slice's entries, comma-separated), joined by commas."""
    for start in range(0, len(entries), SNAPSHOT_SLICE):
        yield (("," if start else "") + encode(entries[start : start + SNAPSHOT_SLICE])).encode()


def encode_snapshot(state: State, generation: int) -> bytes:
    """The content of `snapshot.json` for `state`, which includes the journals before `generation`, at once."""
    return b"".join(SnapshotView.of(state).pieces(generation))


def load_legacy(path: Path) -> State:
    """The state of a version 1 `state.json`."""
    saved = json.loads(path.read_bytes())
    if not isinstance(saved, dict) or saved.get("version") != 1:
        raise ValueError(f"{path}: not a version 1 sandbox state")
    return State.from_json(saved)


class Store:
    """The state folder: loaded (and repaired or migrated) on construction, then appended to.

    Its methods do blocking I/O: `append` (a short write and `fdatasync`, made on the provider's
    loop) and `start_next_journal` one call at a time, `write_snapshot` (of bytes the provider
    encoded, in a worker thread) also while they run.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None  # the current journal, open for appending
        self.damaged = False  # an append failed: cut the journal back to `size` before the next one
        self.state, first, self.snapshot_size, migrate = self._load_base()
        generations = sorted(int(match[1]) for name in os.listdir(folder) if (match := JOURNAL_NAME.fullmatch(name)))
        live = [generation for generation in generations if generation >= first]
        if migrate and live:
            raise ValueError(f"{folder}: journals {live} next to a version 1 {LEGACY_FILE} without a snapshot")
        if live != list(range(first, first + len(live))):
            raise ValueError(f"{folder}: journals {live} do not continue the snapshot (journal {first})")
        self.generation, self.size, replayed = first, 0, 0
        for generation in live:
            path = folder / journal_file(generation)
            records, self.size, problem = read_journal(path, generation)
            if problem and generation != live[-1]:
                raise ValueError(f"{path}: {problem} before the next journal")
            if problem:
                log.warning("%s: ignoring a %s: a crash or a copy during an append", path, problem)
            for record in records:
                for op in record:
                    self.state.apply(op)
            self.generation, replayed = generation, replayed + len(records)
        log.info("state: snapshot before journal %d, %d records replayed", first, replayed)
        if migrate:
            self._replace_snapshot(encode_snapshot(self.state, first))
            fsync_folder(folder)
            log.info("state: migrated %s to %s", LEGACY_FILE, SNAPSHOT_FILE)
        self._remove_stale(first)
        self._open()

    def _load_base(self) -> tuple[State, int, int, bool]:
        """The snapshot's state, its journal generation, its size, and whether it comes from a version 1 file."""
        path = self.folder / SNAPSHOT_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            legacy = self.folder / LEGACY_FILE
            if legacy.exists():
                return load_legacy(legacy), 1, 0, True
            return State(), 1, 0, False
        saved = json.loads(raw)
        if not isinstance(saved, dict) or not isinstance(saved.get("journal"), int):
            raise ValueError(f"{path}: not a sandbox snapshot")
        if saved.get("version") != VERSION:
            raise ValueError(f"{path}: snapshot version {saved.get('version')}, this provider reads {VERSION}")
        return State.from_json(saved["state"]), saved["journal"], len(raw), False

    def _remove_stale(self, first: int) -> None:
        """Delete what the snapshot covers or a crash left: older journals, temporary files, a migrated state.json."""
        stale = [LEGACY_FILE, SNAPSHOT_FILE + ".tmp"]
        stale += [name for name in os.listdir(self.folder) if (m := JOURNAL_NAME.fullmatch(name)) and int(m[1]) < first]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)

    def _open(self) -> None:
        """Open the current journal for appending: cut off a damaged tail, or start it with its header."""
        path = self.folder / journal_file(self.generation)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
            if self.size == 0:
                header = encode_record({"version": VERSION, "journal": self.generation})
                write_all(fd, header)
                self.size = len(header)
            os.fsync(fd)
            fsync_folder(self.folder)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.damaged = fd, False

    def compaction_due(self, incoming: int) -> bool:
        """True when the journal, after `incoming` more bytes, is over its bound."""
        return self.size + incoming > max(MAX_JOURNAL_BYTES, 2 * self.snapshot_size)

    def append(self, records: bytes, *, sync: bool = True) -> None:
        """Append encoded records: durably (fdatasync), or with `sync=False` only as far as the page
        cache (they survive a crash of the process; the next synced append makes them durable)."""
        if self.fd is None:
            self._open()
        elif self.damaged:
            os.ftruncate(self.fd, self.size)
            self.damaged = False
        assert self.fd is not None
        try:
            write_all(self.fd, records)
            if sync:
                os.fdatasync(self.fd)
        except BaseException:
            self.damaged = True
            raise
        self.size += len(records)

    def start_next_journal(self) -> int:
        """Append from now on to a new journal, and return its generation (the first step of a compaction)."""
        old, self.fd, self.generation, self.size = self.fd, None, self.generation + 1, 0
        if old is not None:
            os.close(old)
        self._open()
        fsync_folder(self.folder)
        return self.generation

    def write_snapshot(self, payload: bytes, generation: int) -> None:
        """Replace the snapshot by `payload`, the encoded state after every journal before `generation`,
        and delete those journals (the second step of a compaction; appends may go on meanwhile)."""
        self._replace_snapshot(payload)
        fsync_folder(self.folder)
        self._remove_stale(generation)

    def _replace_snapshot(self, payload: bytes) -> None:
        """Write the snapshot: temporary file, fsync, rename (the caller fsyncs the folder)."""
        temporary = self.folder / (SNAPSHOT_FILE + ".tmp")
        with open(temporary, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.folder / SNAPSHOT_FILE)
        self.snapshot_size = len(payload)

    def close(self) -> None:
        """Close the journal."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
