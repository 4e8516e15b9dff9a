"""`wgs-scheduler`: run one scheduler process (several may run; one leads)."""

from wgs_kit.lifecycle import run_service
from wgs_kit.logs import configure_logging

from wgs_scheduler.app import run
from wgs_scheduler.config import Settings


def main() -> None:
    """Console entry point."""
    configure_logging("scheduler")
    run_service(run(Settings.from_env()))


if __name__ == "__main__":
    main()
