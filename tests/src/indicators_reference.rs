//! The definition of the governance indicators' counts computed straight from the facts (one
//! row per clue with its state as of the instant, then counted per group): the way
//! dashboard-api computed them before the delta projection, kept as the reference its fast path
//! is tested against.

use gridclue_core::codes::or_empty;
use gridclue_dashboard_api::indicators::{self, By, Counts, Params, Plan};

/// The definition of the indicators' counts read from the facts: one row per clue with its
/// state as of `as_of` (only facts at or before it), then counted per group. Bound in order:
/// as_of ×2, from, to (reports), from, to (cohort), as_of, street ×2.
pub fn reference_sql(by: By) -> String {
    let key = match by {
        By::Street => "any(street_code)",
        By::Community => "any(community_code)",
        By::Department => "argMax(department, seq)",
        By::Category => "any(category)",
    };
    format!(
        "SELECT key, \
       countIf(in_cohort) AS accepted, \
       countIf(in_cohort AND (is_closed OR (deadline > 0 AND deadline <= ?))) AS due, \
       countIf(in_cohort AND is_closed) AS closed, \
       countIf(in_cohort AND is_closed AND (deadline = 0 OR closed_at <= deadline)) AS closed_on_time, \
       countIf(in_cohort AND verifications > 0) AS verified, \
       countIf(in_cohort AND reworks > 0) AS reworked, \
       countIf(in_cohort AND postponements > 0) AS postponed, \
       countIf(in_cohort AND supervisions > 0) AS supervised, \
       countIf(in_cohort AND NOT is_closed AND deadline > 0 AND deadline < ?) AS overdue_open, \
       countIf(in_cohort AND is_closed AND timed) AS timed_closed, \
       sumIf(close_working_ms, in_cohort AND is_closed AND timed) AS working_ms, \
       countIf(in_cohort AND case_rating > 0) AS rated, \
       sumIf(toUInt64(case_rating), in_cohort AND case_rating > 0) AS rating_sum, \
       countIf(in_reports) AS reports, \
       countIf(in_reports AND duplicate) AS duplicates \
FROM ( \
    SELECT clue_id, {key} AS key, \
           max(inside) AS placed_inside, \
           countIf(fact_type = 'reported') > 0 AS has_report, \
           minIf(occurred_at_ms, fact_type = 'reported') AS reported_at, \
           countIf(fact_type = 'merged' OR (fact_type = 'reported' AND isNotNull(duplicate_of))) > 0 AS duplicate, \
           countIf(fact_type = 'accepted') > 0 AS has_accept, \
           minIf(occurred_at_ms, fact_type = 'accepted') AS accepted_at, \
           countIf(fact_type IN ('rejected', 'merged', 'withdrawn')) > 0 AS left_loop, \
           argMaxIf(deadline_ms, seq, fact_type IN ('reported', 'accepted', 'postponed') AND deadline_ms > 0) AS deadline, \
           countIf(fact_type = 'verified') > 0 AS is_closed, \
           minIf(occurred_at_ms, fact_type = 'verified') AS closed_at, \
           countIf(fact_type = 'verified' AND isNotNull(working_ms)) > 0 AS timed, \
           maxIf(ifNull(working_ms, 0), fact_type = 'verified') AS close_working_ms, \
           countIf(fact_type IN ('verified', 'verify_failed')) AS verifications, \
           countIf(fact_type = 'verify_failed') AS reworks, \
           countIf(fact_type = 'postponed') AS postponements, \
           countIf(fact_type = 'supervised') AS supervisions, \
           maxIf(rating, fact_type = 'rated') AS case_rating, \
           has_report AND reported_at >= ? AND reported_at < ? AS in_reports, \
           has_accept AND NOT left_loop AND accepted_at >= ? AND accepted_at < ? AS in_cohort \
    FROM clue_events \
    WHERE occurred_at_ms <= ? AND (? = '' OR street_code = ?) \
      AND fact_type IN ('reported', 'merged', 'accepted', 'rejected', 'withdrawn', \
          'dispatched', 'verified', 'verify_failed', 'postponed', 'supervised', 'rated') \
    GROUP BY clue_id \
    HAVING placed_inside = 1 AND (in_cohort OR in_reports) \
) \
GROUP BY key \
ORDER BY key"
    )
}

pub async fn reference(client: &clickhouse::Client, plan: &Plan) -> Vec<Counts> {
    let street = or_empty(&plan.street);
    client
        .query(&reference_sql(plan.params.by))
        .bind(plan.as_of_ms)
        .bind(plan.as_of_ms)
        .bind(plan.from_ms)
        .bind(plan.to_ms)
        .bind(plan.from_ms)
        .bind(plan.to_ms)
        .bind(plan.as_of_ms)
        .bind(street)
        .bind(street)
        .fetch_all()
        .await
        .expect("reference query")
}

/// Whether the production query (the delta projection) gives the reference's counts for the
/// whole history — every cohort from 2000 to 2100 — as of each of `instants`, by street and by
/// department; the mismatching instant when not.
pub async fn whole_history_matches(
    client: &clickhouse::Client,
    instants: &[u64],
) -> Result<(), String> {
    let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a date");
    for &as_of_ms in instants {
        for by in [By::Street, By::Department] {
            let params = Params {
                from: day("2000-01-01"),
                to: day("2100-01-01"),
                as_of_ms: Some(as_of_ms),
                by,
                street: None,
            };
            let plan = Plan {
                from_ms: indicators::china_midnight_ms(params.from),
                to_ms: indicators::china_midnight_ms(params.to),
                as_of_ms,
                street: None,
                params,
            };
            let want = reference(client, &plan).await;
            let mut got = indicators::query(client, &plan)
                .await
                .map_err(|e| e.to_string())?;
            got.sort_by(|a, b| a.key.cmp(&b.key));
            if got != want {
                return Err(format!(
                    "as of {as_of_ms} by {by:?}: deltas {got:?}, facts {want:?}"
                ));
            }
        }
    }
    Ok(())
}
