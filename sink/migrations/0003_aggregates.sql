-- Aggregates for the dashboards, fed by materialized views on clue_events.
--
-- They stay exact because the sink writes every fact into clue_events exactly once: it resumes
-- each partition after the highest offset stored there, skips facts whose (clue_id, seq) is
-- already stored, and after a failed insert re-reads what ClickHouse kept before retrying the
-- rest. Each clue_events row says what it changes: report_delta (+1 for a report, inside or
-- outside), case_delta (+1 for a report that is a case, -1 when such a case is rejected or
-- merged). The keys of clue_counts are the report's own attributes, which never change, so a
-- -1 always lands on the row of its +1. docs/ARCHITECTURE.md §5 defines reports and cases.
--
-- Applying this migration to a database that already holds facts backfills both tables from
-- the existing rows (run it with the sinks stopped, as `gridclue-sink migrate` or at the start
-- of a sink, before it consumes).
ALTER TABLE clue_events ADD COLUMN reported_at_ms UInt64 DEFAULT 0;
ALTER TABLE clue_events ADD COLUMN routed_department String DEFAULT '';
ALTER TABLE clue_events ADD COLUMN nearest_street_code String DEFAULT '';
ALTER TABLE clue_events ADD COLUMN report_delta Int8 DEFAULT 0;
ALTER TABLE clue_events ADD COLUMN case_delta Int8 DEFAULT 0;
-- The department a report was routed to, and whether the report was a case when it came in.
ALTER TABLE clues ADD COLUMN routed_department String DEFAULT department;
ALTER TABLE clues ADD COLUMN report_case UInt8 DEFAULT toUInt8(inside = 1 AND isNull(duplicate_of));

-- Reports and cases by the day reported × street / community / grid × category × routed
-- department × reporter group × placement. Points outside the district have an empty
-- street_code and carry the street of the nearest grid in nearest_street_code.
CREATE TABLE IF NOT EXISTS clue_counts
(
    day Date,
    street_code String,
    community_code String,
    grid_code String,
    nearest_street_code String,
    category String,
    department String,
    reporter_group String,
    placement String,
    report_count Int64,
    case_count Int64
)
ENGINE = SummingMergeTree((report_count, case_count))
ORDER BY (street_code, category, day, community_code, grid_code, nearest_street_code, department, reporter_group, placement);

CREATE MATERIALIZED VIEW IF NOT EXISTS clue_counts_mv TO clue_counts AS
SELECT
    toDate(toDateTime(intDiv(reported_at_ms, 1000), 'UTC')) AS day,
    street_code,
    community_code,
    grid_code,
    nearest_street_code,
    category,
    routed_department AS department,
    reporter_group,
    placement,
    toInt64(report_delta) AS report_count,
    toInt64(case_delta) AS case_count
FROM clue_events
WHERE report_delta != 0 OR case_delta != 0;

-- Facts per hour (when they occurred) × street / community × category × current department ×
-- reporter group × fact type: reports, acceptances, closures… as they happen.
CREATE TABLE IF NOT EXISTS fact_flow_hourly
(
    hour DateTime('UTC'),
    street_code String,
    community_code String,
    category String,
    department String,
    reporter_group String,
    fact_type String,
    facts UInt64
)
ENGINE = SummingMergeTree(facts)
ORDER BY (hour, street_code, category, fact_type, community_code, department, reporter_group);

CREATE MATERIALIZED VIEW IF NOT EXISTS fact_flow_hourly_mv TO fact_flow_hourly AS
SELECT
    toStartOfHour(toDateTime(intDiv(occurred_at_ms, 1000), 'UTC')) AS hour,
    street_code,
    community_code,
    category,
    department,
    reporter_group,
    fact_type,
    toUInt64(1) AS facts
FROM clue_events;

-- Backfill from facts stored before this migration (no-ops on an empty database).
INSERT INTO clue_counts
SELECT
    toDate(toDateTime(intDiv(reported_at_ms, 1000), 'UTC')) AS day,
    street_code,
    community_code,
    grid_code,
    nearest_street_code,
    category,
    routed_department AS department,
    reporter_group,
    placement,
    toInt64(1) AS report_count,
    toInt64(is_case) AS case_count
FROM clues FINAL
WHERE placement IN ('inside', 'outside');

INSERT INTO fact_flow_hourly
SELECT
    toStartOfHour(toDateTime(intDiv(occurred_at_ms, 1000), 'UTC')) AS hour,
    street_code,
    community_code,
    category,
    department,
    reporter_group,
    fact_type,
    toUInt64(1) AS facts
FROM clue_events FINAL;
