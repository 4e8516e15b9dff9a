"""Idempotency keys of sends: the `Idempotency-Key` header of `POST /api/instances/{id}/send`.

A key names one send of an instance. The first request with it claims it (a `send_keys` row: the
message id it stands for and the digest of the request), and a retry with the same key and the
same request gets that message, never a second copy of it:

- the message was sent (or failed after it was sent) or is queued: the retry is answered from its
  record, `200` or `202` with its id, without asking the provider or spending a token;
- the first request has no answer recorded yet (it is in flight, was refused by the rate limit,
  or its process died): the retry sends it again under the same id, which the provider and the
  durable queue take once (both are idempotent by message id);
- a key used for another request (another recipient or content) is refused, `422`, and nothing
  changes;
- a send the provider refused is forgotten with its key (`services.FORGET_MESSAGE`): nothing was
  sent, so the key may be used again.

Keys are kept as long as their message: the tenant's retention (`wgs_db.retention`), at most as long
as their instance.
"""

import hashlib
import re
from typing import Final, NamedTuple
from uuid import uuid4

import msgspec
from wgs_contracts.instance_events import MessageContent
from wgs_db.engine import fetch

from wgs_api.domain.messaging.schemas import SendResult
from wgs_api.errors import Invalid

HEADER: Final = "Idempotency-Key"
VALID_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as the header's value

CLAIM = """
INSERT INTO send_keys (instance_id, key, message_id, request_digest)
SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM instances WHERE id = $1 AND tenant_id = $5)
ON CONFLICT (instance_id, key) DO NOTHING
RETURNING message_id
"""

EARLIER_CLAIM = """
SELECT k.message_id, k.request_digest
  FROM send_keys k JOIN instances i ON i.id = k.instance_id
 WHERE k.instance_id = $1 AND k.key = $2 AND i.tenant_id = $3
"""

# A provisional `sent` is the first request still waiting for its provider (decision 35): not an answer yet.
EARLIER_ANSWER = """
SELECT coalesce(bool_or(status <> 'queued' AND NOT provisional), false) AS sent,
       coalesce(bool_or(status = 'queued'), false) AS queued
  FROM message_statuses WHERE message_id = $1
"""


class Claim(NamedTuple):
    """The message a key stands for, the digest of the request that claimed it, and whether this request did."""

    message_id: str
    request_digest: str
    ours: bool


def checked_key(header: str | None) -> str | None:
    """The key of the header (None without one); 422 for anything but 1-255 visible ASCII characters."""
    if header is None:
        return None
    if not VALID_KEY.fullmatch(header):
        raise Invalid(f"{HEADER}: 1-255 visible ASCII characters", field=HEADER)
    return header


def request_digest(recipient: str, content: MessageContent) -> str:
    """What makes two sends the same request: their recipient and content."""
    return hashlib.sha256(msgspec.json.encode((recipient, content))).hexdigest()


async def claim(tenant_id: int, instance_id: int, key: str, digest: str) -> Claim | None:
    """This request's claim on `key` with a new message id, or the claim made before it; None when
    the tenant has no such instance.

    422 when the key was claimed for another request.
    """
    message_id = uuid4().hex
    if await fetch(CLAIM, instance_id, key, message_id, digest, tenant_id):
        return Claim(message_id, digest, ours=True)
    rows = await fetch(EARLIER_CLAIM, instance_id, key, tenant_id)
    if not rows:
        return None
    earlier = Claim(rows[0]["message_id"], rows[0]["request_digest"], ours=False)
    if earlier.request_digest != digest:
        raise Invalid(f"{HEADER}: already used for another request to this instance", field=HEADER)
    return earlier


async def earlier_answer(message_id: str) -> tuple[SendResult, bool] | None:
    """The answer the first request with the key got, from the message's history: `(result, sent)`;
    None while it has none (the send is then made again under the same id)."""
    [row] = await fetch(EARLIER_ANSWER, message_id)
    if row["sent"]:
        return SendResult(status="ok", id=message_id), True
    if row["queued"]:
        return SendResult(status="queued", id=message_id), False
    return None
