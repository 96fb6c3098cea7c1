-- Projections for the dashboard's breakdowns, heatmap, lists, live numbers and trend, fed by
-- materialized views, so that those queries read only the rows of their period instead of the
-- whole of `clues` or `clue_events`.
--
-- Both tables hold the same rows the dashboard read before (the same columns, the same
-- versions), only fewer of them per query: the answers keep their definitions, including how
-- a fact or state stored twice counts once (ReplacingMergeTree below, `FINAL` or a distinct
-- count in the queries). That is why they are projections and not running counts: the
-- dashboard's tests store some facts twice, as a replay that bypassed the sink's own
-- exactly-once bookkeeping would, and such a replay must change no number.
--
-- Applying this migration to a database that already holds facts backfills both tables (run it
-- with the sinks stopped, as `gridclue-sink migrate` or at the start of a sink).

-- The states of the clues inside the district, from their report on, keyed by when they were
-- reported: a clue's report time, place, category and reporter group never change once its
-- report is known, so a period or place filter may be applied before `FINAL` merges a clue's
-- versions, and a month's breakdown reads that month's partition only. department_now is the
-- department the clue is dispatched to now, else the one it was routed or last dispatched to
-- (as in the work queues). Rows of clues whose report is not known yet (placement 'unknown')
-- and of reports outside the district are not kept: the dashboard never counts them.
CREATE TABLE IF NOT EXISTS dashboard_clues
(
    clue_id UUID,
    version UInt32,
    reported_at_ms UInt64,
    street_code String,
    community_code String,
    grid_code String,
    category String,
    reporter_group String,
    department_now String,
    status String,
    is_case UInt8,
    accepted_at_ms UInt64,
    deadline_ms UInt64,
    yellow_at_ms UInt64,
    updated_at_ms UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDateTime(intDiv(reported_at_ms, 1000), 'UTC'))
ORDER BY (reported_at_ms, clue_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS dashboard_clues_mv TO dashboard_clues AS
SELECT
    clue_id,
    version,
    reported_at_ms,
    street_code,
    community_code,
    grid_code,
    category,
    reporter_group,
    if(assigned_department != '', assigned_department, department) AS department_now,
    status,
    is_case,
    accepted_at_ms,
    deadline_ms,
    yellow_at_ms,
    updated_at_ms
FROM clues
WHERE placement = 'inside';

-- The facts the trend counts (reports, acceptances, closures, missed deadlines of clues inside
-- the district), keyed by the China hour (UTC+8, no daylight saving) they occurred in, as the
-- epoch milliseconds of the hour's start. The place, category and department are the fact's
-- own (as on `clue_events`).
CREATE TABLE IF NOT EXISTS dashboard_trend_facts
(
    hour_ms UInt64,
    clue_id UUID,
    seq UInt32,
    fact_type String,
    street_code String,
    community_code String,
    grid_code String,
    category String,
    department String
)
ENGINE = ReplacingMergeTree
ORDER BY (hour_ms, clue_id, seq);

CREATE MATERIALIZED VIEW IF NOT EXISTS dashboard_trend_facts_mv TO dashboard_trend_facts AS
SELECT
    toUInt64(intDiv(occurred_at_ms + 28800000, 3600000) * 3600000 - 28800000) AS hour_ms,
    clue_id,
    seq,
    fact_type,
    street_code,
    community_code,
    grid_code,
    category,
    department
FROM clue_events
WHERE inside = 1 AND fact_type IN ('reported', 'accepted', 'verified', 'overdue');

-- Backfill from the rows stored before this migration (no-ops on an empty database).
INSERT INTO dashboard_clues
SELECT
    clue_id,
    version,
    reported_at_ms,
    street_code,
    community_code,
    grid_code,
    category,
    reporter_group,
    if(assigned_department != '', assigned_department, department) AS department_now,
    status,
    is_case,
    accepted_at_ms,
    deadline_ms,
    yellow_at_ms,
    updated_at_ms
FROM clues
WHERE placement = 'inside';

INSERT INTO dashboard_trend_facts
SELECT
    toUInt64(intDiv(occurred_at_ms + 28800000, 3600000) * 3600000 - 28800000) AS hour_ms,
    clue_id,
    seq,
    fact_type,
    street_code,
    community_code,
    grid_code,
    category,
    department
FROM clue_events
WHERE inside = 1 AND fact_type IN ('reported', 'accepted', 'verified', 'overdue');
