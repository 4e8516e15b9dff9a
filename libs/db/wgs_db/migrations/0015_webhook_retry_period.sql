-- When a delivery's retry period began: its creation, or its last redelivery (the `next_attempt_at`
-- that the fan-out or a redelivery set), noted by its first claim since then. A delivery is retried
-- for the schedule's total from there, not from when it reached the head of its endpoint's queue, so
-- a failing ordered endpoint's backlog ends after that period (`wgs_webhooks.store`, decision 62).
-- NULL until that claim; a delivery already in its retries at the upgrade gets its period from its
-- next claim.
ALTER TABLE webhook_deliveries ADD COLUMN retry_since timestamptz;
