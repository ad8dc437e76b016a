//! Acorn's topics service: publish/subscribe over WebSocket and HTTP with
//! per-topic sequence numbers, history and resume, scoped tokens, and an engine
//! seam for scale-out.
//!
//! Tracing a publish: [`http::publish`] (or [`session::Session::handle`] for a
//! WebSocket `pub`) → [`hub::Hub::publish`] → the engine assigns the seq and
//! calls back [`hub::Hub`]'s fan-out → each subscriber's [`outbox::Outbox`] →
//! the connection's writer in [`ws`].

pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod hub;
pub mod local;
pub mod metrics;
pub mod names;
pub mod outbox;
pub mod protocol;
pub mod server;
pub mod session;
pub mod token;
pub mod ws;
