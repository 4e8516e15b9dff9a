"""Pure parts of snapshots: chunk sizing, the state contracts, packing and unpacking a folder."""

import hashlib
import os
import tarfile

import msgspec
import pytest
import zstandard
from wgs_contracts.state import DEFAULT_CHUNK_BYTES, PAYLOAD_HEADROOM_BYTES, STATE_TYPES, UploadAccepted, chunk_size
from wgs_kit import snapshots

from tests.support.files import tree


def test_chunk_size_stays_under_the_max_payload():
    assert chunk_size(8 * 1024 * 1024) == DEFAULT_CHUNK_BYTES
    assert chunk_size(1024 * 1024, 4 * 1024 * 1024) == 1024 * 1024 - PAYLOAD_HEADROOM_BYTES
    assert chunk_size(256 * 1024) == 256 * 1024 - PAYLOAD_HEADROOM_BYTES


@pytest.mark.parametrize("cls", STATE_TYPES, ids=lambda t: t.__name__)
def test_state_contracts_are_tagged_and_frozen(cls):
    config = cls.__struct_config__
    assert config.tag_field == "type"
    assert config.tag.startswith(("state.", "snapshot."))
    assert config.frozen


def test_tags_are_unique():
    tags = [t.__struct_config__.tag for t in STATE_TYPES]
    assert len(tags) == len(set(tags))


def test_pack_and_unpack_round_trip(tmp_path):
    source = tmp_path / "state"
    (source / "a" / "b").mkdir(parents=True)
    (source / "empty-dir").mkdir()
    (source / "a" / "b" / "data.bin").write_bytes(os.urandom(100_000))
    (source / "empty").write_bytes(b"")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    (source / "shared").write_text("group-writable")
    (source / "shared").chmod(0o664)
    packed = tmp_path / "state.tar.zst"
    size = snapshots.pack(source, packed)
    assert size % tarfile.RECORDSIZE == 0
    assert packed.stat().st_size < size
    target = tmp_path / "restored"
    target.mkdir()
    snapshots.unpack(packed, target)
    assert tree(target) == tree(source)


def test_file_digest_is_the_sha256(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 * 1024 * 1024 + 7)
    path.write_bytes(data)
    assert snapshots.file_digest(path) == hashlib.sha256(data).hexdigest()


def test_unpack_refuses_paths_outside_the_folder(tmp_path):
    evil = tmp_path / "evil.tar.zst"
    plain = tmp_path / "evil.tar"
    with tarfile.open(plain, "w") as tar:
        info = tarfile.TarInfo("../escaped")
        tar.addfile(info)
    evil.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(tarfile.OutsideDestinationError):
        snapshots.unpack(evil, target)
    assert not (tmp_path / "escaped").exists()


def test_swap_in_replaces_the_folder(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / "old").write_text("old")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "new").write_text("new")
    snapshots.swap_in(fresh, folder)
    assert [p.name for p in folder.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_replies_decode_refusals():
    with pytest.raises(snapshots.SnapshotError, match="stale"):
        snapshots.accepted(msgspec.json.encode({"type": "state.refused", "reason": "stale"}), UploadAccepted)
