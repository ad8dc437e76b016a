//! Client: being written.
