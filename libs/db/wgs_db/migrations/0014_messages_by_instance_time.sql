-- `GET /api/instances/{id}/messages` lists an instance's messages newest first, a page at a time
-- (decision 52): its index replaces the one on the instance alone, which it covers, so a send
-- still writes one index of `messages` for its instance.
CREATE INDEX messages_instance_created_idx ON messages (instance_id, created_at);
DROP INDEX messages_instance_idx;
