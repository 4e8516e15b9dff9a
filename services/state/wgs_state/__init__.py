"""wgs_state."""
