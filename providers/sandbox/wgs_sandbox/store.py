"""The instance's durable state: one JSON file in the data folder, replaced atomically."""

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def load(folder: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none yet.

    A corrupt file raises: crashing (and being restarted) beats starting over and
    reusing sequence numbers the node agent has already published.
    """
    try:
        raw = (folder / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    state = json.loads(raw)
    if not isinstance(state, dict) or state.get("version") != 1:
        raise ValueError(f"{folder / STATE_FILE}: not a version 1 sandbox state")
    return state


def encode(state: dict[str, Any]) -> bytes:
    """The file content of `state`."""
    return json.dumps({**state, "version": 1}, separators=(",", ":")).encode()


def write(folder: Path, payload: bytes) -> None:
    """Write an encoded state durably: temporary file, fsync, rename over the old one, fsync the folder."""
    target = folder / STATE_FILE
    temporary = target.with_name(STATE_FILE + ".tmp")
    with open(temporary, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, target)
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
