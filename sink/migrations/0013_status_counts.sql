-- Running status counts for the dashboard's breakdowns and live numbers, and the trend's facts
-- per day (dashboard-api README, "Benchmark: the dashboard queries"): the status counts of the clues reported on each China day
-- (the breakdown's period is a range of report days), summed instead of read clue by clue.
--
-- With each fact, the sink writes the change the fact makes to its clue's breakdown state — the
-- state before it with sign -1, the state after it with +1, nothing when the fact changes none
-- of it — as parallel arrays on the fact's own clue_events row (state_*: sign, status, the
-- department the clue is at now, whether it is a case, and its deadline while it is open, else
-- 0). The state is what the breakdown reads of the clue's latest row (dashboard_clues), for
-- clues placed inside the district only; the report's day, place, category and reporter group
-- never change once known, so they come from the fact's row. Summed over every fact of a clue,
-- the rows telescope to +1 for its current state: summing them over a range of report days
-- gives, exactly, the current status counts of the clues reported then.
--
-- Exact because the sink writes each fact into clue_events exactly once (as for 0003 and
-- 0011): the state rows are stored by the same insert as their fact. Rows written behind the
-- sink's back (a replay) count twice until `gridclue-sink rebuild-aggregates` recomputes both
-- tables from the clues' latest states (the backfill below).
--
-- The sink checks system.columns before adding a column, so the migration can run again.
ALTER TABLE clue_events ADD COLUMN state_sign Array(Int8);
ALTER TABLE clue_events ADD COLUMN state_status Array(String);
ALTER TABLE clue_events ADD COLUMN state_department Array(String);
ALTER TABLE clue_events ADD COLUMN state_is_case Array(UInt8);
ALTER TABLE clue_events ADD COLUMN state_deadline_ms Array(UInt64);

