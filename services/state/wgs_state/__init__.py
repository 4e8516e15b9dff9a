"""State service: session-state snapshots (idle in this release)."""
