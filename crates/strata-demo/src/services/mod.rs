//! The services of the landscape, one module each.

pub mod product;
