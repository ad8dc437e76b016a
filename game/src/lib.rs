//! Acorn game library.

pub mod sim;
pub mod store;
