-- Send rate limit in batches: how many tokens the last take granted (one statement serves
-- all the sends an API process has waiting, several of them for the same instance).
ALTER TABLE rate_buckets ADD COLUMN granted integer NOT NULL DEFAULT 0;
