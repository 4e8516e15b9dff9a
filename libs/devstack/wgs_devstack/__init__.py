"""wgs_devstack."""
