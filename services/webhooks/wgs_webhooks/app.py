"""The webhooks service process (idle in this release: it connects and waits)."""

from wgs_kit.idle import run_idle_service

from wgs_webhooks.config import Settings


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    await run_idle_service("wgs-webhooks", settings)
