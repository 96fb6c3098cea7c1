//! gridclue-loadgen: the demo loader's library part (the `gridclue-load` binary posts clues).
//!
//! - [`staff`]: plays a district's staff through the public API (`gridclue-load staff`).

pub mod staff;
