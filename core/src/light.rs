//! The traffic light of a clue's deadline (红黄绿灯), one definition for every reader.
//!
//! - green: more than 20% of the time limit remains;
//! - yellow: 20% or less remains (from `yellow_at_ms` on);
//! - red: overdue, the deadline has passed (`deadline < now`, the same instant the processor
//!   emits its `overdue` fact and indicators count a case as overdue).
//!
//! The limit is working time, so "20% remains" is an instant the clue processor computes with
//! the working-time calendar when it sets a deadline (at acceptance and at each approved
//! postponement: 20% of the working time from acceptance to the current deadline) and stores
//! beside it. Only rows written before that existed lack it; for them [`yellow_at_fallback`]
//! takes 20% of the elapsed time instead.

use serde::{Deserialize, Serialize};

use crate::status::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    Green,
    Yellow,
    Red,
}

impl Light {
    pub fn as_str(self) -> &'static str {
        match self {
            Light::Green => "green",
            Light::Yellow => "yellow",
            Light::Red => "red",
        }
    }
}

/// The fraction of the limit that remains when the light turns yellow.
pub const YELLOW_FRACTION: f64 = 0.2;

/// The light at `now_ms` of a deadline that turns yellow at `yellow_at_ms`.
pub fn light(now_ms: u64, yellow_at_ms: u64, deadline_ms: u64) -> Light {
    if now_ms > deadline_ms {
        Light::Red
    } else if now_ms >= yellow_at_ms.min(deadline_ms) {
        Light::Yellow
    } else {
        Light::Green
    }
}

/// The light of a clue: none while no deadline runs (not yet accepted: `deadline_ms == 0`) or
/// once it has left the loop (terminal). A `yellow_at_ms` of 0 (rows older than the column) is
/// replaced by [`yellow_at_fallback`] from `accepted_at_ms`.
pub fn clue_light(
    status: Status,
    now_ms: u64,
    accepted_at_ms: u64,
    yellow_at_ms: u64,
    deadline_ms: u64,
) -> Option<Light> {
    if status.is_terminal() || deadline_ms == 0 {
        return None;
    }
    let yellow = if yellow_at_ms == 0 {
        yellow_at_fallback(accepted_at_ms, deadline_ms)
    } else {
        yellow_at_ms
    };
    Some(light(now_ms, yellow, deadline_ms))
}

/// When 20% of the elapsed (not working) time from `start_ms` to `deadline_ms` remains.
pub fn yellow_at_fallback(start_ms: u64, deadline_ms: u64) -> u64 {
    let limit = deadline_ms.saturating_sub(start_ms);
    deadline_ms - (limit as f64 * YELLOW_FRACTION) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn green_then_yellow_then_red() {
        // Limit 1000 ms from 0: yellow from 800, red after 1000.
        assert_eq!(light(0, 800, 1000), Light::Green);
        assert_eq!(light(799, 800, 1000), Light::Green);
        assert_eq!(light(800, 800, 1000), Light::Yellow);
        assert_eq!(light(1000, 800, 1000), Light::Yellow);
        assert_eq!(light(1001, 800, 1000), Light::Red);
    }

    #[test]
    fn a_yellow_instant_past_the_deadline_still_turns_yellow_at_the_deadline() {
        assert_eq!(light(1000, 5000, 1000), Light::Yellow);
        assert_eq!(light(999, 5000, 1000), Light::Green);
    }

    #[test]
    fn clues_without_a_running_deadline_have_no_light() {
        assert_eq!(clue_light(Status::Reported, 5, 0, 0, 0), None);
        assert_eq!(clue_light(Status::Closed, 5, 0, 80, 100), None);
        assert_eq!(clue_light(Status::Withdrawn, 5, 0, 80, 100), None);
        assert_eq!(
            clue_light(Status::InProgress, 200, 0, 80, 100),
            Some(Light::Red)
        );
        // Rows without yellow_at_ms: 20% of elapsed time from acceptance.
        assert_eq!(yellow_at_fallback(1000, 2000), 1800);
        assert_eq!(
            clue_light(Status::Accepted, 1799, 1000, 0, 2000),
            Some(Light::Green)
        );
        assert_eq!(
            clue_light(Status::Accepted, 1800, 1000, 0, 2000),
            Some(Light::Yellow)
        );
    }

    #[test]
    fn lights_order_by_urgency_and_serialize_in_lowercase() {
        assert!(Light::Green < Light::Yellow && Light::Yellow < Light::Red);
        assert_eq!(serde_json::to_string(&Light::Yellow).unwrap(), "\"yellow\"");
    }
}
