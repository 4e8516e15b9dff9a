-- wgs-migrate: no-transaction
-- Built while sends and deliveries go on (`CREATE INDEX CONCURRENTLY`; see `wgs_db.migrate`).
-- Each is dropped first: a build that failed leaves an invalid index, rebuilt when this runs again.

-- An unordered endpoint's earliest due delivery, without reading its deliveries waiting for a
-- retry; whether an endpoint has a delivery being sent (few rows: the ones in flight). Decision 49.
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_due_idx;
CREATE INDEX CONCURRENTLY webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_sending_idx;
CREATE INDEX CONCURRENTLY webhook_deliveries_sending_idx ON webhook_deliveries (endpoint_id, id)
    WHERE status = 'sending';

-- `GET /api/instances/{id}/messages` lists an instance's messages newest first, a page at a time
-- (decision 52): its index replaces the one on the instance alone, which it covers, so a send
-- still writes one index of `messages` for its instance.
DROP INDEX CONCURRENTLY IF EXISTS messages_instance_created_idx;
CREATE INDEX CONCURRENTLY messages_instance_created_idx ON messages (instance_id, created_at);
DROP INDEX CONCURRENTLY IF EXISTS messages_instance_idx;
