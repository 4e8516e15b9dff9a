"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt; the key is the base64 part after `whsec_`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(
    secret: str, msg_id: str, timestamp: int, body: bytes, *, previous_secret: str | None = None
) -> dict[str, str]:
    """Every header of a webhook request; signed with `previous_secret` too (after the current
    secret's signature, space-separated) while a rotated-out secret is in its grace period."""
    signatures = [signature(key, msg_id, timestamp, body) for key in (secret, previous_secret) if key is not None]
    return {
        "content-type": "application/json",
        "user-agent": "wgs-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }
