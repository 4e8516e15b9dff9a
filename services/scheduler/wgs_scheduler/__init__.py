"""Scheduler: places instances on nodes; one leader at a time acts on commands."""
