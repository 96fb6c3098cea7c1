-- The indicators' delta projection recomputed from the stored facts: what
-- `gridclue-sink rebuild-aggregates` runs after emptying indicator_deltas, indicator_days and
-- indicator_cohorts (sink/src/aggregates.rs). The same fold as the backfill of migration 0011
-- (each clue's facts in seq order, the state after every prefix, for fact k the state after k-1
-- with sign -1 and after k with +1; see that migration and sink/src/indicator_deltas.rs), with
-- two differences:
-- - a clue's place (inside or not, street, community), category and report day are its report's
--   for every fact, as the definition reads them (they never change), and a fact's department,
--   when its row has none, is the report's: a fact the sink stored before its clue's report was
--   written with no place ('unknown', no street) and no department, and 0011 read each fact's
--   own row (it wrote -1 report in no street for such a clue and no case);
-- - the first statement runs once per range of clue ids (its condition "every clue id", the
--   `clue_id >= toUUID('00000000-…')` below, is rewritten to a range between two stored ids),
--   so one statement groups the facts of one range of clues only: the per-clue arrays of every
--   clue at once did not fit the server's memory at 1 M facts (about 6 KB of it per fact), and a
--   range of the primary key reads only its own rows; its rows are summed by instant, cohort
--   day and group, zero sums dropped (as the sink sums a fact's rows: 0011 wrote every state's
--   rows apart, five times the sink's rows at 1 M facts). The other two statements sum
--   indicator_deltas once every range is in.
-- 0011 itself cannot change (the checksum of an applied migration is checked), so databases
-- migrated across 0011 with such clues were backfilled the old way; a rebuild repairs them.
INSERT INTO indicator_deltas
SELECT
    c.1 AS effective_ms,
    c.2 AS cohort_day,
    street_code,
    community_code,
    category,
    c.3 AS department,
    sum((c.4)[1]) AS accepted,
    sum((c.4)[2]) AS due,
    sum((c.4)[3]) AS closed,
    sum((c.4)[4]) AS closed_on_time,
    sum((c.4)[5]) AS verified,
    sum((c.4)[6]) AS reworked,
    sum((c.4)[7]) AS postponed,
    sum((c.4)[8]) AS supervised,
    sum((c.4)[9]) AS overdue_open,
    sum((c.4)[10]) AS timed_closed,
    sum((c.4)[11]) AS working_ms,
    sum((c.4)[12]) AS rated,
    sum((c.4)[13]) AS rating_sum,
    sum((c.4)[14]) AS reports,
    sum((c.4)[15]) AS duplicates
FROM
(
    SELECT
        report.13 AS street_code,
        report.14 AS community_code,
        report.15 AS category,
        f[k].2 AS t,
        k > 1 AND report.5 = 1 AND report.1 <= f[k - 1].1 AS placed_before,
        report.5 = 1 AND report.1 <= f[k].1 AS placed_after,
        if(f[k - 1].6 = '', report.6, f[k - 1].6) AS department_before,
        if(f[k].6 = '', report.6, f[k].6) AS department_after,
        [
            (t, toUInt32(intDiv(report.12 + 28800000, 86400000)), department_before, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(-1), toInt64(-1) * toInt64(n_dup[k - 1] > 0)], toUInt8(placed_before)),
            (t, cday, department_before, [toInt64(-1) * toInt64(1), toInt64(-1) * toInt64((n_closed[k - 1] > 0) OR (deadlines[n_dl[k - 1]] > 0 AND deadlines[n_dl[k - 1]] <= t)), toInt64(-1) * toInt64((n_closed[k - 1] > 0)), toInt64(-1) * toInt64((n_closed[k - 1] > 0) AND (deadlines[n_dl[k - 1]] = 0 OR closed_at <= deadlines[n_dl[k - 1]])), toInt64(-1) * toInt64(n_ver[k - 1] > 0), toInt64(-1) * toInt64(n_rew[k - 1] > 0), toInt64(-1) * toInt64(n_post[k - 1] > 0), toInt64(-1) * toInt64(n_sup[k - 1] > 0), toInt64(-1) * toInt64(NOT (n_closed[k - 1] > 0) AND deadlines[n_dl[k - 1]] > 0 AND deadlines[n_dl[k - 1]] < t), toInt64(0), toInt64(0), toInt64(-1) * toInt64(n_rated[k - 1] > 0 AND given_rating > 0), toInt64(-1) * toInt64(if(n_rated[k - 1] > 0, given_rating, 0)), toInt64(0), toInt64(0)], toUInt8((placed_before AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')))),
            (deadlines[n_dl[k - 1]], cday, department_before, [toInt64(0), toInt64(-1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((placed_before AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k - 1] > 0) AND deadlines[n_dl[k - 1]] > t)),
            (deadlines[n_dl[k - 1]] + 1, cday, department_before, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(-1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((placed_before AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k - 1] > 0) AND deadlines[n_dl[k - 1]] > 0 AND deadlines[n_dl[k - 1]] >= t)),
            (t, toUInt32(intDiv(report.12 + 28800000, 86400000)), department_after, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(1), toInt64(1) * toInt64(n_dup[k] > 0)], toUInt8(placed_after)),
            (t, cday, department_after, [toInt64(1) * toInt64(1), toInt64(1) * toInt64((n_closed[k] > 0) OR (deadlines[n_dl[k]] > 0 AND deadlines[n_dl[k]] <= t)), toInt64(1) * toInt64((n_closed[k] > 0)), toInt64(1) * toInt64((n_closed[k] > 0) AND (deadlines[n_dl[k]] = 0 OR closed_at <= deadlines[n_dl[k]])), toInt64(1) * toInt64(n_ver[k] > 0), toInt64(1) * toInt64(n_rew[k] > 0), toInt64(1) * toInt64(n_post[k] > 0), toInt64(1) * toInt64(n_sup[k] > 0), toInt64(1) * toInt64(NOT (n_closed[k] > 0) AND deadlines[n_dl[k]] > 0 AND deadlines[n_dl[k]] < t), toInt64(0), toInt64(0), toInt64(1) * toInt64(n_rated[k] > 0 AND given_rating > 0), toInt64(1) * toInt64(if(n_rated[k] > 0, given_rating, 0)), toInt64(0), toInt64(0)], toUInt8((placed_after AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')))),
            (deadlines[n_dl[k]], cday, department_after, [toInt64(0), toInt64(1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((placed_after AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k] > 0) AND deadlines[n_dl[k]] > t)),
            (deadlines[n_dl[k]] + 1, cday, department_after, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(1), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8((placed_after AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND NOT (n_closed[k] > 0) AND deadlines[n_dl[k]] > 0 AND deadlines[n_dl[k]] >= t)),
            (t, cday, department_after, [toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(0), toInt64(f[k].10), toInt64(f[k].9), toInt64(0), toInt64(0), toInt64(0), toInt64(0)], toUInt8(f[k].3 = 'verified' AND (placed_after AND n_acc[k] > 0 AND f[k].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND (n_closed[k] > 0) AND NOT ((placed_before AND n_acc[k - 1] > 0 AND f[k - 1].4 NOT IN ('rejected', 'duplicate', 'withdrawn')) AND (n_closed[k - 1] > 0))))
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
            toUInt32(intDiv(accepted_at + 28800000, 86400000)) AS cday,
            arrayFilter(x -> x.3 = 'reported', f)[1] AS report
        FROM clue_events FINAL
        WHERE clue_id >= toUUID('00000000-0000-0000-0000-000000000000')
        GROUP BY clue_id
    )
    ARRAY JOIN arrayEnumerate(f) AS k
)
ARRAY JOIN candidates AS c
WHERE c.5 = 1 AND arrayExists(v -> v != 0, c.4)
GROUP BY effective_ms, cohort_day, street_code, community_code, category, department
HAVING accepted != 0 OR due != 0 OR closed != 0 OR closed_on_time != 0 OR verified != 0 OR reworked != 0 OR postponed != 0 OR supervised != 0 OR overdue_open != 0 OR timed_closed != 0 OR working_ms != 0 OR rated != 0 OR rating_sum != 0 OR reports != 0 OR duplicates != 0;

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
FROM indicator_deltas;

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
FROM indicator_deltas;
