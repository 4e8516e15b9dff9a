"""`wgs-node-agent`: run the agent of this node."""

from wgs_kit.lifecycle import run_service
from wgs_kit.logs import configure_logging

from wgs_node_agent.app import run
from wgs_node_agent.config import Settings


def main() -> None:
    """Console entry point."""
    configure_logging("node-agent")
    run_service(run(Settings.from_env()))


if __name__ == "__main__":
    main()
