"""Bodies of the messaging endpoints (the original `{to, text}` send body kept)."""

from datetime import datetime

import msgspec


class MediaIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """An attachment: `base64` (inline) or `url`."""

    mime_type: str | None = None
    base64: str | None = None
    url: str | None = None
    filename: str | None = None
    caption: str | None = None


class LocationIn(msgspec.Struct, forbid_unknown_fields=True):
    """A location."""

    latitude: float
    longitude: float
    name: str | None = None


class ReactionIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A reaction to an earlier message."""

    message_id: str
    emoji: str


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/instances/{id}/send`: `{to, text}`, or `{to, type, ...}` for other kinds."""

    to: str
    type: str = "text"
    text: str | None = None
    caption: str | None = None
    media: MediaIn | None = None
    location: LocationIn | None = None
    reaction: ReactionIn | None = None


class SendResult(msgspec.Struct):
    """`{"status": "ok", "id": ...}` when sent, `{"status": "queued", "id": ...}` when queued."""

    status: str
    id: str


class PairCodeBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/instances/{id}/pair-code`."""

    phone: str


class PairCode(msgspec.Struct):
    """The code to type on the phone."""

    code: str


class QrJson(msgspec.Struct):
    """`GET /api/instances/{id}/qr` with `Accept: application/json`."""

    raw: str
    base64: str


class ScanBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/instances/{id}/sandbox/scan`: scans the current QR, or enters a pairing `code`."""

    code: str | None = None


class StatusEntry(msgspec.Struct):
    """One status a message reached."""

    status: str
    reason: str | None
    at: datetime


class MessageView(msgspec.Struct):
    """A sent message and its status history."""

    id: str
    to: str
    type: str
    status: str
    history: list[StatusEntry]
