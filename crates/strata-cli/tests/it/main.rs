//! End-to-end tests of the `strata` binary, as a user runs it, against a real `redis-server`.

mod bench;
#[cfg(feature = "demo")]
mod dashboard;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod dropin;
mod gateway;
mod load;
mod telemetry;
mod top;
