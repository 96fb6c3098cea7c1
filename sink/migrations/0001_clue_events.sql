-- Every fact of every clue, one row each. A fact's identity is (clue_id, seq): the table is a
-- ReplacingMergeTree over exactly that key, so a copy written by a replay folds into the original.
-- The columns about the clue's place and category are denormalised onto every fact (as of that
-- fact), so per-street / per-category questions about lifecycle facts need no join.
-- kafka_topic / kafka_partition / kafka_offset say where the fact was read; the sink resumes a
-- partition after the highest offset stored here, so a batch is never written twice by the sink.
-- Times are epoch milliseconds (UInt64): ClickHouse 18.16 has no DateTime64.
CREATE TABLE IF NOT EXISTS clue_events
(
    clue_id UUID,
    seq UInt32,
    command_id UUID,
    fact_type String,
    status String,
    occurred_at_ms UInt64,
    processed_at_ms UInt64,
    placement String,
    inside UInt8,
    grid_code String,
    community_code String,
    street_code String,
    category String,
    department String,
    reporter_group String,
    duplicate_of Nullable(UUID),
    deadline_ms UInt64,
    detail String,
    kafka_topic String,
    kafka_partition Int32,
    kafka_offset Int64,
    inserted_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (clue_id, seq);
