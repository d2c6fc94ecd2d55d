-- Retraining: every step of a run (with the loss while training and the reason when skipped or failed), and
-- each candidate's numbers next to those of what served when it was judged.

ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS adapter String DEFAULT '';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS adapter_name String DEFAULT '';
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS step Nullable(UInt32);
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS max_steps Nullable(UInt32);
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS loss Nullable(Float64);
ALTER TABLE training_runs ADD COLUMN IF NOT EXISTS reason String DEFAULT '';
ALTER TABLE model_candidates ADD COLUMN IF NOT EXISTS baseline String DEFAULT '';
ALTER TABLE model_candidates ADD COLUMN IF NOT EXISTS baseline_metrics Map(String, Float64);
ALTER TABLE model_candidates ADD COLUMN IF NOT EXISTS trigger_alert_id Nullable(UUID);
ALTER TABLE model_candidates ADD COLUMN IF NOT EXISTS dataset_size Nullable(UInt64);
ALTER TABLE model_candidates ADD COLUMN IF NOT EXISTS manifest_uri String DEFAULT '';
