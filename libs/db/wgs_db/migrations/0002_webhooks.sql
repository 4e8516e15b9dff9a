-- Webhooks: endpoints (tenant- or instance-level), one delivery per (endpoint, event), every attempt.

-- A Standard Webhooks secret: `whsec_` + base64 of 32 bytes, 244 of them random (two v4 UUIDs,
-- drawn from PostgreSQL's strong random source). Generated here so that the API and the webhooks
-- service (which adopts instances' legacy `webhook_url`) share one definition.
CREATE FUNCTION webhook_secret() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'whsec_' || encode(decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
                              'base64')
$$;

CREATE TABLE webhook_endpoints (
    id          serial PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    instance_id integer REFERENCES instances (id) ON DELETE CASCADE,  -- NULL: every instance of the tenant
    url         text NOT NULL,
    secret      text NOT NULL DEFAULT webhook_secret(),
    events      text[] NOT NULL DEFAULT ARRAY['*'] CHECK (cardinality(events) > 0),
    enabled     boolean NOT NULL DEFAULT true,
    description text,
    legacy      boolean NOT NULL DEFAULT false,  -- adopted from instances.webhook_url
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id);
CREATE INDEX webhook_endpoints_instance_idx ON webhook_endpoints (instance_id);
CREATE UNIQUE INDEX webhook_endpoints_legacy_key ON webhook_endpoints (instance_id) WHERE legacy;

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    endpoint_id      integer NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         text NOT NULL,
    event_type       varchar(32) NOT NULL,
    payload          text NOT NULL,  -- the exact JSON body, frozen when the event was fanned out
    status           varchar(16) NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    retry_base       integer NOT NULL DEFAULT 0,  -- attempts made before the last redelivery
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,  -- while `sending`: when another worker may take it over
    last_status_code integer,
    last_error       text,
    last_latency_ms  integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CONSTRAINT webhook_deliveries_endpoint_event_key UNIQUE (endpoint_id, event_id)
);
-- The queue of each endpoint: its open deliveries in creation order.
CREATE INDEX webhook_deliveries_open_idx ON webhook_deliveries (endpoint_id, id)
    WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error       text,
    latency_ms  integer,  -- NULL while the attempt runs
    CONSTRAINT webhook_attempts_delivery_attempt_key UNIQUE (delivery_id, attempt)
);
