"""Webhooks service: signed, retried delivery of events to tenants (idle in this release)."""
