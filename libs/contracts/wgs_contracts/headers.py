"""NATS header names used on every hop."""

from typing import Final

MSG_ID: Final = "Nats-Msg-Id"
EXPECTED_STREAM: Final = "Nats-Expected-Stream"
# JetStream atomic batch publishing (nats-server 2.12+, streams with `allow_atomic`).
BATCH_ID: Final = "Nats-Batch-Id"
BATCH_SEQUENCE: Final = "Nats-Batch-Sequence"
BATCH_COMMIT: Final = "Nats-Batch-Commit"
TRACE_ID: Final = "Wgs-Trace-Id"
DEAD_LETTER_REASON: Final = "Wgs-Dead-Letter-Reason"
DEAD_LETTER_SUBJECT: Final = "Wgs-Dead-Letter-Subject"
SNAPSHOT_ID: Final = "Wgs-Snapshot-Id"
CHUNK_INDEX: Final = "Wgs-Chunk-Index"
