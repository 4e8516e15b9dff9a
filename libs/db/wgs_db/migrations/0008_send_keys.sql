-- Idempotency keys of sends (`Idempotency-Key` on POST /api/instances/{id}/send): the message a
-- key of an instance stands for, and the digest of the request that claimed it, so that a retry
-- gets the same message and a key reused for another request is refused. Kept as long as the
-- instance; released when the provider refused the send (nothing was sent).
CREATE TABLE send_keys (
    instance_id    integer NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    key            varchar(255) NOT NULL,
    message_id     varchar(40) NOT NULL,
    request_digest char(64) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, key)
);
CREATE INDEX send_keys_message_idx ON send_keys (message_id);
