//! Acorn game library.

pub mod api;
pub mod hosting;
pub mod sim;
pub mod store;
