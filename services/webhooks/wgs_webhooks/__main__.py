"""`wgs-webhooks`: run the webhooks service."""

from wgs_db.engine import NATS_AND_DATABASE_OUTAGES
from wgs_kit.lifecycle import run_service
from wgs_kit.logs import configure_logging

from wgs_webhooks.app import run
from wgs_webhooks.config import Settings


def main() -> None:
    """Console entry point."""
    configure_logging("webhooks", outages=NATS_AND_DATABASE_OUTAGES)
    run_service(run(Settings.from_env()))


if __name__ == "__main__":
    main()
