//! `GET /v1/work`: the work queues. For the token's scope, the clues waiting for its next
//! action, oldest report first, a page at a time.
//!
//! | queue | waiting for | clues (status) | who reads it |
//! |---|---|---|---|
//! | `accept` | 受理: accept, reject or merge | `reported` | street, district |
//! | `dispatch` | 派遣 (also after a 退回) | `accepted` | street, district |
//! | `handle` | 处置: start, handle or return | `dispatched`, `in_progress` | department, district |
//! | `verify` | 核查: verify_ok or verify_fail | `handled` | street, district |
//! | `postpone` | 延期审批: approve or deny | a postponement request waits | district |
//!
//! A street token reads its street's clues; a department token the clues dispatched to it now;
//! the district every clue (narrowed with `?street=` and `?department=`). Only clues placed
//! inside the district are queued (a point outside it never enters the loop).
//!
//! Order and pages: each queue is ordered by the report's time, then the clue id — an order that
//! never changes for a clue — so a cursor (the last item's place in that order) pages stably while
//! clues move in and out: an item is neither repeated nor skipped unless it left the queue or
//! entered it behind the cursor. The answer is read from the latest state of every clue
//! (`clues FINAL`) at request time, so it is as fresh as the projection (no cache).

use std::collections::BTreeMap;

use gridclue_core::calendar::Calendar;
use gridclue_core::codes::{
    empty_as_none, or_empty, ActorScope, CategoryCode, CommunityCode, DepartmentCode, GridCode,
    StreetCode,
};
use gridclue_core::light::{clue_light, Light};
use gridclue_core::tokens::{TokenKind, TokenRecord};
use gridclue_core::{ClueId, Status};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::reference::Reference;

/// Items per queue when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    Accept,
    Dispatch,
    Handle,
    Verify,
    Postpone,
}

impl Queue {
    pub const ALL: [Queue; 5] = [
        Queue::Accept,
        Queue::Dispatch,
        Queue::Handle,
        Queue::Verify,
        Queue::Postpone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Accept => "accept",
            Queue::Dispatch => "dispatch",
            Queue::Handle => "handle",
            Queue::Verify => "verify",
            Queue::Postpone => "postpone",
        }
    }

    pub fn parse(s: &str) -> Option<Queue> {
        Self::ALL.into_iter().find(|q| q.as_str() == s)
    }

    /// Why a token that does not read this queue is refused (a 403 detail).
    fn not_yours(self) -> &'static str {
        match self {
            Queue::Accept => "read the accept queue (a street office's work)",
            Queue::Dispatch => "read the dispatch queue (a street office's work)",
            Queue::Handle => "read the handle queue (a department's work)",
            Queue::Verify => "read the verify queue (a street office's work)",
            Queue::Postpone => "read the postpone queue (the district's work)",
        }
    }
}

/// Whose work a token reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkScope {
    District,
    Street { street_code: StreetCode },
    Department { department: DepartmentCode },
}

impl WorkScope {
    pub fn of(token: &TokenRecord) -> Result<Self, ApiError> {
        match (token.kind, token.scope.clone()) {
            (TokenKind::District, _) => Ok(WorkScope::District),
            (TokenKind::Street, Some(ActorScope::Street(street_code))) => {
                Ok(WorkScope::Street { street_code })
            }
            (TokenKind::Department, Some(ActorScope::Department(department))) => {
                Ok(WorkScope::Department { department })
            }
            (TokenKind::Street | TokenKind::Department, _) => Err(ApiError::Forbidden(
                "read work queues (token without a scope)",
            )),
            (TokenKind::Reporter, _) => {
                Err(ApiError::Forbidden("read work queues (reporter token)"))
            }
        }
    }

    /// The queues of this scope's next actions, in answer order.
    pub fn queues(&self) -> &'static [Queue] {
        match self {
            WorkScope::District => &Queue::ALL,
            WorkScope::Street { .. } => &[Queue::Accept, Queue::Dispatch, Queue::Verify],
            WorkScope::Department { .. } => &[Queue::Handle],
        }
    }
}

