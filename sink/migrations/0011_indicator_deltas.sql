-- The governance indicators' delta projection (docs/ARCHITECTURE.md §6; dashboard-api README,
-- "Indicators"): with each fact, the sink writes what the fact changes in its clue's
-- contribution to the indicators — the clue's state before it with sign -1 and after it with
-- +1, from the fact's time on, plus the changes its deadline makes later without a fact (due at
-- the deadline, overdue a millisecond after). The rows travel on the fact's own clue_events row
-- as parallel arrays (from when each holds, the China day of the cohort it counts in — the day
-- of acceptance for a case, of the report for the reports and duplicates —, the clue's
-- department, and 15 signed counts in this order: accepted, due, closed, closed_on_time,
-- verified, reworked, postponed, supervised, overdue_open, timed_closed, working_ms, rated,
-- rating_sum, reports, duplicates). The materialized views below spread them into three tables;
-- the indicators as of an instant T are the sums of the rows holding from T or earlier.
--
-- Exact because the sink writes each fact into clue_events exactly once (as for the aggregates
-- of 0003): the deltas are stored by the same insert as their fact.
--
-- The sink checks system.columns before adding a column, so the migration can run again.
ALTER TABLE clue_events ADD COLUMN indicator_effective_ms Array(UInt64);
ALTER TABLE clue_events ADD COLUMN indicator_cohort_day Array(UInt32);
ALTER TABLE clue_events ADD COLUMN indicator_department Array(String);
ALTER TABLE clue_events ADD COLUMN indicator_counts Array(Array(Int64));

-- Every delta row, ordered by the instant it holds from: the rows of the day of an instant after
-- the instant are read from here.
CREATE TABLE IF NOT EXISTS indicator_deltas
(
    effective_ms UInt64,
    cohort_day UInt32,
    street_code String,
    community_code String,
    category String,
    department String,
    accepted Int64,
    due Int64,
    closed Int64,
    closed_on_time Int64,
    verified Int64,
    reworked Int64,
    postponed Int64,
    supervised Int64,
    overdue_open Int64,
    timed_closed Int64,
    working_ms Int64,
    rated Int64,
    rating_sum Int64,
    reports Int64,
    duplicates Int64
)
ENGINE = MergeTree
ORDER BY (effective_ms, cohort_day);

