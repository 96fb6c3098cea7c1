//! gridclue-loadgen: the demo loader's library part (the `gridclue-load` binary posts clues).
//!
//! - [`history`]: a past month of clues with their timelines, imported (`gridclue-load history`).
//! - [`hotspots`]: evaluates the hotspot detector on a synthetic year (`gridclue-load hotspots`).
//! - [`map`]: the district map as the loader samples it.
//! - [`open`]: open-loop load at a fixed rate with scheduled-time latency and freshness probes
//!   (`gridclue-load open`).
//! - [`poison`]: records that must land in the DLQ, straight to the topics (`gridclue-load
//!   poison`, for the chaos suite).
//! - [`staff`]: plays a district's staff through the public API (`gridclue-load staff`).

pub mod history;
pub mod hotspots;
pub mod map;
pub mod open;
pub mod poison;
pub mod staff;
