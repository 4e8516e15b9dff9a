-- A send's `sent` status is recorded while its provider is being asked (decision 35). It stays
-- provisional until the provider's own `sent` event confirms it, so that a send the provider
-- did not answer can be put back to `queued` without losing a `sent` that really happened.
ALTER TABLE message_statuses ADD COLUMN provisional boolean NOT NULL DEFAULT false;
