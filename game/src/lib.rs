//! Acorn game library.

pub mod sim;
