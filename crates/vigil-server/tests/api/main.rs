//! Integration tests: the real server on 127.0.0.1:0 against the machine's MariaDB, each test
//! in its own database. One binary, one module per concern.

mod helpers;

mod cache;
mod errors;
mod health;
mod ingest;
mod ingest_faults;
mod lifecycle;
mod list;
mod request_id;
mod ws;
