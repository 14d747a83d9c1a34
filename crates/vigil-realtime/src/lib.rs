//! Realtime delivery: every committed event, on whichever instance it was posted, reaches the
//! WebSocket clients of every instance as one text frame holding its stored JSON, exactly once
//! while they are connected; a client that reconnects with `since` resumes without a gap.
//!
//! This crate owns everything after the upgrade: the server's HTTP layer checks a `GET /ws`
//! (`vigil-server`'s `http::ws`) and hands the upgraded socket to [`client::serve`] through a
//! [`Registration`] from the [`Hub`]. Redis is reached only through `vigil-bus` (the
//! [`vigil_bus::Subscription`] the bridge reads), the database only through `vigil-store`
//! (backfill and resume reads).
//!
//! ```text
//! batcher ── publisher ──▶ Redis channel ──▶ Bridge (one subscription per instance) ─┐
//!    └──── LocalFeed (no REDIS_URL: this instance's commits only) ───────────────────┤
//!                                                                                    ▼
//!                         Hub: frame built once, pushed to each matching client's queue
//!                                                                                    ▼
//!                         client task per socket: reader + writer (pings, idle, close)
//! ```
//!
//! - [`event`]: reading an event's id and filter fields from its JSON prefix, building its frame;
//! - [`hub`]: clients, filters, fan-out and the slow-consumer policy; `queue`: a client's
//!   bounded frame queue, between the hub and the client's task;
//! - [`bridge`]: the Redis subscription (on the primary Sentinel names, when configured),
//!   reconnecting with back-off and asking for backfills, every poll interval while it is down;
//! - [`backfill`]: re-reading from the database what the live feed lost;
//! - [`client`]: one socket's task, including a resume's replay;
//! - [`reader`]: reading client frames with no buffer held while a client is quiet, and
//!   [`protocol`]: the rules that span frames (fragments, UTF-8, Close payloads).
//!
//!
//! The delivery log (in [`hub`]) remembers the ids sent, so every source (the live channel, a
//! backfill, a resume's replay) goes through one filter and each event is sent once.

pub mod backfill;
pub mod bridge;
pub mod client;
pub mod event;
pub mod hub;
pub mod protocol;
mod queue;
pub mod reader;
pub mod resume;
pub mod sse;

pub use bridge::{Bridge, BridgeStats};
pub use event::{HubEvent, Wire};
pub use hub::{Hub, HubSettings, HubStats, LocalFeed, RegisterError, Registration};
