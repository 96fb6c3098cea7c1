//! End-to-end: the four services in-process (port 0) against the test ClickHouse server and a
//! mock Kafka cluster.

mod app;
mod browser;
mod closed_loop;
mod e2e;
mod geometry;
mod hotspots;
mod import;
mod ops;
mod restart;
mod staff;
