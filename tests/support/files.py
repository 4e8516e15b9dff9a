"""Comparing folders in tests."""

from pathlib import Path


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under `root` with its mode and (for files) its bytes."""
    result: dict[str, tuple[int, bytes | None]] = {".": (root.stat().st_mode, None)}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        result[str(path.relative_to(root))] = (mode, path.read_bytes() if path.is_file() else None)
    return result
