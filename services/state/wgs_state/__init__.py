"""State service: chunked, compressed, checksummed, versioned session-state snapshots in PostgreSQL."""
