"""The sandbox network in tests: stand-ins for the API's phone directory (on subjects of the
test's own), and what waits in a phone's mailbox."""

import uuid

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from wgs_contracts import streams, subjects
from wgs_contracts.instance_events import SandboxEnvelope
from wgs_contracts.messages import SandboxPhoneKnown, SandboxPhoneLookup
from wgs_kit.messaging import decode, encode


def no_directory() -> str:
    """A directory subject nobody answers."""
    return f"test.directory.{uuid.uuid4().hex}"


class Directory:
    """Answers sandbox phone lookups on its own subject: the numbers in `known` are known."""

    def __init__(self, known: set[str]) -> None:
        self.subject = no_directory()
        self.known = known
        self.asked: list[str] = []

    async def serve(self, connection: NatsClient) -> None:
        """Answer lookups on `subject` over `connection`."""

        async def answer(msg: Msg) -> None:
            phone = decode(msg.data, SandboxPhoneLookup).phone
            self.asked.append(phone)
            await msg.respond(encode(SandboxPhoneKnown(known=phone in self.known)))

        await connection.subscribe(self.subject, cb=answer)
        await connection.flush()


async def mailbox(js: JetStreamContext, phone: str) -> list[SandboxEnvelope]:
    """What waits in the phone's mailbox, oldest first (read without taking it)."""
    found: list[SandboxEnvelope] = []
    sequence = 0
    while True:
        try:
            message = await js.get_msg(
                streams.SANDBOX_MAIL.name, seq=sequence + 1, subject=subjects.sandbox_mail(phone), next=True
            )
        except NotFoundError:  # past the last one
            return found
        assert message.data is not None
        assert message.seq is not None
        found.append(decode(message.data, SandboxEnvelope))
        sequence = message.seq
