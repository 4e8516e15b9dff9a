"""choose_node: which node an instance goes to, or why none can take it."""

from dataclasses import replace

from wgs_scheduler.placement import NodeState, NoFit, Request, choose_node, load_after

CPU = 1_000_000_000
MIB = 2**20
GIB = 2**30


def node(
    id: int,
    *,
    alive: bool = True,
    schedulable: bool = True,
    providers: tuple[str, ...] = ("sandbox",),
    cpus: float = 4,
    memory: int = 8 * GIB,
    reserved_cpus: float = 0,
    reserved_memory: int = 0,
) -> NodeState:
    return NodeState(
        id=id,
        name=f"n{id}",
        alive=alive,
        schedulable=schedulable,
        providers=frozenset(providers),
        nano_cpus=int(cpus * CPU),
        memory_bytes=memory,
        reserved_nano_cpus=int(reserved_cpus * CPU),
        reserved_memory_bytes=reserved_memory,
    )


def reserve(state: NodeState, request: Request) -> NodeState:
    return replace(
        state,
        reserved_nano_cpus=state.reserved_nano_cpus + request.nano_cpus,
        reserved_memory_bytes=state.reserved_memory_bytes + request.memory_bytes,
    )


REQ = Request(provider="sandbox", nano_cpus=CPU // 2, memory_bytes=512 * MIB)


def test_no_nodes():
    result = choose_node(REQ, [])
    assert isinstance(result, NoFit)
    assert "registered" in result.reason


def test_all_dead_or_unschedulable():
    nodes = [node(1, alive=False), node(2, schedulable=False), node(3, alive=False, schedulable=False)]
    result = choose_node(REQ, nodes)
    assert isinstance(result, NoFit)
    assert "alive" in result.reason


def test_provider_not_offered():
    nodes = [node(1, providers=("whatsmeow",)), node(2, providers=())]
    result = choose_node(REQ, nodes)
    assert isinstance(result, NoFit)
    assert "'sandbox'" in result.reason


def test_provider_offered_only_by_dead_node_is_not_offered():
    nodes = [node(1, alive=False, providers=("sandbox",)), node(2, providers=("whatsmeow",))]
    result = choose_node(REQ, nodes)
    assert isinstance(result, NoFit)
    assert "sandbox" in result.reason


def test_not_enough_room_reports_numbers():
    request = Request(provider="sandbox", nano_cpus=2 * CPU, memory_bytes=1024 * MIB)
    nodes = [
        node(1, cpus=1, memory=4 * GIB),  # too little CPU, 4096m free
        node(2, cpus=4, memory=2 * GIB, reserved_cpus=3.5, reserved_memory=GIB),  # 0.5 CPU, 1024m free
    ]
    # Node 2 has the memory but not the CPU; node 1 neither fits: most free is 1 CPU and 4096m.
    result = choose_node(request, nodes)
    assert isinstance(result, NoFit)
    assert result.reason == ("No node has room for 2 CPU and 1024m memory (most free: 1 CPU, 4096m memory).")


def test_memory_alone_can_prevent_fit():
    request = Request(provider="sandbox", nano_cpus=CPU // 4, memory_bytes=2 * GIB)
    result = choose_node(request, [node(1, memory=GIB)])
    assert isinstance(result, NoFit)
    assert "2048m" in result.reason
    assert "1024m" in result.reason


def test_overcommitted_node_reports_zero_free():
    over = node(1, cpus=1, memory=GIB, reserved_cpus=2, reserved_memory=2 * GIB)
    result = choose_node(REQ, [over])
    assert isinstance(result, NoFit)
    assert "most free: 0 CPU, 0m memory" in result.reason


def test_picks_least_loaded():
    busy = node(1, reserved_cpus=3, reserved_memory=GIB)
    quiet = node(2, reserved_cpus=1, reserved_memory=GIB)
    assert choose_node(REQ, [busy, quiet]) == quiet
    assert choose_node(REQ, [quiet, busy]) == quiet


def test_load_is_busiest_resource_fraction():
    # Node 1 is light on CPU but heavy on memory; node 2 moderate on both: node 2 wins.
    memory_heavy = node(1, reserved_cpus=0, reserved_memory=7 * GIB)
    balanced = node(2, reserved_cpus=2, reserved_memory=4 * GIB)
    assert load_after(memory_heavy, REQ) > load_after(balanced, REQ)
    assert choose_node(REQ, [memory_heavy, balanced]) == balanced


def test_load_is_relative_to_node_size():
    small = node(1, cpus=1, memory=GIB)
    big = node(2, cpus=16, memory=64 * GIB, reserved_cpus=4, reserved_memory=16 * GIB)
    # Big is 25% loaded before placement; small would be 50% after.
    assert choose_node(REQ, [small, big]) == big


def test_tie_broken_by_lowest_id():
    result = choose_node(REQ, [node(2), node(1)])
    assert isinstance(result, NodeState)
    assert result.id == 1


def test_spread_after_reserving():
    nodes = [node(1), node(2)]
    first = choose_node(REQ, nodes)
    assert isinstance(first, NodeState)
    assert first.id == 1
    nodes = [reserve(first, REQ), nodes[1]]
    second = choose_node(REQ, nodes)
    assert isinstance(second, NodeState)
    assert second.id == 2
    nodes = [nodes[0], reserve(second, REQ)]
    third = choose_node(REQ, nodes)
    assert isinstance(third, NodeState)
    assert third.id == 1


def test_exact_fit_is_accepted():
    exact = node(1, cpus=1, memory=GIB, reserved_cpus=0.5, reserved_memory=512 * MIB)
    assert choose_node(REQ, [exact]) == exact
    assert load_after(exact, REQ) == 1.0


def test_one_byte_too_many_does_not_fit():
    request = Request(provider="sandbox", nano_cpus=CPU // 2, memory_bytes=512 * MIB + 1)
    exact = node(1, cpus=1, memory=GIB, reserved_cpus=0.5, reserved_memory=512 * MIB)
    assert isinstance(choose_node(request, [exact]), NoFit)


def test_dead_node_never_chosen_even_if_emptiest():
    dead = node(1, alive=False)
    cordoned = node(2, schedulable=False)
    loaded = node(3, reserved_cpus=3, reserved_memory=6 * GIB)
    assert choose_node(REQ, [dead, cordoned, loaded]) == loaded


def test_node_without_provider_skipped_even_if_emptiest():
    empty_other = node(1, providers=("whatsmeow",))
    loaded = node(2, reserved_cpus=3, reserved_memory=6 * GIB)
    assert choose_node(REQ, [empty_other, loaded]) == loaded


def test_full_node_skipped_for_one_with_room():
    full = node(1, cpus=1, memory=GIB, reserved_cpus=1, reserved_memory=GIB)
    other = node(2, reserved_cpus=3.5, reserved_memory=7 * GIB)
    assert choose_node(REQ, [full, other]) == other
