"""The sandbox instance's state machine behind the provider contract.

This release implements `GET /health`; the rest of the contract (QR, pairing,
messages, events) arrives with the messaging issue.
"""

import time
from dataclasses import dataclass, field

from wgs_sandbox.http import Request, Response


@dataclass
class SandboxProvider:
    """One simulated WhatsApp connection."""

    instance_id: str
    state: str = "qr"
    started_at: float = field(default_factory=time.time)

    async def handle(self, request: Request) -> Response:
        """Route a provider-contract request."""
        if request.path == "/health":
            if request.method != "GET":
                return Response(405, {"error": "method not allowed"})
            return Response(200, self.health())
        return Response(404, {"error": f"no route {request.path}"})

    def health(self) -> dict[str, object]:
        """`{"state", "reason", "phone_id"}` as the contract defines."""
        return {
            "state": self.state,
            "reason": None,
            "phone_id": None,
            "provider": "sandbox",
            "instance_id": self.instance_id,
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }
