-- A rotated-out webhook secret keeps signing, beside the new one, until its grace ends
-- (`POST /api/webhooks/{id}/rotate-secret` with `graceSeconds`, decision 48), so that a receiver
-- can switch to the new secret without rejecting a delivery meanwhile. The retention sweep
-- erases it once the grace is over (`wgs_db.retention`).
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD CONSTRAINT webhook_endpoints_previous_secret_check
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));
