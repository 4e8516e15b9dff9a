"""Runs the provider contract suite against provider images on the session's first real Docker engine.

`WGS_CONFORMANCE_IMAGES` (comma list, default the sandbox) names the images. Each test gets one
fresh container, configured exactly as the node agent configures it (`container_config`,
`prepare_folders`) plus `WGS_PHONE` and the test's `provider_env` marker. Its network is
`WGS_CONFORMANCE_NETWORK`, the agent's `WGS_PROVIDER_NETWORK` (default `none`; the private engine has
no bridge, so a provider that must reach WhatsApp needs `host`). Tests marked `sandbox_only` use the
sandbox's simulated phone and network and skip for other images.
"""

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import httpx
import pytest
from wgs_contracts import labels
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_devstack.docker_engine import DockerEngine
from wgs_kit.waiting import DeadlineExceeded
from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.runtime.docker import container_config, prepare_folders

from tests.conformance.client import ProviderUnderTest, is_sandbox_image

DEFAULT_IMAGES = labels.provider_image(Provider.SANDBOX.value)
IMAGES = [name.strip() for name in os.environ.get("WGS_CONFORMANCE_IMAGES", DEFAULT_IMAGES).split(",") if name.strip()]
NETWORK = os.environ.get("WGS_CONFORMANCE_NETWORK") or "none"
PHONE = "491700000001"
_instance_ids = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's markers."""
    config.addinivalue_line("markers", "provider_env(**env): extra environment of the provider container")
    config.addinivalue_line("markers", "sandbox_only: uses sandbox-only calls; skipped for other providers")


@pytest.fixture(scope="session")
async def docker(engines: list[DockerEngine]) -> AsyncIterator[aiodocker.Docker]:
    """A client of the first engine (which has the freshly built sandbox image)."""
    client = aiodocker.Docker(url=engines[0].host)
    yield client
    await client.close()


@pytest.fixture(params=IMAGES)
async def provider(
    request: pytest.FixtureRequest, docker: aiodocker.Docker, work_dir: Path
) -> AsyncIterator[ProviderUnderTest]:
    """One container of the image under test, answering on its socket; removed afterwards."""
    image: str = request.param
    if request.node.get_closest_marker("sandbox_only") and not is_sandbox_image(image):
        pytest.skip(f"sandbox-only test; {image} is not the sandbox")
    instance_id = next(_instance_ids)
    paths = InstancePaths.under(work_dir / "conformance", instance_id)
    prepare_folders(paths)
    spec = InstanceSpec(
        instance_id=instance_id,
        tenant_id=0,
        provider=Provider.SANDBOX,
        nano_cpus=1_000_000_000,
        memory_bytes=256 * 2**20,
        pids_limit=128,
    )
    config = container_config(spec, 1, paths, node="conformance", network_mode=NETWORK)
    config["Image"] = image
    # Not labelled as managed: a node agent on the same engine must neither adopt nor remove it.
    del config["Labels"][labels.MANAGED]
    marker = request.node.get_closest_marker("provider_env")
    config["Env"] += [f"WGS_PHONE={PHONE}", *(f"{k}={v}" for k, v in (marker.kwargs if marker else {}).items())]
    container = await docker.containers.create(config, name=f"wgs-conformance-{instance_id}")
    try:
        await container.start()
        transport = httpx.AsyncHTTPTransport(uds=str(paths.socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://provider", timeout=60) as http:
            under_test = ProviderUnderTest(
                image=image, phone=PHONE, socket=paths.socket, http=http, container=container
            )
            try:
                await under_test.wait_healthy()
            except DeadlineExceeded:
                logs = await container.log(stdout=True, stderr=True, tail=40)
                raise DeadlineExceeded(f"{image} did not answer /health; its log:\n{''.join(logs)}") from None
            yield under_test
    finally:
        await container.delete(force=True)