/// A place in a queue's order: after the item reported at `reported_at_ms` with id `clue_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub queue: Queue,
    pub reported_at_ms: u64,
    pub clue_id: String,
}

impl Cursor {
    /// `<queue>:<reported_at_ms>:<clue id>`; clients pass it back unchanged.
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            self.queue.as_str(),
            self.reported_at_ms,
            self.clue_id
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let queue = Queue::parse(parts.next()?)?;
        let reported_at_ms = parts.next()?.parse().ok()?;
        let clue_id: ClueId = parts.next()?.parse().ok()?;
        Some(Self {
            queue,
            reported_at_ms,
            clue_id: clue_id.to_string(),
        })
    }
}

/// The query parameters of `GET /v1/work`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub queue: Option<Queue>,
    pub street: Option<StreetCode>,
    pub department: Option<DepartmentCode>,
    pub limit: Option<u32>,
    pub cursor: Option<Cursor>,
}

impl Params {
    /// Parses `queue`, `street`, `department`, `limit` and `cursor`; anything else, a repeated
    /// parameter or a malformed value is a 400 naming the parameter.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut p = Params::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(name, "given more than once"));
            }
            seen.push(name);
            let bad = |detail: String| ApiError::invalid_parameter(name, detail);
            match name.as_str() {
                "queue" => {
                    p.queue = Some(Queue::parse(value).ok_or_else(|| {
                        bad(format!(
                            "{value:?} is not a queue (accept, dispatch, handle, verify, postpone)"
                        ))
                    })?)
                }
                "street" => p.street = Some(crate::params::street_code(name, value)?),
                "department" => {
                    p.department = Some(DepartmentCode::parse(value).map_err(|_| {
                        bad("must be a department code (lowercase letters and '_')".into())
                    })?)
                }
                "limit" => {
                    let limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad(format!("must be an integer from 1 to {MAX_LIMIT}")))?;
                    p.limit = Some(limit);
                }
                "cursor" => {
                    p.cursor = Some(Cursor::decode(value).ok_or_else(|| {
                        bad(
                            "is not a cursor this API gave out (pass next_cursor back unchanged)"
                                .into(),
                        )
                    })?)
                }
                _ => {
                    return Err(bad(
                        "unknown (known: queue, street, department, limit, cursor)".into(),
                    ))
                }
            }
        }
        Ok(p)
    }
}

/// What to read: the queues, the place and department filters (`None` = any), how many items
/// per queue, and where a page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub queues: Vec<Queue>,
    pub street: Option<StreetCode>,
    /// The department whose work is read (`None`: any).
    pub department: Option<DepartmentCode>,
    pub limit: u32,
    pub after: Option<Cursor>,
}

/// Checks the parameters against the scope: a queue, street or department outside it is a 403.
pub fn plan(scope: &WorkScope, params: Params) -> Result<Plan, ApiError> {
    let queue = match (params.queue, &params.cursor) {
        (Some(q), Some(c)) if q != c.queue => {
            return Err(ApiError::invalid_parameter(
                "cursor",
                format!(
                    "belongs to the {} queue, not {}",
                    c.queue.as_str(),
                    q.as_str()
                ),
            ))
        }
        (Some(q), _) => Some(q),
        (None, Some(c)) => Some(c.queue),
        (None, None) => None,
    };
    let queues = match queue {
        Some(q) if !scope.queues().contains(&q) => return Err(ApiError::Forbidden(q.not_yours())),
        Some(q) => vec![q],
        None => scope.queues().to_vec(),
    };
    let street = match (scope, params.street) {
        (WorkScope::Street { street_code }, Some(s)) if s != *street_code => {
            return Err(ApiError::Forbidden("read another street's work"))
        }
        (WorkScope::Street { street_code }, _) => Some(*street_code),
        (_, s) => s,
    };
    let department = match (scope, params.department) {
        (WorkScope::Department { department }, Some(d)) if &d != department => {
            return Err(ApiError::Forbidden("read another department's work"))
        }
        (WorkScope::Department { department }, _) => Some(department.clone()),
        (_, d) => d,
    };
    Ok(Plan {
        queues,
        street,
        department,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
        after: params.cursor,
    })
}

