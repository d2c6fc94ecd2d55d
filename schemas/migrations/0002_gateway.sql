-- What the serving gateway adds to an inference event (optional fields: older producers leave them empty).

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS tokens_per_second Nullable(Float64)
    COMMENT 'completion tokens / latency';

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS redacted Bool DEFAULT false
    COMMENT 'personal data was replaced in the prompt or response before the event left the gateway';

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS redactions Map(String, UInt32)
    COMMENT 'replacements per kind (email, phone, credit_card, ip, or a configured pattern name)';