-- The state rows summed per report day (cohort_day: days since 1970-01-01 of the report's China
-- date) at four grains, so that a query reads the coarsest one holding its grouping and filters:
-- 'street' (street, category, department, status), 'group' (and the reporter group),
-- 'community' (and the community), 'grid' (everything). Columns a grain does not hold are ''.
-- The first three are also summed per report month ('street_month', 'group_month',
-- 'community_month'; cohort_day: the month's first day), so that a period reads its whole
-- months as one row per group and its other days day by day. 'place' and 'place_month' hold the
-- street, community and grid only (no category, department or reporter group): grids by day
-- and month for the queries that filter by neither.
-- clues: the clues in that state; dated: those of them open with a deadline (the overdue ones
-- are these minus the ones whose deadline is still ahead, from status_deadlines).
CREATE TABLE IF NOT EXISTS status_counts
(
    grain String,
    cohort_day UInt32,
    street_code String,
    community String,
    grid String,
    category_code String,
    department_now String,
    reporter String,
    status String,
    is_case UInt8,
    clues Int64,
    dated Int64
)
ENGINE = SummingMergeTree((clues, dated))
ORDER BY (grain, cohort_day, street_code, community, grid, category_code, department_now, reporter, status, is_case);

-- The state rows of open clues with a deadline, by deadline: the clues whose deadline is still
-- ahead of an instant are the sum of the rows from that instant on (few: the open cases not yet
-- due, and pairs that cancel until merged).
CREATE TABLE IF NOT EXISTS status_deadlines
(
    deadline_ms UInt64,
    cohort_day UInt32,
    street_code String,
    community_code String,
    grid_code String,
    category String,
    department_now String,
    reporter_group String,
    status String,
    is_case UInt8,
    clues Int64
)
ENGINE = SummingMergeTree((clues))
ORDER BY (deadline_ms, cohort_day, street_code, community_code, grid_code, category, department_now, reporter_group, status, is_case);

CREATE MATERIALIZED VIEW IF NOT EXISTS status_counts_mv TO status_counts AS
SELECT
    (arrayJoin([('street', '', '', '', 0, category, state_department), ('group', '', '', reporter_group, 0, category, state_department), ('community', community_code, '', '', 0, category, state_department), ('grid', community_code, grid_code, reporter_group, 0, category, state_department), ('street_month', '', '', '', 1, category, state_department), ('group_month', '', '', reporter_group, 1, category, state_department), ('community_month', community_code, '', '', 1, category, state_department), ('place', community_code, grid_code, '', 0, '', ''), ('place_month', community_code, grid_code, '', 1, '', '')]) AS place).1 AS grain,
    if(place.5 = 1, toUInt32(toStartOfMonth(toDate(toDateTime(intDiv(reported_at_ms, 1000) + 28800, 'UTC')))), toUInt32(intDiv(reported_at_ms + 28800000, 86400000))) AS cohort_day,
    street_code,
    place.2 AS community,
    place.3 AS grid,
    place.6 AS category_code,
    place.7 AS department_now,
    place.4 AS reporter,
    state_status AS status,
    state_is_case AS is_case,
    toInt64(state_sign) AS clues,
    toInt64(state_sign) * toInt64(state_deadline_ms > 0) AS dated
FROM clue_events
ARRAY JOIN state_sign, state_status, state_department, state_is_case, state_deadline_ms;

CREATE MATERIALIZED VIEW IF NOT EXISTS status_deadlines_mv TO status_deadlines AS
SELECT
    state_deadline_ms AS deadline_ms,
    toUInt32(intDiv(reported_at_ms + 28800000, 86400000)) AS cohort_day,
    street_code,
    community_code,
    grid_code,
    category,
    state_department AS department_now,
    reporter_group,
    state_status AS status,
    state_is_case AS is_case,
    toInt64(state_sign) AS clues
FROM clue_events
ARRAY JOIN state_sign, state_status, state_department, state_is_case, state_deadline_ms
WHERE state_deadline_ms > 0;

-- The trend's facts (reports, acceptances, closures and missed deadlines of clues inside the
-- district; the place, category and department are the fact's own, as on clue_events) counted
-- per China day (days since 1970-01-01) at three grains: 'street' (street, category,
-- department), 'community' (and the community), 'grid' (and the grid). A day, week or month
-- trend sums a period's days; an hour trend reads dashboard_trend_facts. Each counted fact
-- happens once per clue but the missed deadline (one per deadline), so with every fact stored
-- once these are the distinct counts the trend is defined by; `gridclue-sink
-- rebuild-aggregates` recomputes them from clue_events FINAL with this view's statement.
CREATE TABLE IF NOT EXISTS trend_days
(
    grain String,
    day UInt32,
    street_code String,
    community String,
    grid String,
    category String,
    department String,
    reports Int64,
    accepted Int64,
    closed Int64,
    overdue Int64
)
ENGINE = SummingMergeTree((reports, accepted, closed, overdue))
ORDER BY (grain, day, street_code, community, grid, category, department);

CREATE MATERIALIZED VIEW IF NOT EXISTS trend_days_mv TO trend_days AS
SELECT
    (arrayJoin([('street', '', ''), ('community', community_code, ''), ('grid', community_code, grid_code)]) AS place).1 AS grain,
    toUInt32(intDiv(occurred_at_ms + 28800000, 86400000)) AS day,
    street_code,
    place.2 AS community,
    place.3 AS grid,
    category,
    department,
    toInt64(fact_type = 'reported') AS reports,
    toInt64(fact_type = 'accepted') AS accepted,
    toInt64(fact_type = 'verified') AS closed,
    toInt64(fact_type = 'overdue') AS overdue
FROM clue_events
WHERE inside = 1 AND fact_type IN ('reported', 'accepted', 'verified', 'overdue');

-- Backfill from the clues' latest states (run it with the sinks stopped, as `gridclue-sink
-- migrate` or at the start of a sink, before it consumes; a no-op on an empty database, and
-- skipped when the tables already hold rows): one +1 row per clue inside the district, what
-- the state rows of its facts sum to. `gridclue-sink rebuild-aggregates` empties both tables
-- and runs these again.
INSERT INTO status_counts
SELECT
    (arrayJoin([('street', '', '', '', 0, category, if(assigned_department != '', assigned_department, department)), ('group', '', '', reporter_group, 0, category, if(assigned_department != '', assigned_department, department)), ('community', community_code, '', '', 0, category, if(assigned_department != '', assigned_department, department)), ('grid', community_code, grid_code, reporter_group, 0, category, if(assigned_department != '', assigned_department, department)), ('street_month', '', '', '', 1, category, if(assigned_department != '', assigned_department, department)), ('group_month', '', '', reporter_group, 1, category, if(assigned_department != '', assigned_department, department)), ('community_month', community_code, '', '', 1, category, if(assigned_department != '', assigned_department, department)), ('place', community_code, grid_code, '', 0, '', ''), ('place_month', community_code, grid_code, '', 1, '', '')]) AS place).1 AS grain,
    if(place.5 = 1, toUInt32(toStartOfMonth(toDate(toDateTime(intDiv(reported_at_ms, 1000) + 28800, 'UTC')))), toUInt32(intDiv(reported_at_ms + 28800000, 86400000))) AS cohort_day,
    street_code,
    place.2 AS community,
    place.3 AS grid,
    place.6 AS category_code,
    place.7 AS department_now,
    place.4 AS reporter,
    status,
    is_case,
    toInt64(1) AS clues,
    toInt64(status IN ('reported', 'accepted', 'dispatched', 'in_progress', 'handled') AND deadline_ms > 0) AS dated
FROM clues FINAL
WHERE placement = 'inside' AND (SELECT count() FROM status_counts) = 0;

INSERT INTO status_deadlines
SELECT
    deadline_ms,
    toUInt32(intDiv(reported_at_ms + 28800000, 86400000)) AS cohort_day,
    street_code,
    community_code,
    grid_code,
    category,
    if(assigned_department != '', assigned_department, department) AS department_now,
    reporter_group,
    status,
    is_case,
    toInt64(1) AS clues
FROM clues FINAL
WHERE placement = 'inside' AND status IN ('reported', 'accepted', 'dispatched', 'in_progress', 'handled') AND deadline_ms > 0
    AND (SELECT count() FROM status_deadlines) = 0;

-- And the trend's days from the stored facts, each once (FINAL).
INSERT INTO trend_days
SELECT
    (arrayJoin([('street', '', ''), ('community', community_code, ''), ('grid', community_code, grid_code)]) AS place).1 AS grain,
    toUInt32(intDiv(occurred_at_ms + 28800000, 86400000)) AS day,
    street_code,
    place.2 AS community,
    place.3 AS grid,
    category,
    department,
    toInt64(fact_type = 'reported') AS reports,
    toInt64(fact_type = 'accepted') AS accepted,
    toInt64(fact_type = 'verified') AS closed,
    toInt64(fact_type = 'overdue') AS overdue
FROM clue_events FINAL
WHERE inside = 1 AND fact_type IN ('reported', 'accepted', 'verified', 'overdue')
    AND (SELECT count() FROM trend_days) = 0;
