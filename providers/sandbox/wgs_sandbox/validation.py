"""Checks on request bodies: each failure is a 422 naming the field by its dotted path."""

import base64
import binascii
import math
import re
from typing import Any

from wgs_sandbox.http import HttpError

PHONE = re.compile(r"[0-9]{6,15}")
MESSAGE_TYPES = ("text", "image", "document", "location", "reaction")


def invalid(field: str, problem: str) -> HttpError:
    """A 422 naming `field`."""
    return HttpError(422, f"{field}: {problem}", field=field)


def text(body: dict[str, Any], key: str, path: str | None = None, *, empty_ok: bool = False) -> str:
    """A required string (non-empty unless `empty_ok`)."""
    value = body.get(key)
    if not isinstance(value, str) or not (value or empty_ok):
        raise invalid(path or key, "expected a non-empty string" if not empty_ok else "expected a string")
    return value


def optional_text(body: dict[str, Any], key: str, path: str) -> str | None:
    """An optional string (absent or null gives None)."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(path, "expected a string")
    return value


def phone(body: dict[str, Any], key: str) -> str:
    """A phone number: 6-15 digits, no `+`."""
    value = body.get(key)
    if not isinstance(value, str) or not PHONE.fullmatch(value):
        raise invalid(key, "expected 6-15 digits")
    return value


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "expected an object")
    return value


def _coordinate(body: dict[str, Any], key: str, limit: float) -> float:
    value = body.get(key)
    path = f"content.location.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(path, "expected a number")
    if not -limit <= value <= limit:
        raise invalid(path, f"out of range -{limit:g}..{limit:g}")
    return value


def _media(value: object) -> dict[str, Any]:
    media = _object(value, "content.media")
    result = {"mime_type": text(media, "mime_type", "content.media.mime_type")}
    data = optional_text(media, "base64", "content.media.base64")
    url = optional_text(media, "url", "content.media.url")
    if not data and not url:
        raise invalid("content.media", "needs base64 or url")
    if data:
        try:
            base64.b64decode(data, validate=True)
        except binascii.Error:
            raise invalid("content.media.base64", "not valid base64") from None
        result["base64"] = data
    if url:
        if not url.startswith(("http://", "https://")):
            raise invalid("content.media.url", "expected an http(s) URL")
        result["url"] = url
    for key in ("filename", "caption"):
        if (extra := optional_text(media, key, f"content.media.{key}")) is not None:
            result[key] = extra
    return result


def message_content(value: object) -> dict[str, Any]:
    """A message `content`, reduced to its `type` and the part that type uses."""
    content = _object(value, "content")
    kind = content.get("type")
    if kind not in MESSAGE_TYPES:
        raise invalid("content.type", f"expected one of {', '.join(MESSAGE_TYPES)}")
    if kind == "text":
        return {"type": kind, "text": text(content, "text", "content.text")}
    if kind in ("image", "document"):
        return {"type": kind, "media": _media(content.get("media"))}
    if kind == "location":
        location = _object(content.get("location"), "content.location")
        result: dict[str, Any] = {
            "latitude": _coordinate(location, "latitude", 90),
            "longitude": _coordinate(location, "longitude", 180),
        }
        if (name := optional_text(location, "name", "content.location.name")) is not None:
            result["name"] = name
        return {"type": kind, "location": result}
    reaction = _object(content.get("reaction"), "content.reaction")
    return {
        "type": kind,
        "reaction": {
            "message_id": text(reaction, "message_id", "content.reaction.message_id"),
            "emoji": text(reaction, "emoji", "content.reaction.emoji", empty_ok=True),
        },
    }
