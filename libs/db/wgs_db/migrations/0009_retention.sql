-- Retention: how long a tenant's message records (their statuses and idempotency keys) and its
-- finished webhook deliveries (their attempts) are kept; the scheduler leader deletes older ones
-- (`wgs_db.retention`). Open deliveries are never deleted.
ALTER TABLE tenants
    ADD COLUMN retention_days integer NOT NULL DEFAULT 30 CHECK (retention_days BETWEEN 1 AND 3650);

-- A tenant's oldest messages first, without a scan.
CREATE INDEX messages_tenant_created_idx ON messages (tenant_id, created_at);
-- An endpoint's oldest finished deliveries first, without a scan.
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (endpoint_id, created_at)
    WHERE status IN ('delivered', 'dead');

-- A message's statuses go with it, however it is deleted: by retention, by its send being taken
-- back, or with its instance or tenant (a cascade). They have no foreign key, because a provider's
-- status event may be recorded before the message it is about.
CREATE FUNCTION delete_statuses_of_deleted_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM message_statuses WHERE message_id IN (SELECT id FROM deleted_messages);
    RETURN NULL;
END
$$;
CREATE TRIGGER message_statuses_go_with_their_message AFTER DELETE ON messages
    REFERENCING OLD TABLE AS deleted_messages
    FOR EACH STATEMENT EXECUTE FUNCTION delete_statuses_of_deleted_messages();
-- Those left behind by instances deleted before this trigger existed.
DELETE FROM message_statuses s WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = s.message_id);
