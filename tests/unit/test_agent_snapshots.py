"""The node agent's snapshot bookkeeping: content digests and markers (pure, on a temporary folder)."""

import os
from pathlib import Path

from wgs_node_agent.runtime.base import InstancePaths
from wgs_node_agent.snapshots import Marker, read_marker, tree_digest, write_marker


def make_tree(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "session.json").write_text('{"paired": true}')
    (root / "nested" / "keys.bin").write_bytes(os.urandom(3000))
    (root / "nested" / "deeper" / "empty").write_bytes(b"")
    (root / "link").symlink_to("session.json")


def test_digest_depends_on_content_names_and_modes_but_not_times(tmp_path: Path) -> None:
    make_tree(tmp_path)
    digest, size = tree_digest(tmp_path)
    assert size == len('{"paired": true}') + 3000
    os.utime(tmp_path / "session.json", (1, 1))
    assert tree_digest(tmp_path)[0] == digest
    (tmp_path / "session.json").chmod(0o600)
    changed_mode = tree_digest(tmp_path)[0]
    assert changed_mode != digest
    (tmp_path / "session.json").write_text('{"paired": false}')
    assert tree_digest(tmp_path)[0] not in (digest, changed_mode)


def test_digest_sees_a_renamed_or_added_file(tmp_path: Path) -> None:
    make_tree(tmp_path)
    digest, _ = tree_digest(tmp_path)
    (tmp_path / "nested" / "deeper" / "empty").rename(tmp_path / "nested" / "deeper" / "empty2")
    renamed, _ = tree_digest(tmp_path)
    assert renamed != digest
    (tmp_path / "nested" / "new-dir").mkdir()
    assert tree_digest(tmp_path)[0] != renamed


def test_identical_trees_have_identical_digests(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "x").write_bytes(b"same")
        (root / "sub").mkdir()
        (root / "sub" / "y").write_bytes(b"bytes")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


def test_marker_round_trips_and_a_missing_or_broken_one_reads_as_none(tmp_path: Path) -> None:
    paths = InstancePaths.under(tmp_path, 7)
    paths.state_dir.mkdir(parents=True)
    assert read_marker(paths) is None
    write_marker(paths, Marker(version=3, digest="abc"))
    assert read_marker(paths) == Marker(version=3, digest="abc")
    (paths.state_dir.parent / "snapshot.json").write_text("{broken")
    assert read_marker(paths) is None
