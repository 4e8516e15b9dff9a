-- A status of a message no row holds ("unclaimed"): the provider reported a message the API never
-- recorded (sent from the phone itself, or its record failed) or one retention already deleted.
-- Nothing would ever delete it, since statuses go with their message (0009); the retention sweep
-- deletes unclaimed statuses after a grace period instead (`wgs_db.retention`). The flag is set
-- when the status is recorded; the sweep checks it again before deleting, because a status may be
-- recorded a moment before its message (decision 35).
ALTER TABLE message_statuses ADD COLUMN unclaimed boolean NOT NULL DEFAULT false;
UPDATE message_statuses s SET unclaimed = true WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = s.message_id);
-- The oldest unclaimed statuses first, without a scan; claimed rows (nearly all) are not in it.
CREATE INDEX message_statuses_unclaimed_idx ON message_statuses (at) WHERE unclaimed;
