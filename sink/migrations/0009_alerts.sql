-- Hotspot alerts (ARCHITECTURE.md §8): every version of every alert from clues.alerts, one row
-- each. An alert version's identity is (alert_id, version) and a replayed copy has the same
-- content, so the table is a ReplacingMergeTree over exactly that key: a copy folds into the
-- original. An alert's current state is its highest version (argMax(…, version) per alert_id).
-- grids: the place's grid codes; clue_ids: the alert's cases in the order they joined.
-- Times are epoch milliseconds (UInt64): ClickHouse 18.16 has no DateTime64.
CREATE TABLE IF NOT EXISTS hotspot_alerts
(
    alert_id UUID,
    version UInt32,
    state String,
    place_kind String,
    grid_code String,
    grids Array(String),
    community_code String,
    street_code String,
    category String,
    window_start_ms UInt64,
    window_end_ms UInt64,
    window_days UInt32,
    observed UInt32,
    expected Float64,
    recurrence_days Float64,
    clue_ids Array(String),
    trigger_clue_id String,
    at_ms UInt64,
    kafka_partition Int32,
    kafka_offset Int64,
    inserted_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, version);
