-- The length of what the user said (the prompt, or the user turns of a chat), computed once at ingest so
-- that the drift feature measures the same text as the scores and the embeddings. Rows stored before this
-- migration get the same value from their stored messages.

ALTER TABLE inference_events ADD COLUMN IF NOT EXISTS prompt_length UInt32 DEFAULT if(
    prompt IS NULL,
    lengthUTF8(arrayStringConcat(arrayMap(m -> JSONExtractString(m, 'content'),
        arrayFilter(m -> JSONExtractString(m, 'role') = 'user', JSONExtractArrayRaw(ifNull(messages, '[]')))), '\n')),
    lengthUTF8(prompt));
