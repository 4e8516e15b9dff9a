"""Webhooks service: signed, retried, ordered delivery of instance events to tenant URLs."""
