-- Session-state snapshots kept by the state service (docs/state.md).

-- One snapshot version of an instance's state folder: a zstd-compressed tar, stored in chunks.
CREATE TABLE snapshots (
    id           bigserial PRIMARY KEY,
    instance_id  integer NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    generation   integer NOT NULL CHECK (generation >= 0),
    version      integer NOT NULL CHECK (version > 0),
    status       varchar(16) NOT NULL DEFAULT 'uploading' CHECK (status IN ('uploading', 'complete', 'corrupt')),
    sha256       char(64),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    stored_bytes bigint NOT NULL DEFAULT 0,
    chunk_count  integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CONSTRAINT snapshots_instance_version_key UNIQUE (instance_id, version)
);
CREATE INDEX snapshots_uploading_idx ON snapshots (created_at) WHERE status = 'uploading';

CREATE TABLE snapshot_chunks (
    snapshot_id bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    index       integer NOT NULL CHECK (index >= 0),
    data        bytea NOT NULL,
    PRIMARY KEY (snapshot_id, index)
);
-- The bytes are zstd already: store them out of line without compressing them again.
ALTER TABLE snapshot_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- The newest generation that began an upload per instance: older ones are refused (fencing).
CREATE TABLE snapshot_fences (
    instance_id integer PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    generation  integer NOT NULL
);
