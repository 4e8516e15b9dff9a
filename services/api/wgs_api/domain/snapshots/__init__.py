"""Session-state snapshots: operators list and download them; tenants see the last one."""
