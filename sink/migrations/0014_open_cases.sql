-- The open clues the dashboard's lists page through (overdue, due_soon, stale: open clues
-- only), kept in a table of their own so that a list reads the open backlog instead of every
-- clue ever reported (dashboard-api README, "GET /v1/lists/{list}").
--
-- With each fact the sink writes what the fact changes in the set of open clues inside the
-- district, from the clue's state before the fact and after it (sink/src/open_cases.rs): the
-- state before with sign -1 when it was open, the state after with sign +1 when it is open. The
-- rows travel on the fact's own clue_events row as parallel arrays (sign, the state's version,
-- its status, the department it is at now, accepted, deadline, yellow and last-update times;
-- its report time, place and category are the fact's own columns: they never change once the
-- report is known) and the view below spreads them into open_cases.
--
-- VersionedCollapsingMergeTree(sign, version): a state's +1 row and the -1 row written when a
-- later fact replaces it share (clue_id, version) and cancel when parts merge, in whichever
-- order they arrived (two facts of one clue may be in one insert), so the table holds about
-- one row per open clue plus what was replaced since the last merges. Until then a replaced
-- state's +1 row is still there: readers treat the +1 rows as candidates and read each
-- candidate's latest state from dashboard_clues FINAL (the definition), so a row not yet
-- cancelled, or left by a fact stored twice behind the sink's back, costs a candidate's place
-- and never changes an answer. What the lists need from this table is that a clue's latest
-- open state always has its +1 row: it does, since only a later fact of the clue writes the -1
-- of a state.
--
-- The sink checks system.columns before adding a column, so the migration can run again.
ALTER TABLE clue_events ADD COLUMN open_case_sign Array(Int8);
ALTER TABLE clue_events ADD COLUMN open_case_version Array(UInt32);
ALTER TABLE clue_events ADD COLUMN open_case_status Array(String);
ALTER TABLE clue_events ADD COLUMN open_case_department Array(String);
ALTER TABLE clue_events ADD COLUMN open_case_accepted_at_ms Array(UInt64);
ALTER TABLE clue_events ADD COLUMN open_case_deadline_ms Array(UInt64);
ALTER TABLE clue_events ADD COLUMN open_case_yellow_at_ms Array(UInt64);
ALTER TABLE clue_events ADD COLUMN open_case_updated_at_ms Array(UInt64);

-- The columns have the names and meaning of dashboard_clues' (department_now: the department
-- the clue is dispatched to now, else the one it was routed or last dispatched to).
CREATE TABLE IF NOT EXISTS open_cases
(
    clue_id UUID,
    version UInt32,
    sign Int8,
    reported_at_ms UInt64,
    street_code String,
    community_code String,
    grid_code String,
    category String,
    department_now String,
    status String,
    accepted_at_ms UInt64,
    deadline_ms UInt64,
    yellow_at_ms UInt64,
    updated_at_ms UInt64
)
ENGINE = VersionedCollapsingMergeTree(sign, version)
ORDER BY clue_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS open_cases_mv TO open_cases AS
SELECT
    clue_id,
    open_case_version AS version,
    open_case_sign AS sign,
    reported_at_ms,
    street_code,
    community_code,
    grid_code,
    category,
    open_case_department AS department_now,
    open_case_status AS status,
    open_case_accepted_at_ms AS accepted_at_ms,
    open_case_deadline_ms AS deadline_ms,
    open_case_yellow_at_ms AS yellow_at_ms,
    open_case_updated_at_ms AS updated_at_ms
FROM clue_events
ARRAY JOIN open_case_sign, open_case_version, open_case_status, open_case_department, open_case_accepted_at_ms, open_case_deadline_ms, open_case_yellow_at_ms, open_case_updated_at_ms;

-- Backfill from the states stored before this migration (run it with the sinks stopped, as
-- `gridclue-sink migrate` or at the start of a sink, before it consumes; a no-op on an empty
-- database, and skipped when open_cases already holds rows): the latest state of every open
-- clue inside the district, with sign +1. The facts stored before carry no open_case arrays;
-- the first fact the sink writes for such a clue cancels this row with its -1, as for any
-- other. `gridclue-sink rebuild-aggregates` empties the table and runs this again.
INSERT INTO open_cases
SELECT
    clue_id,
    version,
    toInt8(1) AS sign,
    reported_at_ms,
    street_code,
    community_code,
    grid_code,
    category,
    department_now,
    status,
    accepted_at_ms,
    deadline_ms,
    yellow_at_ms,
    updated_at_ms
FROM dashboard_clues FINAL
WHERE status IN ('reported', 'accepted', 'dispatched', 'in_progress', 'handled')
  AND (SELECT count() FROM open_cases) = 0;