-- The same rows summed by grouping (dim: street, community, department or category; key: the
-- group's code), the UTC day they hold from (effective_ms / 86400000), street and cohort day:
-- the whole days after an instant's day are read from here.
CREATE TABLE IF NOT EXISTS indicator_days
(
    dim String,
    street_code String,
    key String,
    cohort_day UInt32,
    effective_day UInt32,
    accepted Int64,
    due Int64,
    closed Int64,
    closed_on_time Int64,
    verified Int64,
    reworked Int64,
    postponed Int64,
    supervised Int64,
    overdue_open Int64,
    timed_closed Int64,
    working_ms Int64,
    rated Int64,
    rating_sum Int64,
    reports Int64,
    duplicates Int64
)
ENGINE = SummingMergeTree((accepted, due, closed, closed_on_time, verified, reworked, postponed, supervised, overdue_open, timed_closed, working_ms, rated, rating_sum, reports, duplicates))
ORDER BY (dim, effective_day, street_code, cohort_day, key);

-- The same rows summed by grouping, street and cohort day over every instant: the counts as of
-- "after every delta" (the deadlines still ahead included). An instant's counts are these minus
-- the rows holding from after it, which for the usual instants (now, the end of a past period)
-- are few.
CREATE TABLE IF NOT EXISTS indicator_cohorts
(
    dim String,
    street_code String,
    key String,
    cohort_day UInt32,
    accepted Int64,
    due Int64,
    closed Int64,
    closed_on_time Int64,
    verified Int64,
    reworked Int64,
    postponed Int64,
    supervised Int64,
    overdue_open Int64,
    timed_closed Int64,
    working_ms Int64,
    rated Int64,
    rating_sum Int64,
    reports Int64,
    duplicates Int64
)
ENGINE = SummingMergeTree((accepted, due, closed, closed_on_time, verified, reworked, postponed, supervised, overdue_open, timed_closed, working_ms, rated, rating_sum, reports, duplicates))
ORDER BY (dim, street_code, cohort_day, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS indicator_deltas_mv TO indicator_deltas AS
SELECT
    indicator_effective_ms AS effective_ms,
    indicator_cohort_day AS cohort_day,
    street_code,
    community_code,
    category,
    indicator_department AS department,
    indicator_counts[1] AS accepted,
    indicator_counts[2] AS due,
    indicator_counts[3] AS closed,
    indicator_counts[4] AS closed_on_time,
    indicator_counts[5] AS verified,
    indicator_counts[6] AS reworked,
    indicator_counts[7] AS postponed,
    indicator_counts[8] AS supervised,
    indicator_counts[9] AS overdue_open,
    indicator_counts[10] AS timed_closed,
    indicator_counts[11] AS working_ms,
    indicator_counts[12] AS rated,
    indicator_counts[13] AS rating_sum,
    indicator_counts[14] AS reports,
    indicator_counts[15] AS duplicates
FROM clue_events
ARRAY JOIN indicator_effective_ms, indicator_cohort_day, indicator_department, indicator_counts;

CREATE MATERIALIZED VIEW IF NOT EXISTS indicator_days_mv TO indicator_days AS
SELECT
    (arrayJoin([('street', street_code), ('community', community_code), ('department', indicator_department), ('category', category)]) AS grouping).1 AS dim,
    street_code,
    grouping.2 AS key,
    indicator_cohort_day AS cohort_day,
    toUInt32(intDiv(indicator_effective_ms, 86400000)) AS effective_day,
    indicator_counts[1] AS accepted,
    indicator_counts[2] AS due,
    indicator_counts[3] AS closed,
    indicator_counts[4] AS closed_on_time,
    indicator_counts[5] AS verified,
    indicator_counts[6] AS reworked,
    indicator_counts[7] AS postponed,
    indicator_counts[8] AS supervised,
    indicator_counts[9] AS overdue_open,
    indicator_counts[10] AS timed_closed,
    indicator_counts[11] AS working_ms,
    indicator_counts[12] AS rated,
    indicator_counts[13] AS rating_sum,
    indicator_counts[14] AS reports,
    indicator_counts[15] AS duplicates
FROM clue_events
ARRAY JOIN indicator_effective_ms, indicator_cohort_day, indicator_department, indicator_counts;

CREATE MATERIALIZED VIEW IF NOT EXISTS indicator_cohorts_mv TO indicator_cohorts AS
SELECT
    (arrayJoin([('street', street_code), ('community', community_code), ('department', indicator_department), ('category', category)]) AS grouping).1 AS dim,
    street_code,
    grouping.2 AS key,
    indicator_cohort_day AS cohort_day,
    indicator_counts[1] AS accepted,
    indicator_counts[2] AS due,
    indicator_counts[3] AS closed,
    indicator_counts[4] AS closed_on_time,
    indicator_counts[5] AS verified,
    indicator_counts[6] AS reworked,
    indicator_counts[7] AS postponed,
    indicator_counts[8] AS supervised,
    indicator_counts[9] AS overdue_open,
    indicator_counts[10] AS timed_closed,
    indicator_counts[11] AS working_ms,
    indicator_counts[12] AS rated,
    indicator_counts[13] AS rating_sum,
    indicator_counts[14] AS reports,
    indicator_counts[15] AS duplicates
FROM clue_events
ARRAY JOIN indicator_effective_ms, indicator_cohort_day, indicator_department, indicator_counts;

-- Backfill from the facts stored before this migration (run it with the sinks stopped, as
-- `gridclue-sink migrate` or at the start of a sink, before it consumes; a no-op on an empty
-- database, and skipped when the delta tables already hold rows). It writes, for each stored
-- fact, the rows the sink writes with a fact (see sink/src/indicator_deltas.rs): each clue's
-- facts in seq order, its state after each prefix of them (f: the facts; n_*: running counts
-- of the kinds of facts the indicators read; deadlines: the deadlines set, in order), and for
-- fact k the state after k-1 with sign -1 and after k with +1, from the fact's time (t), plus
-- the deadline's rows and the closure's working time. Rows are not summed per fact here (the
-- sink sums them); the sums read are the same.
-- (`gridclue-sink rebuild-aggregates` runs sink/sql/indicator_rebuild.sql instead: this fold
-- with each clue's place taken from its report — a fact stored before its clue's report has no
-- place on its row, and this statement wrote -1 report in no street and no case for such a
-- clue —, in ranges of clue ids: this one statement over every clue needs more than 4 GB at
-- 1 M facts. The statements here cannot change: the migration's checksum is checked.)
INSERT INTO indicator_deltas
SELECT
    c.1 AS effective_ms,
    c.2 AS cohort_day,
    street_code,
    community_code,
    category,
    c.3 AS department,
    (c.4)[1] AS accepted,
    (c.4)[2] AS due,
    (c.4)[3] AS closed,
    (c.4)[4] AS closed_on_time,
    (c.4)[5] AS verified,
    (c.4)[6] AS reworked,
    (c.4)[7] AS postponed,
    (c.4)[8] AS supervised,
    (c.4)[9] AS overdue_open,
    (c.4)[10] AS timed_closed,
    (c.4)[11] AS working_ms,
    (c.4)[12] AS rated,
    (c.4)[13] AS rating_sum,
    (c.4)[14] AS reports,
    (c.4)[15] AS duplicates
FROM
(
    SELECT
        f[k].13 AS street_code,
        f[k].14 AS community_code,
        f[k].15 AS category,
        f[k].2 AS t,
        [
            (t, toUInt32(intDiv(f[k - 1].12 + 28800000, 86400000)), f[k - 1].6, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(-1), toInt64(-1) * toInt64(n_dup[k - 1] > 0)], toUInt8(f[k - 1].5 = 1)),
            (t, cday, f[k - 1].6, [toInt64(-1) * toInt64(1), toInt64(-1) * toInt64((n_closed[k - 1] > 0) OR (deadlines[n_dl[k - 1]] > 0 AND deadlines[n_dl[k - 1]] <= t)), toInt64(-1) * toInt64((n_closed[k - 1] > 0)), toInt64(-1) * toInt64((n_closed[k - 1] > 0) AND (deadlines[n_dl[k - 1]] = 0 OR closed_at <= deadlines[n_dl[k - 1]])), toInt64(-1) * toInt64(n_ver[k - 1] > 0), toInt64(-1) * toInt64(n_rew[k - 1] > 0), toInt64(-1) * toInt64(n_post[k - 1] > 0), toInt64(-1) * toInt64(n_sup[k - 1] > 0), toInt64(-1) * toInt64(NOT (n_closed[k - 1] > 0) AND deadlines[n_dl[k - 1]] > 0 AND deadlines[n_dl[k - 1]] < t), toInt64(0), toInt64(0), toInt64(-1) * toInt64(n_rated[k - 1] > 0 AND given_rating > 0), toInt64(-1) * toInt64(if(n_rated[k - 1] > 0, given_rating, 0)), toInt64(0), toInt64(0)], toUInt8((f[k - 1].5 = 1 AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')))),
            (deadlines[n_dl[k - 1]], cday, f[k - 1].6, [toInt64(0), toInt64(-1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((f[k - 1].5 = 1 AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k - 1] > 0) AND deadlines[n_dl[k - 1]] > t)),
            (deadlines[n_dl[k - 1]] + 1, cday, f[k - 1].6, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(-1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((f[k - 1].5 = 1 AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k - 1] > 0) AND deadlines[n_dl[k - 1]] > 0 AND deadlines[n_dl[k - 1]] >= t)),
            (t, toUInt32(intDiv(f[k].12 + 28800000, 86400000)), f[k].6, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(1), toInt64(1) * toInt64(n_dup[k] > 0)], toUInt8(f[k].5 = 1)),
            (t, cday, f[k].6, [toInt64(1) * toInt64(1), toInt64(1) * toInt64((n_closed[k] > 0) OR (deadlines[n_dl[k]] > 0 AND deadlines[n_dl[k]] <= t)), toInt64(1) * toInt64((n_closed[k] > 0)), toInt64(1) * toInt64((n_closed[k] > 0) AND (deadlines[n_dl[k]] = 0 OR closed_at <= deadlines[n_dl[k]])), toInt64(1) * toInt64(n_ver[k] > 0), toInt64(1) * toInt64(n_rew[k] > 0), toInt64(1) * toInt64(n_post[k] > 0), toInt64(1) * toInt64(n_sup[k] > 0), toInt64(1) * toInt64(NOT (n_closed[k] > 0) AND deadlines[n_dl[k]] > 0 AND deadlines[n_dl[k]] < t), toInt64(0), toInt64(0), toInt64(1) * toInt64(n_rated[k] > 0 AND given_rating > 0), toInt64(1) * toInt64(if(n_rated[k] > 0, given_rating, 0)), toInt64(0), toInt64(0)], toUInt8((f[k].5 = 1 AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')))),
            (deadlines[n_dl[k]], cday, f[k].6, [toInt64(0), toInt64(1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((f[k].5 = 1 AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k] > 0) AND deadlines[n_dl[k]] > t)),
            (deadlines[n_dl[k]] + 1, cday, f[k].6, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((f[k].5 = 1 AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k] > 0) AND deadlines[n_dl[k]] > 0 AND deadlines[n_dl[k]] >= t)),
            (t, cday, f[k].6, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(f[k].10), toInt64(f[k].9), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8(f[k].3 = 'verified' AND (f[k].5 = 1 AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND (n_closed[k] > 0) AND NOT ((f[k - 1].5 = 1 AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND (n_closed[k - 1] > 0))))
        ] AS candidates
    FROM
    (
        SELECT
            clue_id,
            arraySort(x -> x.1, groupArray((seq, occurred_at_ms, fact_type, status,
                toUInt8(placement = 'inside' AND inside = 1), department, deadline_ms,
                toUInt8(isNotNull(duplicate_of)), ifNull(working_ms, 0), toUInt64(isNotNull(working_ms)),
                rating, reported_at_ms, street_code, community_code, category))) AS f,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'merged' OR (x.3 = 'reported' AND x.8 = 1)), f)) AS n_dup,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'accepted'), f)) AS n_acc,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'verified'), f)) AS n_closed,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 IN ('verified', 'verify_failed')), f)) AS n_ver,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'verify_failed'), f)) AS n_rew,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'postponed'), f)) AS n_post,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'supervised'), f)) AS n_sup,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 = 'rated'), f)) AS n_rated,
            arrayCumSum(arrayMap(x -> toUInt32(x.3 IN ('reported', 'accepted', 'postponed') AND x.7 > 0), f)) AS n_dl,
            arrayMap(x -> x.7, arrayFilter(x -> x.3 IN ('reported', 'accepted', 'postponed') AND x.7 > 0, f)) AS deadlines,
            arrayMap(x -> x.2, arrayFilter(x -> x.3 = 'accepted', f))[1] AS accepted_at,
            arrayMap(x -> x.2, arrayFilter(x -> x.3 = 'verified', f))[1] AS closed_at,
            arrayMap(x -> x.11, arrayFilter(x -> x.3 = 'rated', f))[1] AS given_rating,
            toUInt32(intDiv(accepted_at + 28800000, 86400000)) AS cday
        FROM clue_events FINAL
        WHERE (SELECT count() FROM indicator_deltas) = 0
        GROUP BY clue_id
    )
    ARRAY JOIN arrayEnumerate(f) AS k
)
ARRAY JOIN candidates AS c
WHERE c.5 = 1 AND arrayExists(v -> v != 0, c.4);

INSERT INTO indicator_days
SELECT
    (arrayJoin([('street', street_code), ('community', community_code), ('department', department), ('category', category)]) AS grouping).1 AS dim,
    street_code,
    grouping.2 AS key,
    cohort_day,
    toUInt32(intDiv(effective_ms, 86400000)) AS effective_day,
    accepted,
    due,
    closed,
    closed_on_time,
    verified,
    reworked,
    postponed,
    supervised,
    overdue_open,
    timed_closed,
    working_ms,
    rated,
    rating_sum,
    reports,
    duplicates
FROM indicator_deltas
WHERE (SELECT count() FROM indicator_days) = 0;

INSERT INTO indicator_cohorts
SELECT
    (arrayJoin([('street', street_code), ('community', community_code), ('department', department), ('category', category)]) AS grouping).1 AS dim,
    street_code,
    grouping.2 AS key,
    cohort_day,
    accepted,
    due,
    closed,
    closed_on_time,
    verified,
    reworked,
    postponed,
    supervised,
    overdue_open,
    timed_closed,
    working_ms,
    rated,
    rating_sum,
    reports,
    duplicates
FROM indicator_deltas
WHERE (SELECT count() FROM indicator_cohorts) = 0;
