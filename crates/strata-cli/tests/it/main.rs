//! End-to-end tests of the `strata` binary.
