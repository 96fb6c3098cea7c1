-- The latest state of each clue: one row per fact is written, versioned by the fact's seq, and
-- ReplacingMergeTree(version) keeps the newest. Read it with FINAL for exact answers.
-- placement is 'inside', 'outside' (point outside the district) or 'unknown' (lifecycle facts
-- seen without their report). is_case = inside, not a duplicate and not rejected (docs/ARCHITECTURE.md §5).
-- nearest_street_code is the street of the nearest grid for points outside the district.
-- No personal data: reporter_id is a token's public id, never a phone number or a name.
CREATE TABLE IF NOT EXISTS clues
(
    clue_id UUID,
    version UInt32,
    status String,
    placement String,
    inside UInt8,
    on_boundary UInt8,
    grid_code String,
    community_code String,
    street_code String,
    nearest_street_code String,
    distance_m Float64,
    lat Float64,
    lon Float64,
    map_version String,
    category String,
    department String,
    urgency String,
    reporter_id String,
    reporter_group String,
    channel String,
    duplicate_of Nullable(UUID),
    is_case UInt8,
    reported_at_ms UInt64,
    deadline_ms UInt64,
    accepted_at_ms UInt64,
    dispatched_at_ms UInt64,
    handled_at_ms UInt64,
    closed_at_ms UInt64,
    rework_count UInt16,
    postpone_count UInt16,
    updated_at_ms UInt64,
    kafka_partition Int32
)
ENGINE = ReplacingMergeTree(version)
ORDER BY clue_id;
