"""Checks on the gateway's service processes, read from their logs."""

import re

from wgs_devstack.services import Service
from wgs_kit.waiting import wait_until

FROZEN = re.compile(r"start-up heap frozen: (\d+) objects")


async def frozen_objects(service: Service, timeout: float = 30.0) -> int:
    """How many objects the service froze once started (`wgs_kit.lifecycle.freeze_startup_heap`)."""

    async def logged() -> int | None:
        found = FROZEN.search(service.process.log_path.read_text(errors="replace"))
        return int(found.group(1)) if found else None

    return await wait_until(logged, timeout, what=f"{service.name} up with its start-up heap frozen")
