"""Choosing the runtime from the settings (`docker`, `process`, or `auto`)."""

import logging

from wgs_node_agent.config import Settings
from wgs_node_agent.runtime.base import Runtime
from wgs_node_agent.runtime.docker import DockerRuntime
from wgs_node_agent.runtime.process import ProcessRuntime

log = logging.getLogger(__name__)


async def open_runtime(settings: Settings) -> Runtime:
    """Docker when asked for or when `auto` finds an engine; otherwise the dev process runtime."""
    if settings.runtime in {"docker", "auto"}:
        docker = DockerRuntime(settings.docker_host, node=settings.node_name, network_mode=settings.network_mode)
        if settings.runtime == "docker" or await docker.ping():
            return docker
        await docker.close()
        log.warning(
            "no Docker engine answers at %s: falling back to the PROCESS runtime "
            "(providers run as local subprocesses, without limits or isolation; dev only)",
            settings.docker_host,
        )
    return ProcessRuntime(settings.data_dir)