/// The clues in the requested queues, one row per (queue, clue): a clue whose postponement
/// request waits is in the postpone queue as well as its status's queue. The place filter is
/// applied before `FINAL` has merged a clue's versions (a clue's street never changes once its
/// report is known), everything else after it. The department a clue is at is the one it is
/// dispatched to now, else the one it was routed (or last dispatched) to.
const QUEUED_SQL: &str = "\
SELECT arrayJoin(arrayFilter(q -> has(?, q), [
           multiIf(status = 'reported', 'accept', status = 'accepted', 'dispatch',
                   status IN ('dispatched', 'in_progress'), 'handle',
                   status = 'handled', 'verify', ''),
           if(postpone_pending = 1 AND status IN ('reported', 'accepted', 'dispatched', 'in_progress', 'handled'), 'postpone', '')
       ])) AS queue,
       id, version, status, channel, grid_code, community_code, street_code, category, at_department,
       reported_at_ms, accepted_at_ms, deadline_ms, yellow_at_ms, updated_at_ms,
       rework_count, returned_count, postpone_count, postpone_pending, postpone_requested_hours,
       supervise_count
FROM
(
    SELECT toString(clue_id) AS id, version, status, channel, grid_code, community_code, street_code, category,
           if(assigned_department != '', assigned_department, department) AS at_department,
           reported_at_ms, accepted_at_ms, deadline_ms, yellow_at_ms, updated_at_ms,
           rework_count, returned_count, postpone_count, postpone_pending,
           postpone_requested_hours, supervise_count
    FROM clues FINAL
    WHERE placement = 'inside' AND (? = '' OR street_code = ?)
)
WHERE ? = '' OR at_department = ?";

fn items_sql() -> String {
    format!(
        "SELECT * FROM ({QUEUED_SQL}) \
         WHERE reported_at_ms > ? OR (reported_at_ms = ? AND id > ?) \
         ORDER BY queue, reported_at_ms, id \
         LIMIT ? BY queue"
    )
}

fn counts_sql() -> String {
    format!("SELECT queue, count() AS clues FROM ({QUEUED_SQL}) GROUP BY queue")
}

/// One queued clue as ClickHouse returns it. Its codes are read leniently (see
/// [`empty_as_none::lenient`]): a malformed one is shown as `""`, not an error of the queue.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct WorkRow {
    pub queue: String,
    pub id: String,
    pub version: u32,
    pub status: String,
    pub channel: String,
    #[serde(with = "empty_as_none::lenient")]
    pub grid_code: Option<GridCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub community_code: Option<CommunityCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub street_code: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub category: Option<CategoryCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub at_department: Option<DepartmentCode>,
    pub reported_at_ms: u64,
    pub accepted_at_ms: u64,
    pub deadline_ms: u64,
    pub yellow_at_ms: u64,
    pub updated_at_ms: u64,
    pub rework_count: u16,
    pub returned_count: u16,
    pub postpone_count: u16,
    pub postpone_pending: u8,
    pub postpone_requested_hours: u32,
    pub supervise_count: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct QueueCount {
    queue: String,
    clues: u64,
}

/// What the queries found: up to `limit + 1` rows per queue (the extra one says another page
/// follows) and each queue's length.
pub struct Found {
    pub rows: Vec<WorkRow>,
    pub totals: BTreeMap<String, u64>,
}

