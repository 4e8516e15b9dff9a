-- An endpoint may take its deliveries unordered (`"ordered": false`, decision 49): a delivery
-- waiting for a retry then holds back none of the newer ones. Still one delivery at a time per
-- endpoint; the next one is the endpoint's earliest due (a lost lease first).
ALTER TABLE webhook_endpoints ADD COLUMN ordered boolean NOT NULL DEFAULT true;
-- An unordered endpoint's earliest due delivery, without reading its deliveries waiting for a retry.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
-- Whether an endpoint has a delivery being sent (few rows: the ones in flight).
CREATE INDEX webhook_deliveries_sending_idx ON webhook_deliveries (endpoint_id, id) WHERE status = 'sending';
