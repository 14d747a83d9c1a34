//! Test utilities shared by Vigil's integration tests. Never a dependency of the server.
//!
//! - [`database`]: a fresh MariaDB database per test on the machine's shared server, so tests
//!   run in parallel without seeing each other's rows.
//! - [`mariadb`]: a private `mariadbd` on its own port and data directory, for tests that need
//!   other server settings (e.g. `--innodb-autoinc-lock-mode=2`).
//! - [`proxy`]: a fault-injecting TCP proxy to put between Vigil and MariaDB or Redis: delay,
//!   cut, refuse, blackhole, heal — faults are injected here, never by stopping shared servers.

pub mod database;
pub mod mariadb;
pub mod proxy;
