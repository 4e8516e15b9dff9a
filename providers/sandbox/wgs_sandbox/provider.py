"""The sandbox instance's state machine behind the provider contract (`docs/provider-contract.md`).

A simulated WhatsApp connection: pairing by QR or pair code completes through the
sandbox-only `POST /sandbox/scan`; sends leave as `sandbox.outbound` events for the
node agent to route to the recipient instance, which gets them by `POST /sandbox/deliver`
and answers with `sandbox.receipt` events routed back by `POST /sandbox/receipt`.
Whatever must survive a restart is saved before the answer leaves.
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

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 30.0
PAGE_SIZE = 1000
MAX_OUTBOX = 10_000
MAX_REMEMBERED = 10_000
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


def remember(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Add `key`, forgetting the oldest keys beyond MAX_REMEMBERED."""
    mapping[key] = value
    while len(mapping) > MAX_REMEMBERED:
        del mapping[next(iter(mapping))]


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
        saved = store.load(data_dir) or {}
        self.phone_id: str | None = saved.get("phone_id")  # set while paired
        self.next_seq: int = saved.get("next_seq", 1)
        self.outbox: list[dict[str, Any]] = saved.get("outbox", [])
        self.sent: dict[str, str] = saved.get("sent", {})  # message id -> delivery status
        self.delivered: dict[str, None] = dict.fromkeys(saved.get("delivered", []))  # inbound ids
        self.state = "starting"
        self.reason: str | None = None
        self.started_at = clock()
        self.ready_at = self.started_at + start_seconds
        self.qr: str | None = None
        self.qr_expires_at = math.inf
        self.pair_codes: list[str] = []
        self._dirty = False
        self._pending: bytes | None = None  # the newest encoded state not yet on disk
        self._pending_version = 0
        self._written_version = 0
        self._write_lock = asyncio.Lock()
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
        self._snapshot()

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

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self.outbox.append({"seq": self.next_seq, "type": kind, "at": utc_now(), "data": data})
        self.next_seq += 1
        if len(self.outbox) > MAX_OUTBOX:
            log.warning("outbox over %d events: dropping the oldest unacknowledged", MAX_OUTBOX)
            del self.outbox[: len(self.outbox) - MAX_OUTBOX]
        self._dirty = True
        self._changed.set()
        self._changed = asyncio.Event()

    def _snapshot(self) -> None:
        """Encode the state if it changed since the last snapshot."""
        if self._dirty:
            self._pending = store.encode(
                {
                    "phone_id": self.phone_id,
                    "next_seq": self.next_seq,
                    "outbox": self.outbox,
                    "sent": self.sent,
                    "delivered": list(self.delivered),
                }
            )
            self._pending_version += 1
            self._dirty = False

    async def commit(self) -> None:
        """Return once every change made so far is on disk.

        Group commit: one write (in a thread) at a time, each carrying the newest
        state, so concurrent requests share a write instead of queueing one each.
        """
        self._snapshot()
        wanted = self._pending_version
        async with self._write_lock:
            if self._written_version >= wanted or self._pending is None:
                return
            payload, version = self._pending, self._pending_version
            await asyncio.to_thread(store.write, self.data_dir, payload)
            self._written_version = version

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
        self.phone_id, self.qr, self.qr_expires_at = self.own_phone, None, math.inf
        self.pair_codes.clear()
        self._set_state("connected")
        log.info("paired as %s", self.phone_id)
        return Response(200, {"state": "connected", "phone_id": self.phone_id})

    async def _logout(self, request: Request) -> Response:
        if self.state == "connected":
            self._set_state("disconnected", "logged out")
            log.info("logged out")
        self.phone_id = None
        self._start_pairing("logged out")
        return Response(200, {"state": "qr"})

    async def _send(self, request: Request) -> Response:
        body = request.json_object()
        message_id = validation.text(body, "id")
        to = validation.phone(body, "to")
        content = validation.message_content(body.get("content"))
        answer = {"id": message_id, "status": "sent"}
        if message_id in self.sent:
            return Response(200, answer)
        if self.state != "connected":
            raise HttpError(503, "Client not connected")
        remember(self.sent, message_id, "sent")
        self._emit("message.status", {"message_id": message_id, "status": "sent", "reason": None})
        self._emit("sandbox.outbound", {"id": message_id, "to": to, "from": self.phone_id, "content": content})
        return Response(200, answer)

    async def _deliver(self, request: Request) -> Response:
        body = request.json_object()
        message_id = validation.text(body, "id")
        sender = validation.text(body, "from")
        content = validation.message_content(body.get("content"))
        if message_id not in self.delivered:
            if self.state != "connected":
                raise HttpError(503, "Client not connected")
            remember(self.delivered, message_id, None)
            self._emit(
                "message", {"message_id": message_id, "sender": sender, "recipient": self.phone_id, "content": content}
            )
            self._emit("sandbox.receipt", {"id": message_id, "to": sender, "from": self.phone_id, "status": "read"})
        return Response(200, {"status": "delivered"})

    async def _receipt(self, request: Request) -> Response:
        body = request.json_object()
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
            self.sent[message_id] = status
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
        if drop := bisect.bisect_right(self.outbox, seq, key=lambda event: event["seq"]):
            del self.outbox[:drop]
            self._dirty = True
        return Response(200, {"acked": seq, "pending": len(self.outbox)})
