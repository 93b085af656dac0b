//! The services of the landscape, one module each.

pub mod inventory;
pub mod order;
pub mod payment;
pub mod product;
pub mod user;
