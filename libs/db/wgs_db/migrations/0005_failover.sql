-- Failover: when the scheduler marked a node lost (heartbeats stopped); NULL while it is alive.
ALTER TABLE nodes ADD COLUMN lost_at timestamptz;
