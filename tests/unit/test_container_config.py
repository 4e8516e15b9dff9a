"""The Docker create body of an instance and the labels the agent rebuilds its state from."""

import os
from pathlib import Path

import pytest
from wgs_contracts import labels
from wgs_contracts.messages import InstanceSpec, Provider
from wgs_node_agent.runtime.base import PROVIDER_UID, InstancePaths, ManagedContainer
from wgs_node_agent.runtime.docker import container_config, container_name, managed_from_labels, prepare_folders

SPEC = InstanceSpec(
    instance_id=7,
    tenant_id=3,
    provider=Provider.SANDBOX,
    nano_cpus=500_000_000,
    memory_bytes=256 * 2**20,
    pids_limit=128,
)


@pytest.fixture
def paths(tmp_path: Path) -> InstancePaths:
    return InstancePaths.under(tmp_path, 7)


@pytest.fixture
def config(paths: InstancePaths) -> dict:
    return container_config(SPEC, 4, paths, node="n1", network_mode="wgs-net")


def test_container_name():
    assert container_name(7) == "wgs-instance-7"
    assert container_name(7) != container_name(70)


def test_image_and_user(config):
    assert config["Image"] == "wgs-provider-sandbox:latest"
    assert config["Image"] == labels.provider_image("sandbox")
    assert config["User"] == "10001:10001"


def test_host_limits(config):
    host = config["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 2**20
    assert host["MemorySwap"] == host["Memory"]
    assert host["PidsLimit"] == 128
    assert host["RestartPolicy"] == {"Name": "no"}  # the agent restarts crashed containers
    assert host["NetworkMode"] == "wgs-net"


def test_hardening(config):
    host = config["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "CapAdd" not in host
    assert host.get("Privileged") in (None, False)
    assert "no-new-privileges" in host["SecurityOpt"]


def test_labels(config):
    assert config["Labels"] == {
        labels.MANAGED: "true",
        labels.INSTANCE_ID: "7",
        labels.TENANT_ID: "3",
        labels.GENERATION: "4",
        labels.PROVIDER: "sandbox",
        labels.NODE: "n1",
    }
    assert all(isinstance(v, str) for v in config["Labels"].values())


def test_binds(config, paths, tmp_path):
    binds = config["HostConfig"]["Binds"]
    assert f"{paths.state_dir}:/data:rw" in binds
    assert f"{paths.socket_dir}:/run/wgs:rw" in binds
    assert len(binds) == 2
    assert paths.state_dir == tmp_path / "instances" / "7" / "state"
    assert paths.socket_dir == tmp_path / "instances" / "7" / "run"


def test_env_points_inside_the_binds(config, paths):
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["WGS_INSTANCE_ID"] == "7"
    assert env["WGS_DATA_DIR"] == "/data"
    assert env["WGS_SOCKET"] == f"/run/wgs/{paths.socket.name}"


def test_other_provider_and_network(paths):
    spec = InstanceSpec(
        instance_id=9,
        tenant_id=1,
        provider=Provider.WHATSMEOW,
        nano_cpus=2_000_000_000,
        memory_bytes=2**30,
        pids_limit=256,
    )
    config = container_config(spec, 1, paths, node="n2", network_mode="none")
    assert config["Image"] == "wgs-provider-whatsmeow:latest"
    assert config["HostConfig"]["NetworkMode"] == "none"
    assert config["HostConfig"]["MemorySwap"] == 2**30
    assert config["Labels"][labels.NODE] == "n2"


def test_round_trip_through_labels(config):
    managed = managed_from_labels("abc123", config["Labels"], running=True)
    assert managed == ManagedContainer(
        container_id="abc123",  # type: ignore[arg-type]
        instance_id=7,
        tenant_id=3,
        generation=4,
        provider="sandbox",
        running=True,
    )


def test_labels_missing_optional_keys():
    managed = managed_from_labels("abc", {labels.INSTANCE_ID: "5"}, running=False)
    assert (managed.instance_id, managed.tenant_id, managed.generation, managed.provider) == (5, 0, 0, "")
    assert managed.running is False


def test_labels_without_instance_id_are_rejected():
    with pytest.raises(KeyError):
        managed_from_labels("abc", {labels.MANAGED: "true"}, running=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root (as the agent has)")
def test_prepare_folders_gives_a_restored_state_folder_to_the_provider_user(tmp_path: Path) -> None:
    paths = InstancePaths.under(tmp_path, 7)
    (paths.state_dir / "nested").mkdir(parents=True)
    (paths.state_dir / "nested" / "journal-00000001.jsonl").write_text("{}\n")  # unpacked by root
    prepare_folders(paths)
    for path in (paths.state_dir, paths.state_dir / "nested", paths.state_dir / "nested" / "journal-00000001.jsonl"):
        assert (path.stat().st_uid, path.stat().st_gid) == (PROVIDER_UID, PROVIDER_UID)
