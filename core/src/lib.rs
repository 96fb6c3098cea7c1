//! gridclue-core: the domain and the contracts every gridclue service shares.
//!
//! Modules:
//! - [`calendar`] — the district's working-time calendar and deadlines (pure).
//! - [`ids`] — identifiers (`ClueId`, `CommandId`, `ReporterId`) and the reporter group.
//! - [`geo`] — validated WGS84 points.
//! - [`grid`] — the 15-digit municipal unit-grid code and its street/community prefixes.
//! - [`hotspot`] — emerging-hotspot detection, a pure fold over cases (alerts).
//! - [`category`] — category and department codes and the category catalog
//!   (`data/categories.json`).
//! - [`codes`] — every code type in one place and the serde adapter for an absent code
//!   written as `""`.
//! - [`status`] — the closed-loop status machine as a pure function.
//! - [`roles`] — who may take which action on which clue (pure; 403 before 409).
//! - [`light`] — the deadline's traffic light (green, yellow, red), one definition for all.
//! - [`wire`] — the versioned JSON contract of the Kafka topics (commands, events, DLQ).
//! - [`config`] — defaults → optional file → `GRIDCLUE_*` environment.
//! - [`secrets`] — keyed hashing of tokens and reporter phone numbers.
//! - [`service`] — shutdown signal and problem+json responses shared by the HTTP services.
//! - [`telemetry`] — tracing set-up and every Prometheus metric name.
//! - [`tokens`] — bearer tokens stored as hashes, reloaded when the file changes.
//! - [`kafka`] — rdkafka client configuration builders.
//! - [`lag`] — consumer-group lag (records and seconds) measured like a lag exporter.
//! - [`ch`] — ClickHouse client builder that adapts to the server version.
//! - [`rng`] — the one deterministic pseudo-random generator (SplitMix64) for maps, demo data,
//!   benchmarks and tests.

pub mod calendar;
pub mod category;
pub mod ch;
pub mod codes;
pub mod config;
pub mod geo;
pub mod grid;
pub mod hotspot;
pub mod ids;
pub mod kafka;
pub mod lag;
pub mod light;
pub mod rng;
pub mod roles;
pub mod secrets;
pub mod service;
pub mod status;
pub mod telemetry;
pub mod tokens;
pub mod wire;

pub use category::{Catalog, CategoryCode, DepartmentCode};
pub use geo::GeoPoint;
pub use grid::{CommunityCode, GridCode, StreetCode};
pub use ids::{ClueId, CommandId, ReporterGroup, ReporterId};
pub use light::Light;
pub use status::{Action, Status, TransitionError};
