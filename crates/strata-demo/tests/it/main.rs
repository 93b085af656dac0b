//! The demo's plumbing against real Redis and SQLite files.

mod events;
mod order;
mod people_and_payments;
mod postgres;
mod product;
