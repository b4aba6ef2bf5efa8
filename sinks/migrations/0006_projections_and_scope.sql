-- Who may see a row (seed 004) is decided by organization, learner, class and teacher:
-- class_id and teacher_id live in the context JSON, and as typed columns they can be
-- filtered cheaply by the API's scopes and by generated row policies.
ALTER TABLE {db}.events
    ADD COLUMN IF NOT EXISTS class_id String DEFAULT JSONExtractString(context, 'class_id') AFTER organization_id,
    ADD COLUMN IF NOT EXISTS teacher_id String DEFAULT JSONExtractString(context, 'teacher_id') AFTER class_id;

-- Projection topics, as tables. A projection topic is compacted: for each key, the
-- record with the highest offset is the current value, and a tombstone (no value)
-- deletes it. ReplacingMergeTree(source_offset, is_deleted) keeps exactly that; read
-- the *_current views (FINAL, tombstones left out) for the state as of now.
-- The offset is the version rather than events_applied: a key always lives in one
-- partition, so offsets order its snapshots, tombstones included, even after a
-- learner is deleted and starts again from zero.
CREATE TABLE IF NOT EXISTS {db}.user_progress
(
    key                 String,
    user_id             String,
    xp                  Int64,
    level               Int32,
    current_streak      Int32,
    longest_streak      Int32,
    last_active_date    Nullable(Date),
    latest_event_at     Nullable(DateTime64(3, 'UTC')),
    events_applied      Int64,
    sessions_completed  Int64,
    completion_rate     Nullable(Float64),
    study_seconds       Int64,
    questions_answered  Int64,
    questions_correct   Int64,
    snapshot            String COMMENT 'the whole published record as JSON',
    is_deleted          UInt8,
    source_topic        LowCardinality(String),
    source_partition    UInt32,
    source_offset       UInt64,
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(source_offset, is_deleted)
ORDER BY key
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.topic_mastery
(
    key                 String,
    user_id             String,
    topic_id            String,
    p_mastery           Float64,
    mastered            Bool,
    events_applied      Int64,
    snapshot            String,
    is_deleted          UInt8,
    source_topic        LowCardinality(String),
    source_partition    UInt32,
    source_offset       UInt64,
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(source_offset, is_deleted)
ORDER BY key
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.mode_progress
(
    key                       String,
    user_id                   String,
    practice_mode_id          LowCardinality(String),
    current_level             Int32,
    total_sessions            Int32,
    total_drills_completed    Int64,
    sessions_at_current_level Int32,
    events_applied            Int64,
    snapshot                  String,
    is_deleted                UInt8,
    source_topic              LowCardinality(String),
    source_partition          UInt32,
    source_offset             UInt64,
    inserted_at               DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(source_offset, is_deleted)
ORDER BY key
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.blind_spots
(
    key                 String,
    user_id             String,
    as_of               Nullable(DateTime64(3, 'UTC')),
    blind_spots         String COMMENT 'JSON array: drill_id, drill_name, avg_score, attempts',
    events_applied      Int64,
    snapshot            String,
    is_deleted          UInt8,
    source_topic        LowCardinality(String),
    source_partition    UInt32,
    source_offset       UInt64,
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(source_offset, is_deleted)
ORDER BY key
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {db}.user_progress_current AS
SELECT * EXCEPT (is_deleted, snapshot) FROM {db}.user_progress FINAL WHERE is_deleted = 0;

CREATE VIEW IF NOT EXISTS {db}.topic_mastery_current AS
SELECT * EXCEPT (is_deleted, snapshot) FROM {db}.topic_mastery FINAL WHERE is_deleted = 0;

CREATE VIEW IF NOT EXISTS {db}.mode_progress_current AS
SELECT * EXCEPT (is_deleted, snapshot) FROM {db}.mode_progress FINAL WHERE is_deleted = 0;

CREATE VIEW IF NOT EXISTS {db}.blind_spots_current AS
SELECT * EXCEPT (is_deleted, snapshot) FROM {db}.blind_spots FINAL WHERE is_deleted = 0;

-- Data-subject requests (export, erase) and who made them: kept as evidence, so no TTL.
-- audit_id is the request's id.
CREATE TABLE IF NOT EXISTS {db}.audit_log
(
    audit_id        UUID,
    at              DateTime64(3, 'UTC'),
    action          LowCardinality(String),
    subject_user_id String,
    organization_id LowCardinality(String),
    actor_user_id   String,
    actor_role      LowCardinality(String),
    covers_until    Nullable(DateTime64(3, 'UTC')) COMMENT 'erase: events up to this time',
    details         String COMMENT 'JSON: what was done, row counts'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (organization_id, at, audit_id);
