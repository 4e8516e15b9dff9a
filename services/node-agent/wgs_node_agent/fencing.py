"""The highest generation this node has seen per instance, kept on disk.

A command for an older generation than the one recorded is stale (the
instance was re-placed since) and is ignored; the record survives restarts.
"""

import json
import os
from pathlib import Path


class GenerationLedger:
    """Highest seen generation per instance id, persisted atomically in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[int, int] = {}
        if path.exists():
            self._seen = {int(k): int(v) for k, v in json.loads(path.read_text()).items()}

    def seen(self, instance_id: int) -> int:
        """The highest generation seen for the instance (0 if none)."""
        return self._seen.get(instance_id, 0)

    def is_stale(self, instance_id: int, generation: int) -> bool:
        """True when a newer generation of the instance has been seen."""
        return generation < self.seen(instance_id)

    def record(self, instance_id: int, generation: int) -> None:
        """Remember `generation` if it is the newest; written to disk before returning."""
        if generation <= self.seen(instance_id):
            return
        self._seen[instance_id] = generation
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            json.dump({str(k): v for k, v in self._seen.items()}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
