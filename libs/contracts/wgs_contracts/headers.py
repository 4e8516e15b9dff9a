"""NATS header names used on every hop."""

from typing import Final

MSG_ID: Final = "Nats-Msg-Id"
EXPECTED_STREAM: Final = "Nats-Expected-Stream"
TRACE_ID: Final = "Wgs-Trace-Id"
DEAD_LETTER_REASON: Final = "Wgs-Dead-Letter-Reason"
DEAD_LETTER_SUBJECT: Final = "Wgs-Dead-Letter-Subject"
SNAPSHOT_ID: Final = "Wgs-Snapshot-Id"
CHUNK_INDEX: Final = "Wgs-Chunk-Index"
