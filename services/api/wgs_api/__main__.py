"""`wgs-api`: serve the REST API with uvicorn."""

import uvicorn
from wgs_db.engine import NATS_AND_DATABASE_OUTAGES
from wgs_kit.logs import configure_logging

from wgs_api.app import create_app
from wgs_api.config import get_settings


def main() -> None:
    """Console entry point."""
    configure_logging("api", outages=NATS_AND_DATABASE_OUTAGES)
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


if __name__ == "__main__":
    main()
