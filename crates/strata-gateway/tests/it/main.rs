//! The gateway as a library: embedded in a test program, in front of a real upstream, alone
//! and two instances sharing a real Redis.

mod embedded;
mod footprint;
mod origin_failure;
