-- Deployments: routes are events (the route and its weights after each change), with who made the change,
-- the adapter's lineage, and the canary analysis's numbers behind a promotion or a rollback.

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS route String DEFAULT '';
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS weights Map(String, Float64);
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS stable_adapter String DEFAULT '';
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS actor LowCardinality(String) DEFAULT '';
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS run_id String DEFAULT '';
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS trigger_alert_id Nullable(UUID);
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS numbers Map(String, Float64);