/// Runs the two queries of a plan, every value bound (never formatted into the SQL).
pub async fn query(client: &clickhouse::Client, plan: &Plan) -> clickhouse::error::Result<Found> {
    let names: Vec<&str> = plan.queues.iter().map(|q| q.as_str()).collect();
    let (after_ms, after_id) = plan
        .after
        .as_ref()
        .map(|c| (c.reported_at_ms, c.clue_id.as_str()))
        .unwrap_or((0, ""));
    // "" = any department, as the SQL reads it.
    let department = plan.department.as_ref().map_or("", DepartmentCode::as_str);
    let rows = client
        .query(&items_sql())
        .bind(&names)
        .bind(or_empty(&plan.street))
        .bind(or_empty(&plan.street))
        .bind(department)
        .bind(department)
        .bind(after_ms)
        .bind(after_ms)
        .bind(after_id)
        .bind(plan.limit + 1)
        .fetch_all::<WorkRow>()
        .await?;
    let counts = client
        .query(&counts_sql())
        .bind(&names)
        .bind(or_empty(&plan.street))
        .bind(or_empty(&plan.street))
        .bind(department)
        .bind(department)
        .fetch_all::<QueueCount>()
        .await?;
    Ok(Found {
        rows,
        totals: counts.into_iter().map(|c| (c.queue, c.clues)).collect(),
    })
}

