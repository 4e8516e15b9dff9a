"""Verifying the gateway's webhooks in a receiver, with the Python standard library only."""

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 5 * 60


class InvalidWebhook(Exception):
    """The request was not signed with this endpoint's secret, or is too old or too new."""


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Raise InvalidWebhook unless `body` was signed with `secret` (`whsec_...`) within the tolerance.

    `headers` are the request's headers with lowercase names; `body` is the raw request body,
    exactly as received (verify before parsing the JSON).
    """
    try:
        msg_id = headers["webhook-id"]
        timestamp = headers["webhook-timestamp"]
        signatures = headers["webhook-signature"]
    except KeyError as missing:
        raise InvalidWebhook(f"missing header {missing}") from None
    if not timestamp.isdigit():
        raise InvalidWebhook("webhook-timestamp is not a number of seconds")
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        raise InvalidWebhook("timestamp outside the tolerance (replayed or clock skew)")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise InvalidWebhook("no valid signature")
