"""Wiring of one state process: request-reply handlers (queue group) and the abandoned-upload sweeper."""

import asyncio
import logging

from faststream.nats import NatsMessage
from wgs_contracts import headers, subjects
from wgs_contracts.state import RestoreBegin, RestoreChunk, StateRefused, UploadBegin, UploadCommit
from wgs_db import snapshots
from wgs_db.engine import DATABASE_OUTAGES, close_database, open_database
from wgs_kit.lifecycle import cancel_all, freeze_startup_heap, wait_for_shutdown
from wgs_kit.messaging import decode, encode, make_broker
from wgs_kit.outages import log_failure

from wgs_state.config import Settings
from wgs_state.service import StateService

log = logging.getLogger(__name__)
QUEUE_GROUP = "state"


async def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    await open_database(settings.database_url)
    broker = make_broker(settings.nats_url, "wgs-state")
    service = StateService(broker, settings)

    @broker.subscriber(subjects.STATE_UPLOAD_BEGIN, queue=QUEUE_GROUP)
    async def on_begin(body: bytes) -> bytes:
        return encode(await service.begin(decode(body, UploadBegin)))

    @broker.subscriber(subjects.STATE_UPLOAD_CHUNK, queue=QUEUE_GROUP)
    async def on_chunk(body: bytes, msg: NatsMessage) -> bytes:
        try:
            snapshot_id = int(msg.headers[headers.SNAPSHOT_ID])
            index = int(msg.headers[headers.CHUNK_INDEX])
        except (KeyError, ValueError):
            return encode(StateRefused(reason="chunk without snapshot id and index headers"))
        return encode(await service.store_chunk(snapshot_id, index, body))

    @broker.subscriber(subjects.STATE_UPLOAD_COMMIT, queue=QUEUE_GROUP)
    async def on_commit(body: bytes) -> bytes:
        return encode(await service.commit(decode(body, UploadCommit)))

    @broker.subscriber(subjects.STATE_RESTORE_BEGIN, queue=QUEUE_GROUP)
    async def on_restore(body: bytes) -> bytes:
        return encode(await service.restore(decode(body, RestoreBegin).instance_id))

    @broker.subscriber(subjects.STATE_RESTORE_CHUNK, queue=QUEUE_GROUP)
    async def on_restore_chunk(body: bytes) -> bytes:
        request = decode(body, RestoreChunk)
        return await snapshots.chunk(request.snapshot_id, request.index) or b""

    async def sweep_forever() -> None:
        while True:
            try:
                await service.sweep()
            except Exception as exc:
                log_failure(log, exc, "sweeping abandoned uploads", outages=DATABASE_OUTAGES)
            await asyncio.sleep(min(60.0, max(1.0, settings.upload_timeout_seconds / 4)))

    await broker.start()
    sweeper = asyncio.create_task(sweep_forever())
    freeze_startup_heap()
    log.info(
        "state up: keep %d versions, %d-byte chunks, uploads abandoned after %gs",
        settings.keep,
        settings.chunk_bytes,
        settings.upload_timeout_seconds,
    )
    try:
        await wait_for_shutdown()
    finally:
        await cancel_all([sweeper])
        await broker.stop()
        await close_database()
