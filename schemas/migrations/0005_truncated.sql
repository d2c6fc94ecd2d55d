-- The gateway cuts the text of an event that would pass LLMWATCH_MAX_EVENT_BYTES (Kafka refuses larger
-- messages); this says it did. Rows stored before this migration were never cut.

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false
    COMMENT 'prompt, messages or response text was cut (with a marker) to keep the event under max_event_bytes'
    AFTER redactions;
