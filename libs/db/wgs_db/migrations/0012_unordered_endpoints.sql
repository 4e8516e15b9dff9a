-- An endpoint may take its deliveries unordered (`"ordered": false`, decision 49): a delivery
-- waiting for a retry then holds back none of the newer ones. Still one delivery at a time per
-- endpoint; the next one is the endpoint's earliest due (a lost lease first). Its indexes are
-- built without blocking deliveries, by 0014.
ALTER TABLE webhook_endpoints ADD COLUMN ordered boolean NOT NULL DEFAULT true;