/// One clue in a queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkItem {
    pub clue_id: String,
    /// The seq of the clue's last fact: the state this item shows (a client that just acted on
    /// the clue knows whether the queue has caught up with its action).
    pub seq: u32,
    pub status: String,
    /// How the report came in: `api`, `web`, `open311`, or `import` (history from an older
    /// system).
    pub channel: String,
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    pub category_name: Option<String>,
    pub category_name_en: Option<String>,
    #[serde(with = "empty_as_none")]
    pub street_code: Option<StreetCode>,
    pub street_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub community_code: Option<CommunityCode>,
    pub community_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub grid_code: Option<GridCode>,
    /// The department the clue is dispatched to now, else the one it was routed to.
    #[serde(with = "empty_as_none")]
    pub department: Option<DepartmentCode>,
    pub department_name: Option<String>,
    pub reported_at: String,
    pub reported_at_ms: u64,
    /// Absent before acceptance (the time limit starts there).
    pub accepted_at_ms: Option<u64>,
    pub deadline: Option<String>,
    pub deadline_ms: Option<u64>,
    /// Working hours left until the deadline (negative: working hours overdue), one decimal.
    pub remaining_working_hours: Option<f64>,
    pub light: Option<Light>,
    /// Times the handling was not accepted at verification (返工).
    pub rework_count: u16,
    /// Times a department returned it (退回).
    pub returned_count: u16,
    /// Approved postponements.
    pub postpone_count: u16,
    /// A postponement request waits for the district, for this many working hours.
    pub postpone_requested_hours: Option<u32>,
    /// Times the district supervised it (督办).
    pub supervise_count: u16,
    pub updated_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueuePage {
    pub queue: Queue,
    /// Every clue in the queue (in scope), not only this page.
    pub total: u64,
    pub items: Vec<WorkItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Work {
    pub scope: WorkScope,
    pub queues: Vec<QueuePage>,
    /// The instant lights and remaining hours are computed for.
    pub as_of_ms: u64,
}

/// Working time left until `deadline_ms` at `now_ms`, negative once it has passed.
pub fn remaining_working_ms(calendar: &Calendar, now_ms: u64, deadline_ms: u64) -> i64 {
    if now_ms <= deadline_ms {
        calendar.working_ms_between(now_ms, deadline_ms) as i64
    } else {
        -(calendar.working_ms_between(deadline_ms, now_ms) as i64)
    }
}

fn item(row: WorkRow, reference: &Reference, calendar: &Calendar, now_ms: u64) -> WorkItem {
    let status: Option<Status> = row.status.parse().ok();
    let running = row.deadline_ms > 0 && status.is_some_and(|s| !s.is_terminal());
    let light = status.and_then(|s| {
        clue_light(
            s,
            now_ms,
            row.accepted_at_ms,
            row.yellow_at_ms,
            row.deadline_ms,
        )
    });
    let remaining = running.then(|| {
        let ms = remaining_working_ms(calendar, now_ms, row.deadline_ms);
        (ms as f64 / 360_000.0).round() / 10.0
    });
    let category = row.category.as_ref().and_then(|c| reference.category(c));
    let department = row
        .at_department
        .as_ref()
        .and_then(|c| reference.department(c));
    WorkItem {
        category_name: category.map(|c| c.name_zh.clone()),
        category_name_en: category.map(|c| c.name_en.clone()),
        street_name: row
            .street_code
            .as_ref()
            .and_then(|c| reference.street_name(c))
            .map(str::to_owned),
        community_name: row
            .community_code
            .as_ref()
            .and_then(|c| reference.community_name(c))
            .map(str::to_owned),
        department_name: department.map(|d| d.name_zh.clone()),
        reported_at: china_time(row.reported_at_ms),
        accepted_at_ms: (row.accepted_at_ms > 0).then_some(row.accepted_at_ms),
        deadline: running.then(|| china_time(row.deadline_ms)),
        deadline_ms: running.then_some(row.deadline_ms),
        remaining_working_hours: remaining,
        light,
        postpone_requested_hours: (row.postpone_pending == 1)
            .then_some(row.postpone_requested_hours),
        clue_id: row.id,
        seq: row.version,
        status: row.status,
        channel: row.channel,
        category: row.category,
        street_code: row.street_code,
        community_code: row.community_code,
        grid_code: row.grid_code,
        department: row.at_department,
        reported_at_ms: row.reported_at_ms,
        rework_count: row.rework_count,
        returned_count: row.returned_count,
        postpone_count: row.postpone_count,
        supervise_count: row.supervise_count,
        updated_at_ms: row.updated_at_ms,
    }
}

/// Groups the rows into one page per planned queue (every planned queue appears, empty or not).
pub fn assemble(
    scope: WorkScope,
    plan: &Plan,
    found: Found,
    reference: &Reference,
    calendar: &Calendar,
    now_ms: u64,
) -> Work {
    let mut by_queue: BTreeMap<String, Vec<WorkRow>> = BTreeMap::new();
    for row in found.rows {
        by_queue.entry(row.queue.clone()).or_default().push(row);
    }
    let queues = plan
        .queues
        .iter()
        .map(|&queue| {
            let mut rows = by_queue.remove(queue.as_str()).unwrap_or_default();
            let more = rows.len() > plan.limit as usize;
            rows.truncate(plan.limit as usize);
            let next_cursor = rows.last().filter(|_| more).map(|last| {
                Cursor {
                    queue,
                    reported_at_ms: last.reported_at_ms,
                    clue_id: last.id.clone(),
                }
                .encode()
            });
            QueuePage {
                queue,
                total: found.totals.get(queue.as_str()).copied().unwrap_or(0),
                items: rows
                    .into_iter()
                    .map(|r| item(r, reference, calendar, now_ms))
                    .collect(),
                next_cursor,
            }
        })
        .collect();
    Work {
        scope,
        queues,
        as_of_ms: now_ms,
    }
}

/// Epoch milliseconds as RFC 3339 in China Standard Time (the district's clock).
pub fn china_time(ms: u64) -> String {
    use chrono::TimeZone;
    let tz = chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset");
    match tz.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn err(r: Result<impl std::fmt::Debug, ApiError>) -> (u16, String) {
        let e = r.unwrap_err();
        (e.status().as_u16(), e.to_string())
    }

    const ID: &str = "0b5f3a3e-63a4-4a53-9d2a-0c2d0f1e2a3b";

    #[test]
    fn parameters_are_parsed_and_bad_ones_named() {
        let p = Params::parse(&pairs(&[
            ("queue", "verify"),
            ("street", "310199001"),
            ("department", "water_affairs"),
            ("limit", "500"),
        ]))
        .unwrap();
        assert_eq!(p.queue, Some(Queue::Verify));
        assert_eq!(p.department.unwrap(), "water_affairs");
        assert_eq!(p.limit, Some(500));
        for (q, name) in [
            (vec![("queue", "sweep")], "queue"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "501")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("street", "31019900")], "street"),
            (vec![("department", "Water")], "department"),
            (vec![("department", "")], "department"),
            (vec![("department", "fire-rescue")], "department"),
            (vec![("cursor", "accept:12:not-a-uuid")], "cursor"),
            (vec![("cursor", "later")], "cursor"),
            (vec![("page", "2")], "page"),
            (vec![("limit", "5"), ("limit", "6")], "limit"),
        ] {
            let (status, detail) = err(Params::parse(&pairs(&q)));
            assert_eq!(status, 400, "{q:?}");
            assert!(
                detail.starts_with(&format!("query parameter `{name}`")),
                "{detail}"
            );
        }
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            queue: Queue::Handle,
            reported_at_ms: 1_764_000_000_123,
            clue_id: ID.into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let upper = format!("handle:5:{}", ID.to_uppercase());
        assert_eq!(Cursor::decode(&upper).unwrap().clue_id, ID);
    }

    fn street_code(code: &str) -> StreetCode {
        StreetCode::parse(code).unwrap()
    }

    #[test]
    fn scopes_read_their_own_queues_places_and_departments() {
        let street = WorkScope::Street {
            street_code: street_code("310199001"),
        };
        let all = plan(&street, Params::default()).unwrap();
        assert_eq!(
            all.queues,
            vec![Queue::Accept, Queue::Dispatch, Queue::Verify]
        );
        assert_eq!(
            (all.street, all.department, all.limit),
            (Some(street_code("310199001")), None, DEFAULT_LIMIT)
        );
        let handle = Params {
            queue: Some(Queue::Handle),
            ..Params::default()
        };
        assert_eq!(err(plan(&street, handle.clone())).0, 403);
        let other = Params {
            street: Some(street_code("310199002")),
            ..Params::default()
        };
        assert_eq!(err(plan(&street, other.clone())).0, 403);
        let own = Params {
            street: Some(street_code("310199001")),
            ..Params::default()
        };
        assert!(plan(&street, own).is_ok());

        let department = WorkScope::Department {
            department: "water_affairs".parse().unwrap(),
        };
        let p = plan(&department, handle.clone()).unwrap();
        assert_eq!(p.queues, [Queue::Handle]);
        assert_eq!(p.department.unwrap(), "water_affairs");
        let accept = Params {
            queue: Some(Queue::Accept),
            ..Params::default()
        };
        assert_eq!(err(plan(&department, accept)).0, 403);
        let elsewhere = Params {
            department: Some("fire_rescue".parse().unwrap()),
            ..Params::default()
        };
        assert_eq!(err(plan(&department, elsewhere)).0, 403);
        // A department may narrow to a street.
        assert_eq!(
            plan(&department, other.clone()).unwrap().street,
            Some(street_code("310199002"))
        );

        let district = plan(&WorkScope::District, other).unwrap();
        assert_eq!(district.queues, Queue::ALL.to_vec());
        assert_eq!(district.street, Some(street_code("310199002")));
    }

    #[test]
    fn a_cursor_names_its_queue() {
        let cursor = Cursor {
            queue: Queue::Dispatch,
            reported_at_ms: 7,
            clue_id: ID.into(),
        };
        let p = plan(
            &WorkScope::District,
            Params {
                cursor: Some(cursor.clone()),
                ..Params::default()
            },
        )
        .unwrap();
        assert_eq!(p.queues, vec![Queue::Dispatch]);
        assert_eq!(p.after, Some(cursor.clone()));
        let (status, detail) = err(plan(
            &WorkScope::District,
            Params {
                queue: Some(Queue::Verify),
                cursor: Some(cursor),
                ..Params::default()
            },
        ));
        assert_eq!(status, 400);
        assert!(detail.contains("`cursor`"), "{detail}");
    }

    #[test]
    fn times_are_china_standard_time() {
        assert_eq!(china_time(1_764_000_000_000), "2025-11-25T00:00:00+08:00");
    }
}
