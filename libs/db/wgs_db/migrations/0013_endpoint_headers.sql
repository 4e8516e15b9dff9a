-- Headers of the tenant's choosing sent with every delivery of an endpoint (a receiver behind an
-- API gateway that wants its own token, say; decision 51). Names and values are checked by the API.
ALTER TABLE webhook_endpoints ADD COLUMN headers jsonb NOT NULL DEFAULT '{}'::jsonb;
