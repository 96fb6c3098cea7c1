-- The lives of each partition's Kafka log. When a broker's log is reset (a dev broker restarted
-- empty, a topic re-created, a log truncated) its offsets start again while clue_events still
-- says which offsets were stored: the sink refuses such a partition, and an operator starts a new
-- log for it with `gridclue-sink rebase`. Facts carry the number of the log they were read from
-- (clue_events.kafka_log), so the stored position of each log is its own.
-- A log gets one row per Kafka cluster it was read from (cluster_id): the first time the sink
-- reads it, when the operator starts it, and when the same log is found carried over to another
-- cluster (the fact stored from the last stored offset is the record at that offset there).
-- low/high_watermark are the partition's offsets when the row was written; stored_before is
-- the highest offset stored from the previous log (-1 when none or not a rebase).
CREATE TABLE IF NOT EXISTS kafka_logs
(
    kafka_topic String,
    kafka_partition Int32,
    kafka_log UInt32,
    cluster_id String,
    low_watermark Int64,
    high_watermark Int64,
    stored_before Int64,
    note String,
    recorded_at_ms UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (kafka_topic, kafka_partition, kafka_log, cluster_id);
-- The log a fact was read from (0 = the first log of its partition). The sink checks
-- system.columns before adding, so the migration can run again.
ALTER TABLE clue_events ADD COLUMN kafka_log UInt32 DEFAULT 0;
