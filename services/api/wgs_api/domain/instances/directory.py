"""The sandbox network's directory: whether a phone number belongs to a sandbox instance.

A node agent asks it (`wgs.rpc.directory.sandbox-phone`, answered by one API process of the
queue group) when no agent answers for a recipient's phone: a number that no sandbox instance
has fails at once, one whose instance is restarting or moving is asked again for a while
(`wgs_node_agent.network`).
"""

from wgs_contracts.messages import Provider, SandboxPhoneKnown, SandboxPhoneLookup
from wgs_db.engine import fetch
from wgs_kit.messaging import decode, encode

SANDBOX_PHONE_KNOWN = """
SELECT EXISTS (
    SELECT 1 FROM instances WHERE provider = $1 AND phone_number = $2 AND desired_state = 'running'
) AS known
"""


async def sandbox_phone_known(phone: str) -> bool:
    """Whether a sandbox instance that is not being deleted has this phone number."""
    rows = await fetch(SANDBOX_PHONE_KNOWN, Provider.SANDBOX.value, phone)
    return bool(rows[0]["known"])


async def answer_lookup(body: bytes) -> bytes:
    """The reply to a `SandboxPhoneLookup` request."""
    lookup = decode(body, SandboxPhoneLookup)
    return encode(SandboxPhoneKnown(known=await sandbox_phone_known(lookup.phone)))
