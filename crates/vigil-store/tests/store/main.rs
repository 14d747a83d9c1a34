//! Integration tests of vigil-store against real MariaDB: the machine's shared server (each
//! test in its own database, so they run in parallel) and, for server settings the shared
//! server lacks, a private `mariadbd`.

mod batches;
mod helpers;
mod ids;
mod list;
mod list_scale;
mod private_server;
mod resolve;
mod round_trip;
