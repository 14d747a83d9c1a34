//! Integration tests of vigil-store against both backends: real MariaDB (the machine's shared
//! server, each test in its own database, so they run in parallel, and for server settings the
//! shared server lacks, a private `mariadbd`) and SQLite (each test in its own temporary
//! directory). Backend-neutral tests run once per backend (`helpers::on_each_backend!`).

#[macro_use]
mod helpers;

mod batches;
mod forward;
mod idempotency;
mod ids;
mod list;
mod list_scale;
mod private_server;
mod resolve;
mod retention;
mod round_trip;
mod sqlite;
