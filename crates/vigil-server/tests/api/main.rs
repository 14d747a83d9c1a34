//! Integration tests: the real server on 127.0.0.1:0 against the machine's MariaDB, each test
//! in its own database. One binary, one module per concern.

mod helpers;

mod auth;
mod browser;
mod cache;
mod console;
mod cors;
mod errors;
mod galera;
mod health;
mod hostile;
mod idempotency;
mod ingest;
mod ingest_faults;
mod lifecycle;
mod list;
mod listeners;
mod metrics;
mod no_loss;
mod openapi;
mod ops_files;
mod producers;
mod rate_limit;
mod ready;
mod redis_ha;
mod request_id;
mod retention;
mod slow_readers;
mod soak;
mod sse;
mod store_failure;
mod tls;
mod ws;
mod ws_protocol;
mod ws_resume;
