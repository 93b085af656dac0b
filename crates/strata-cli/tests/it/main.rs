//! End-to-end tests of the `strata` binary, as a user runs it, against a real `redis-server`.

mod bench;
mod dashboard;
mod demo;
mod gateway;
mod telemetry;
