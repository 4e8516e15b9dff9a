"""Admin endpoints for nodes (paths, bodies and status codes as the original gateway)."""

from litestar import Controller, delete, get, post, put
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from wgs_api.config import get_settings
from wgs_api.domain.accounts.guards import require_admin
from wgs_api.domain.nodes import schemas, services


class NodeController(Controller):
    """`/admin/nodes`: the fleet."""

    path = "/admin/nodes"
    guards = [require_admin]
    tags = ["admin: nodes"]

    @post("/", operation_id="CreateNode", status_code=HTTP_200_OK)
    async def create(self, data: schemas.NodeCreate) -> schemas.Node:
        """Register a node (its agent connects with the same name)."""
        return await services.create_node(data)

    @get("/", operation_id="ListNodes")
    async def list_all(self) -> list[schemas.Node]:
        """List nodes with liveness, capacity and allocations."""
        return await services.list_nodes()

    @get("/{node_id:int}", operation_id="GetNode")
    async def get_one(self, node_id: int) -> schemas.Node:
        """Get one node."""
        return await services.get_node(node_id)

    @put("/{node_id:int}", operation_id="UpdateNode")
    async def update(self, node_id: int, data: schemas.NodeUpdate) -> schemas.Node:
        """Change a node's name, hosts or schedulability."""
        return await services.update_node(node_id, data)

    @delete("/{node_id:int}", operation_id="DeleteNode", status_code=HTTP_204_NO_CONTENT)
    async def remove(self, node_id: int) -> None:
        """Delete a node; 409 while it has instances."""
        await services.delete_node(node_id)

    @post("/{node_id:int}/cordon", operation_id="CordonNode", status_code=HTTP_200_OK)
    async def cordon(self, node_id: int) -> schemas.Node:
        """Place no new instances on the node (those on it stay)."""
        return await services.set_schedulable(node_id, False)

    @post("/{node_id:int}/uncordon", operation_id="UncordonNode", status_code=HTTP_200_OK)
    async def uncordon(self, node_id: int) -> schemas.Node:
        """Let the scheduler place instances on the node again."""
        return await services.set_schedulable(node_id, True)

    @post("/{node_id:int}/drain", operation_id="DrainNode", status_code=HTTP_200_OK)
    async def drain(self, node_id: int, state: State) -> schemas.Drained:
        """Cordon the node, then migrate each of its instances to another node; lists what moved and what not."""
        return await services.drain_node(
            node_id, messaging=state.messaging, timeout=get_settings().drain_timeout_seconds
        )
