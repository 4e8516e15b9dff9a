"""The sandbox instance's state machine behind the provider contract (`docs/provider-contract.md`).

A simulated WhatsApp connection: pairing by QR or pair code completes through the
sandbox-only `POST /sandbox/scan`; sends leave as `sandbox.outbound` events for the
node agent to route to the recipient instance, which gets them by `POST /sandbox/deliver`
and answers with `sandbox.receipt` events routed back by `POST /sandbox/receipt`.
Whatever must survive a restart is saved before the answer leaves: each request's changes
are one record of the store's journal (`wgs_sandbox.store`), appended with group commit.
"""

import asyncio
import bisect
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wgs_sandbox import store, validation
from wgs_sandbox.http import HttpError, Request, Response
from wgs_sandbox.state import State

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 30.0
PAGE_SIZE = 1000
MAX_BATCH = PAGE_SIZE  # items of one `/messages`, `/sandbox/deliver` or `/sandbox/receipt` batch
MAX_PAIR_CODES = 16
PAIR_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
STATUS_RANK = {"sent": 0, "delivered": 1, "read": 2}
RECEIPT_STATUSES = ("delivered", "read", "failed")

Route = Callable[[Request], Awaitable[Response]]


def utc_now() -> str:
    """The current time as ISO-8601 UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def advances(current: str, new: str) -> bool:
    """True when status `new` may follow `current`: forward only, `failed` only straight after `sent`."""
    if current == "failed":
        return False
    if new == "failed":
        return current == "sent"
    return STATUS_RANK[new] > STATUS_RANK[current]


def each_item(body: dict[str, Any], one: Callable[[dict[str, Any]], Response]) -> Response:
    """Answer one item, or a batch `{"batch": [item, ...]}` with `200 {"results": [{"status", "body"}, ...]}`.

    Each item of a batch is answered as it would be alone (its errors included); the
    batch's changes are saved together, with one append to the journal.
    """
    if "batch" not in body:
        return one(body)
    batch = body["batch"]
    if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH:
        raise validation.invalid("batch", f"expected a list of 1 to {MAX_BATCH} objects")
    results = []
    for item in batch:
        try:
            if not isinstance(item, dict):
                raise HttpError(400, "batch items must be JSON objects")
            response = one(item)
        except HttpError as exc:
            response = exc.response()
        results.append({"status": response.status, "body": response.body})
    return Response(200, {"results": results})


def query_number(request: Request, name: str, cast: Callable[[str], float], default: float) -> float:
    """A non-negative number from the query string."""
    values = request.query.get(name)
    if not values:
        return default
    try:
        value = cast(values[0])
    except ValueError:
        raise validation.invalid(name, "expected a number") from None
    if not value >= 0:
        raise validation.invalid(name, "expected a number >= 0")
    return value


class SandboxProvider:
    """One simulated WhatsApp connection, its outbox and its durable state in `data_dir`."""

    def __init__(
        self,
        *,
        instance_id: str,
        data_dir: Path,
        phone: str = "",
        qr_seconds: float = 20.0,
        start_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance_id = instance_id
        self.data_dir = data_dir
        self.own_phone = phone or f"sandbox-{instance_id}"
        self.qr_seconds = qr_seconds
        self.clock = clock
        self.store = store.Store(data_dir)
        self.saved: State = self.store.state  # changed only through `_change`
        self.state = "starting"
        self.reason: str | None = None
        self.started_at = clock()
        self.ready_at = self.started_at + start_seconds
        self.qr: str | None = None
        self.qr_expires_at = math.inf
        self.pair_codes: list[str] = []
        self._ops: list[list[Any]] = []  # changes since the last record was sealed
        self._records: list[bytes] = []  # sealed records not yet handed to the store
        self._sealed = 0  # records sealed so far
        self._durable = 0  # records on disk so far
        self._required = 0  # records that must be on disk before the next answer (all but written-back acks)
        self._flusher: asyncio.Task[None] | None = None
        self._compaction: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # set, then replaced, on every new event
        self._routes: dict[str, dict[str, Route]] = {
            "/health": {"GET": self._health},
            "/qr": {"GET": self._qr},
            "/pair-code": {"POST": self._pair_code},
            "/messages": {"POST": self._send},
            "/events": {"GET": self._events},
            "/events/ack": {"POST": self._ack},
            "/logout": {"POST": self._logout},
            "/sandbox/scan": {"POST": self._scan},
            "/sandbox/deliver": {"POST": self._deliver},
            "/sandbox/receipt": {"POST": self._receipt},
        }

    @property
    def phone_id(self) -> str | None:
        """The linked phone id, None while unlinked."""
        return self.saved.phone_id

    @property
    def next_seq(self) -> int:
        return self.saved.next_seq

    @property
    def outbox(self) -> list[dict[str, Any]]:
        """Unacknowledged events, by seq."""
        return self.saved.outbox

    @property
    def sent(self) -> dict[str, str]:
        """Sent message id -> delivery status."""
        return self.saved.sent

    @property
    def delivered(self) -> dict[str, None]:
        """Ids of delivered inbound messages."""
        return self.saved.delivered

    async def handle(self, request: Request) -> Response:
        """Route a provider-contract request; state changes are saved before it returns."""
        methods = self._routes.get(request.path)
        if methods is None:
            return Response(404, {"error": f"no route {request.path}"})
        route = methods.get(request.method)
        if route is None:
            return Response(405, {"error": f"{request.method} not allowed"}, {"Allow": ", ".join(methods)})
        self.tick()
        try:
            response = await route(request)
        except HttpError as exc:
            response = exc.response()
        if not (route == self._ack and self.write_back()):
            await self.commit()
        return response

    def tick(self) -> None:
        """Apply what time brings: the end of start-up, the next QR."""
        now = self.clock()
        if self.state == "starting" and now >= self.ready_at:
            if self.phone_id:
                self._set_state("connected")
            else:
                self._start_pairing(None)
        elif self.state == "qr" and now >= self.qr_expires_at:
            self._new_qr()

    async def run(self) -> None:
        """Tick whenever time brings a change, so QR events happen without requests."""
        while True:
            self.tick()
            await self.commit()
            changed = self._changed
            deadline = {"starting": self.ready_at, "qr": self.qr_expires_at}.get(self.state, math.inf)
            timeout = None if deadline == math.inf else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    # --- state and outbox ---------------------------------------------------------------------

    def _change(self, op: list[Any]) -> None:
        """Apply a state operation and queue it for the journal."""
        if dropped := self.saved.apply(op):
            log.warning("outbox full: dropped the oldest %d unacknowledged event(s)", dropped)
        self._ops.append(op)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self._change(["e", {"seq": self.saved.next_seq, "type": kind, "at": utc_now(), "data": data}])
        self._changed.set()
        self._changed = asyncio.Event()

    def _seal(self) -> bool:
        """Close the changes made so far into one journal record (they replay all or not at all);
        False when there were none."""
        if not self._ops:
            return False
        self._records.append(store.encode_record(self._ops))
        self._ops = []
        self._sealed += 1
        return True

    async def commit(self) -> None:
        """Return once every change made so far is on disk.

        Group commit: one append at a time, each carrying every record sealed until it starts,
        so concurrent requests share an fsync instead of queueing one each. The append blocks the
        loop (no worker thread): every request that changes state waits for it anyway, the
        requests arriving meanwhile wait in the socket and go into the next append together,
        and a thread cost two more wake-ups per flush (decision 40). Callers wait on a shielded
        task: a cancelled request cannot cut a write short.
        """
        if self._seal():
            self._required = self._sealed
        while self._durable < self._required:
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flusher)

    def write_back(self) -> bool:
        """Write acks to the journal without waiting for the disk (True); False, and nothing done,
        when other changes wait to be saved or a flush runs (then `commit`).

        An ack lost in a crash of the machine only means that the events after the last durable
        ack are read and published again, and replays are deduplicated by event id
        (`docs/provider-contract.md` 5). A crash of the provider alone loses nothing (the page
        cache keeps the write), and the next commit's fdatasync makes it durable with its own
        records. Any other change must be on disk before an answer that shows it leaves.
        """
        if self._records or any(op[0] != "a" for op in self._ops):
            return False
        if self._flusher is not None and not self._flusher.done():
            return False  # a compaction may be switching journals: the order of appends is the flush's
        self._seal()
        if self._records:
            records, self._records = self._records, []
            try:
                self.store.append(b"".join(records), sync=False)
            except Exception:
                self._records[:0] = records  # written by the next commit, after the damaged tail is cut off
                raise
        return True

    async def _flush(self) -> None:
        """Append the sealed records; start a compaction when the journal is over its bound.

        A compaction switches to the next journal here, between appends, and writes the snapshot
        in the background (one compaction at a time): the appends after it never wait for the snapshot.
        """
        self._seal()
        records, upto = self._records, self._sealed
        self._records = []
        payload = b"".join(records)
        compacting = self._compaction is not None and not self._compaction.done()
        # The state now is exactly the state after these records: that is what a snapshot must hold.
        due = not compacting and self.store.compaction_due(len(payload))
        snapshot = store.SnapshotView.of(self.saved) if due else None
        try:
            self.store.append(payload)
        except Exception:
            self._records[:0] = records  # retried by the next commit, after the damaged tail is cut off
            raise
        self._durable = upto
        if snapshot is None:
            return
        try:
            generation = await asyncio.to_thread(self.store.start_next_journal)
        except Exception:
            log.exception("starting the next state journal failed")  # the journal goes on; retried when due
            return
        self._compaction = asyncio.get_running_loop().create_task(self._write_snapshot(snapshot, generation))

    async def _write_snapshot(self, snapshot: store.SnapshotView, generation: int) -> None:
        """Encode the snapshot a piece at a time, letting requests run between pieces, then write it in a
        worker thread (decision 42)."""
        try:
            encoded = bytearray()
            for piece in snapshot.pieces(generation):
                encoded += piece
                await asyncio.sleep(0)
            await asyncio.to_thread(self.store.write_snapshot, bytes(encoded), generation)
        except Exception:
            log.exception("writing the state snapshot failed")  # the journals still hold everything

    def _set_state(self, state: str, reason: str | None = None) -> None:
        self.state, self.reason = state, reason
        self._emit("connection", {"state": state, "phone_id": self.phone_id, "reason": reason})

    def _start_pairing(self, reason: str | None) -> None:
        self.pair_codes.clear()
        if self.state == "qr":
            self.reason = reason
        else:
            self._set_state("qr", reason)
        self._new_qr()

    def _new_qr(self) -> None:
        self.qr = f"wgs-sandbox:{self.instance_id}:{secrets.token_urlsafe(16)}"
        self.qr_expires_at = self.clock() + self.qr_seconds
        self._emit("qr", {"qr": self.qr})

    def _require_unpaired(self) -> None:
        if self.state == "connected":
            raise HttpError(409, "already connected")

    # --- routes -------------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return Response(
            200,
            {
                "state": self.state,
                "reason": self.reason,
                "phone_id": self.phone_id,
                "provider": "sandbox",
                "instance_id": self.instance_id,
                "last_seq": self.next_seq - 1,
                "uptime_seconds": round(self.clock() - self.started_at, 3),
            },
        )

    async def _qr(self, request: Request) -> Response:
        self._require_unpaired()
        if self.qr is None:
            raise HttpError(404, "no QR yet", reason="provider is starting")
        return Response(200, {"qr": self.qr, "expires_in": max(1, math.ceil(self.qr_expires_at - self.clock()))})

    async def _pair_code(self, request: Request) -> Response:
        validation.phone(request.json_object(), "phone")
        self._require_unpaired()
        if self.state == "starting":
            raise HttpError(503, "not ready", reason="provider is starting")
        while (code := "".join(secrets.choice(PAIR_CODE_ALPHABET) for _ in range(8))) in self.pair_codes:
            pass
        self.pair_codes.append(code)
        del self.pair_codes[:-MAX_PAIR_CODES]
        return Response(200, {"code": f"{code[:4]}-{code[4:]}"})

    async def _scan(self, request: Request) -> Response:
        body = request.json_object()
        qr = validation.optional_text(body, "qr", "qr")
        code = validation.optional_text(body, "code", "code")
        if not qr and not code:
            raise validation.invalid("qr", "expected qr or code")
        self._require_unpaired()
        if qr and qr != self.qr:
            raise validation.invalid("qr", "does not match the current QR")
        if code and code.replace("-", "").upper() not in self.pair_codes:
            raise validation.invalid("code", "unknown or expired pair code")
        self._change(["p", self.own_phone])
        self.qr, self.qr_expires_at = None, math.inf
        self.pair_codes.clear()
        self._set_state("connected")
        log.info("paired as %s", self.phone_id)
        return Response(200, {"state": "connected", "phone_id": self.phone_id})

    async def _logout(self, request: Request) -> Response:
        if self.state == "connected":
            self._set_state("disconnected", "logged out")
            log.info("logged out")
        if self.phone_id is not None:
            self._change(["p", None])
        self._start_pairing("logged out")
        return Response(200, {"state": "qr"})

    async def _send(self, request: Request) -> Response:
        return each_item(request.json_object(), self._send_one)

    def _send_one(self, body: dict[str, Any]) -> Response:
        message_id = validation.text(body, "id")
        to = validation.phone(body, "to")
        content = validation.message_content(body.get("content"))
        answer = {"id": message_id, "status": "sent"}
        if message_id in self.sent:
            return Response(200, answer)
        if self.state != "connected":
            if self.phone_id:  # linked: the session is being restored, and the send can wait for it
                raise HttpError(503, "not ready", reason=f"the linked session is {self.state}")
            raise HttpError(503, "Client not connected")
        self._change(["s", message_id, "sent"])
        self._emit("message.status", {"message_id": message_id, "status": "sent", "reason": None})
        self._emit("sandbox.outbound", {"id": message_id, "to": to, "from": self.phone_id, "content": content})
        return Response(200, answer)

    async def _deliver(self, request: Request) -> Response:
        return each_item(request.json_object(), self._deliver_one)

    def _deliver_one(self, body: dict[str, Any]) -> Response:
        message_id = validation.text(body, "id")
        sender = validation.text(body, "from")
        content = validation.message_content(body.get("content"))
        if message_id not in self.delivered:
            if self.phone_id is None:  # not on WhatsApp; a paired phone that is still starting takes it
                raise HttpError(503, "Client not connected")
            self._change(["d", message_id])
            self._emit(
                "message", {"message_id": message_id, "sender": sender, "recipient": self.phone_id, "content": content}
            )
            self._emit("sandbox.receipt", {"id": message_id, "to": sender, "from": self.phone_id, "status": "read"})
        return Response(200, {"status": "delivered"})

    async def _receipt(self, request: Request) -> Response:
        return each_item(request.json_object(), self._receipt_one)

    def _receipt_one(self, body: dict[str, Any]) -> Response:
        message_id = validation.text(body, "id")
        status = body.get("status")
        if status not in RECEIPT_STATUSES:
            raise validation.invalid("status", f"expected one of {', '.join(RECEIPT_STATUSES)}")
        reason = validation.optional_text(body, "reason", "reason")
        current = self.sent.get(message_id)
        if current is None:
            raise HttpError(404, "unknown message id", field="id")
        if advances(current, status):
            if status == "read" and current == "sent":  # the read receipt overtook the delivery one
                self._emit("message.status", {"message_id": message_id, "status": "delivered", "reason": None})
            self._change(["s", message_id, status])
            self._emit("message.status", {"message_id": message_id, "status": status, "reason": reason})
        return Response(200, {"id": message_id, "status": self.sent[message_id]})

    async def _events(self, request: Request) -> Response:
        after = int(query_number(request, "after", int, 0))
        wait = min(query_number(request, "wait", float, 0.0), MAX_WAIT_SECONDS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            start = bisect.bisect_right(self.outbox, after, key=lambda event: event["seq"])
            page = self.outbox[start : start + PAGE_SIZE]
            remaining = deadline - loop.time()
            if page or remaining <= 0:
                return Response(200, {"events": page, "last_seq": self.next_seq - 1})
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def _ack(self, request: Request) -> Response:
        seq = request.json_object().get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise validation.invalid("seq", "expected an integer >= 0")
        if self.outbox and self.outbox[0]["seq"] <= seq:
            self._change(["a", seq])
        return Response(200, {"acked": seq, "pending": len(self.outbox)})
