"""Labels the node agent puts on provider containers; its state is rebuilt from them."""

from typing import Final

MANAGED: Final = "io.wgs.managed"
INSTANCE_ID: Final = "io.wgs.instance-id"
TENANT_ID: Final = "io.wgs.tenant-id"
GENERATION: Final = "io.wgs.generation"
PROVIDER: Final = "io.wgs.provider"
NODE: Final = "io.wgs.node"


def provider_image(provider: str) -> str:
    """Image tag of a provider, as built by `wgs-dev build-images`."""
    return f"wgs-provider-{provider}:latest"
