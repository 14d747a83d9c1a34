//! Test utilities shared by Vigil's integration tests. Never a dependency of the server.
//!
//! - [`database`]: a fresh MariaDB database per test on the machine's shared server, so tests
//!   run in parallel without seeing each other's rows.
//! - [`mariadb`]: a private `mariadbd` on its own port and data directory, for tests that need
//!   other server settings (e.g. `--innodb-autoinc-lock-mode=2`).
//! - [`galera`]: a private three-node MariaDB Galera cluster on loopback, whose nodes tests kill
//!   and restart, for the high-availability behaviour docs/high-availability.md describes.
//! - [`haproxy`]: a private HAProxy in front of that cluster (one active node, two backups), the
//!   way Vigil reaches Galera in production.
//! - [`redis_sentinel`]: private `redis-server`s: a lone one to kill for good, and a primary, a
//!   replica and three sentinels whose primary a test kills to make Sentinel fail over.
//! - [`proxy`]: a fault-injecting TCP proxy to put between Vigil and MariaDB or Redis: delay,
//!   cut, refuse, blackhole, heal — faults are injected here, never by stopping shared servers.

pub mod database;
pub mod galera;
pub mod haproxy;
pub mod mariadb;
mod process;
pub mod proxy;
pub mod redis_sentinel;
