"""`wgs-state`: run the state service."""

from wgs_db.engine import NATS_AND_DATABASE_OUTAGES
from wgs_kit.lifecycle import run_service
from wgs_kit.logs import configure_logging

from wgs_state.app import run
from wgs_state.config import Settings


def main() -> None:
    """Console entry point."""
    configure_logging("state", outages=NATS_AND_DATABASE_OUTAGES)
    run_service(run(Settings.from_env()))


if __name__ == "__main__":
    main()
