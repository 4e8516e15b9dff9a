-- Tenants, API keys, nodes, instances.
CREATE TABLE tenants (
    id            serial PRIMARY KEY,
    name          varchar(128) NOT NULL UNIQUE,
    email         varchar(256),
    max_instances integer NOT NULL DEFAULT 100 CHECK (max_instances >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           serial PRIMARY KEY,
    tenant_id    integer NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix       varchar(16) NOT NULL,
    key_hash     varchar(64) NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE nodes (
    id                serial PRIMARY KEY,
    name              varchar(63) NOT NULL UNIQUE,
    docker_host       text NOT NULL,
    public_host       text NOT NULL,
    schedulable       boolean NOT NULL DEFAULT true,
    nano_cpus         bigint NOT NULL DEFAULT 0,
    memory_bytes      bigint NOT NULL DEFAULT 0,
    providers         jsonb NOT NULL DEFAULT '[]'::jsonb,
    runtime           varchar(16),
    last_heartbeat_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
    id            serial PRIMARY KEY,
    tenant_id     integer NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    node_id       integer REFERENCES nodes (id) ON DELETE RESTRICT,
    name          varchar(256),
    phone_number  varchar(20) NOT NULL,
    provider      varchar(16) NOT NULL,
    webhook_url   text,
    desired_state varchar(16) NOT NULL DEFAULT 'running',
    status        varchar(16) NOT NULL DEFAULT 'pending',
    status_reason text,
    status_at     timestamptz,
    generation    integer NOT NULL DEFAULT 0,
    cpu_limit     varchar(16) NOT NULL,
    memory_limit  varchar(16) NOT NULL,
    nano_cpus     bigint NOT NULL CHECK (nano_cpus > 0),
    memory_bytes  bigint NOT NULL CHECK (memory_bytes > 0),
    pids_limit    integer NOT NULL DEFAULT 256,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instances_tenant_phone_key UNIQUE (tenant_id, phone_number)
);
CREATE INDEX instances_node_idx ON instances (node_id);

-- What each node has reserved: every instance placed on it until its row is deleted.
CREATE VIEW node_load AS
    SELECT node_id,
           sum(nano_cpus)::bigint    AS nano_cpus,
           sum(memory_bytes)::bigint AS memory_bytes,
           count(*)::integer         AS instances
      FROM instances
     WHERE node_id IS NOT NULL
     GROUP BY node_id;
