-- Messaging: per-tenant send rate, connection state of instances, sent messages and their statuses.
ALTER TABLE tenants
    ADD COLUMN send_rate_per_second double precision NOT NULL DEFAULT 20 CHECK (send_rate_per_second > 0),
    ADD COLUMN send_burst integer NOT NULL DEFAULT 40 CHECK (send_burst >= 1);

ALTER TABLE instances
    ADD COLUMN connection_state varchar(16),
    ADD COLUMN phone_id varchar(64);

-- Token buckets of the per-instance send rate limit, shared by every API process.
CREATE TABLE rate_buckets (
    instance_id integer PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE messages (
    id          varchar(40) PRIMARY KEY,
    instance_id integer NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    tenant_id   integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    recipient   varchar(32) NOT NULL,
    type        varchar(16) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_instance_idx ON messages (instance_id);

-- Each status a message reached, once (events may repeat).
CREATE TABLE message_statuses (
    message_id varchar(40) NOT NULL,
    status     varchar(16) NOT NULL,
    reason     text,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, status)
);
