//! Load tools for Vigil: [`scenarios`] are the goose HTTP load tests (the `vigil-load`
//! binary), [`fanout`] measures WebSocket fan-out (the `fanout` binary), [`latency`] draws
//! latency against offered rate (`plot-latency`). Everything but argument parsing and
//! printing is a library, so each piece is unit-tested without a server.

pub mod fanout;
pub mod latency;
pub mod scenarios;
