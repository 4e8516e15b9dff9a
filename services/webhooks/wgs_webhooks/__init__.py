"""wgs_webhooks."""
