-- One dead letter per refused input and stage: a batch re-posted after a 503 refuses its
-- invalid events again, and their dead letters reach events.invalid again at new offsets.
-- letter_id is the same for both (learnstream.dead_letters.letter_id); the sink stores the
-- first and drops the rest, looking ids up through the bloom filter index.
ALTER TABLE {db}.events_invalid
    ADD COLUMN IF NOT EXISTS letter_id String DEFAULT '' COMMENT 'same refusal, same id';

ALTER TABLE {db}.events_invalid
    ADD INDEX IF NOT EXISTS letter_id_idx letter_id TYPE bloom_filter GRANULARITY 4;
