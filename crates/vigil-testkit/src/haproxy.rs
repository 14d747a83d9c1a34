//! A private HAProxy in front of a [`PrivateGaleraCluster`], the way Vigil reaches Galera in
//! production (docs/high-availability.md, *MariaDB Galera behind HAProxy*): all clients write
//! through one node, and when it dies HAProxy moves them to the next.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use vigil_testkit::galera::PrivateGaleraCluster;
//! use vigil_testkit::haproxy::PrivateHaproxy;
//!
//! let mut cluster = PrivateGaleraCluster::start().await?;
//! let proxy = PrivateHaproxy::in_front_of(&cluster).await?;
//! let url = proxy.url(); // mysql://root@127.0.0.1:<port>/test, served by node 1
//! cluster.kill(1); // its sessions are cut; new ones go to node 2 within about a second
//! # Ok(())
//! # }
//! ```
//!
//! [`PrivateHaproxy::in_front_of`] creates the health-check user [`CHECK_USER`] (no password, from
//! `127.0.0.1`; it replicates to every node), writes a configuration into a temp dir and runs
//! `haproxy -f <config> -db` (in the foreground, as a child killed on drop) on a free
//! `127.0.0.1` port, in TCP mode:
//!
//! - node 1 is the one active server and nodes 2 and 3 are `backup`s, used in that order only
//!   while every server before them is down: one writer at a time, so Galera never has to
//!   resolve conflicting writes from two nodes;
//! - `option mysql-check`: each check logs in as [`CHECK_USER`] and quits. A plain TCP check
//!   would pass as long as the kernel accepts connections on the node's port, which a stopped or
//!   wedged `mariadbd` still does (the listen backlog); the MySQL check needs the server itself
//!   to greet and answer. Neither sees Galera's state: a node outside the primary component
//!   still passes, as it does with `mysql-check` in production (a `clustercheck` HTTP service
//!   would be needed for that);
//! - `check inter 500 fall 2 rise 2`: a dead node is marked down after two failed checks, so
//!   within about a second, and `on-marked-down shutdown-sessions` then cuts the sessions still
//!   open to it, as they would be on a hung node;
//! - `timeout client 1h` and `timeout server 1h`, so an idle writer connection is never cut by
//!   the proxy.
//!
//! A node that comes back is marked up after two good checks and takes the new connections
//! again; sessions already on the backup stay there (Galera accepts writes on any node).
//!
//! Start-up returns once the frontend accepts and a MySQL login through it succeeds; a port taken
//! between choosing and binding it is retried with another one.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use tempfile::TempDir;

use crate::galera::{NODE_COUNT, PrivateGaleraCluster};
use crate::mariadb::{CONNECT_ATTEMPT_TIMEOUT, LOG_TAIL_LINES, POLL_INTERVAL, root_options};
use crate::process::{
    ProcessGroup, StartFailure, files_tail, find_program, spawn_dying_with_process,
    start_on_a_free_port, with_context,
};

/// The MySQL user HAProxy's health checks log in as: no password, only from `127.0.0.1`.
pub const CHECK_USER: &str = "vigil_haproxy_check";

/// The HAProxy binary: Debian installs it outside `$PATH` for non-root users.
const HAPROXY_PATHS: &[&str] = &["/usr/sbin/haproxy", "haproxy"];

/// How long HAProxy may take to pass a MySQL login through, and the check user to appear on
/// every node.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between health checks of one server, in milliseconds.
const CHECK_INTERVAL_MS: u64 = 500;

/// Failed checks in a row that mark a server down.
const CHECKS_TO_FALL: u32 = 2;

/// Good checks in a row that mark a server up again.
const CHECKS_TO_RISE: u32 = 2;

/// How long one health check may take (a wedged server fails it).
const CHECK_TIMEOUT_MS: u64 = 1_000;

/// How long HAProxy waits for a server to accept a connection.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// Idle time after which HAProxy would close a session: long enough for any test's idle
/// connection.
const IDLE_TIMEOUT: &str = "1h";

/// Connections HAProxy accepts at once; also sizes its memory (the machine is shared).
const MAX_CONNECTIONS: u32 = 1_000;

/// A `haproxy` of the test's own in front of a Galera cluster. Dropping it kills HAProxy and
/// removes its directory; the cluster is not touched.
pub struct PrivateHaproxy {
    /// The running `haproxy -db`.
    process: ProcessGroup,
    /// The frontend's port on `127.0.0.1`.
    port: u16,
    /// Configuration and log.
    directory: TempDir,
}

impl PrivateHaproxy {
    /// Creates [`CHECK_USER`] on the cluster, waits until every running node lets it in, and
    /// starts HAProxy with node 1 active and nodes 2 and 3 as backups.
    pub async fn in_front_of(cluster: &PrivateGaleraCluster) -> io::Result<PrivateHaproxy> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        create_check_user(cluster, deadline).await?;
        let server_ports: Vec<u16> = (1..=NODE_COUNT).map(|node| cluster.port(node)).collect();
        PrivateHaproxy::start(&server_ports, deadline).await
    }

    /// `mysql://root@127.0.0.1:<port>/test` through the proxy.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }

    /// The frontend's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The frontend's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// HAProxy's own messages so far (servers marked down and up, with the reason), for a failing
    /// test to print.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.directory.path())).unwrap_or_default()
    }

    /// Starts HAProxy in front of the MySQL servers on `server_ports` of `127.0.0.1`: the first
    /// active, the others backups in order.
    async fn start(server_ports: &[u16], deadline: Instant) -> io::Result<PrivateHaproxy> {
        let program = find_program(HAPROXY_PATHS)
            .map_err(|error| io::Error::new(error.kind(), format!("install haproxy: {error}")))?;
        let directory = tempfile::Builder::new()
            .prefix("vigil-haproxy-")
            .tempdir()?;
        let config_path = directory.path().join("haproxy.cfg");
        let log_path = log_path(directory.path());

        let (program, config_path, log_path) = (&program, &config_path, &log_path);
        let (process, port) = start_on_a_free_port("haproxy", |port| {
            Box::pin(async move {
                std::fs::write(config_path, render_config(port, server_ports)).map_err(
                    |error| StartFailure::Other(with_context(error, "write haproxy.cfg")),
                )?;
                let mut process = spawn_haproxy(program, config_path, log_path)
                    .await
                    .map_err(StartFailure::Other)?;
                wait_until_passing_logins(&mut process, port, log_path, deadline).await?;
                Ok((process, port))
            })
        })
        .await?;
        Ok(PrivateHaproxy {
            process,
            port,
            directory,
        })
    }
}

/// Runs `haproxy -f <config> -db` (foreground), its messages going to `log_path`.
async fn spawn_haproxy(
    program: &str,
    config_path: &Path,
    log_path: &Path,
) -> io::Result<ProcessGroup> {
    let log = File::create(log_path)?;
    let mut command = Command::new(program);
    command
        .arg("-f")
        .arg(config_path)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    spawn_dying_with_process(command)
        .await
        .map_err(|error| with_context(error, "spawn haproxy"))
}

impl Drop for PrivateHaproxy {
    fn drop(&mut self) {
        // Killed and reaped (its port free) before `directory` is removed.
        self.process.kill();
    }
}

fn log_path(directory: &Path) -> PathBuf {
    directory.join("haproxy.log")
}

/// The configuration: a TCP frontend on `frontend_port`, the first server active, the others
/// backups.
fn render_config(frontend_port: u16, server_ports: &[u16]) -> String {
    let mut config = format!(
        "# Written by vigil-testkit's PrivateHaproxy for one test.
global
    maxconn {MAX_CONNECTIONS}
    nbthread 1

defaults
    mode tcp
    timeout connect {CONNECT_TIMEOUT_MS}ms
    timeout check {CHECK_TIMEOUT_MS}ms
    timeout client {IDLE_TIMEOUT}
    timeout server {IDLE_TIMEOUT}

frontend mysql
    bind 127.0.0.1:{frontend_port}
    default_backend galera

backend galera
    option mysql-check user {CHECK_USER} post-41
    default-server check inter {CHECK_INTERVAL_MS}ms fall {CHECKS_TO_FALL} \
                   rise {CHECKS_TO_RISE} on-marked-down shutdown-sessions
"
    );
    for (index, port) in server_ports.iter().enumerate() {
        let role = if index == 0 { "" } else { " backup" };
        config.push_str(&format!(
            "    server node{} 127.0.0.1:{port}{role}\n",
            index + 1
        ));
    }
    config
}

/// Creates [`CHECK_USER`] on the first running node (Galera replicates it) and waits until it can
/// log in to every running node, so no server starts out failing its checks.
async fn create_check_user(cluster: &PrivateGaleraCluster, deadline: Instant) -> io::Result<()> {
    let running = cluster.running_nodes();
    let Some(&first) = running.first() else {
        return Err(io::Error::other("no node of the cluster runs"));
    };
    let context = |error: sqlx::Error| {
        io::Error::other(format!("create {CHECK_USER} on node {first}: {error}"))
    };
    let mut connection = MySqlConnection::connect_with(&root_options(cluster.port(first)))
        .await
        .map_err(context)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE USER IF NOT EXISTS '{CHECK_USER}'@'127.0.0.1'"
    )))
    .execute(&mut connection)
    .await
    .map_err(context)?;
    connection.close().await.map_err(context)?;

    for node in running {
        let check = root_options(cluster.port(node)).username(CHECK_USER);
        loop {
            let attempt = tokio::time::timeout(
                CONNECT_ATTEMPT_TIMEOUT,
                MySqlConnection::connect_with(&check),
            )
            .await;
            let last_error = match attempt {
                Ok(Ok(connection)) => {
                    let _ = connection.close().await;
                    break;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => String::from("login timed out"),
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{CHECK_USER} cannot log in to node {node}: {last_error}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    Ok(())
}

/// Polls until a MySQL login through the frontend on `port` succeeds.
async fn wait_until_passing_logins(
    process: &mut ProcessGroup,
    port: u16,
    log_path: &Path,
    deadline: Instant,
) -> Result<(), StartFailure> {
    let options = root_options(port);
    let log_tail = || files_tail(&[log_path], LOG_TAIL_LINES);
    loop {
        process.ensure_running("haproxy", log_tail)?;
        let attempt = tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, async {
            let mut connection = MySqlConnection::connect_with(&options).await?;
            connection.ping().await?;
            connection.close().await
        });
        let last_error = match attempt.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => String::from("login timed out"),
        };
        if Instant::now() >= deadline {
            return Err(StartFailure::Other(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no MySQL login came through haproxy on port {port} in time \
                     (last attempt: {last_error}); log:\n{}",
                    log_tail()
                ),
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::render_config;

    #[test]
    fn first_server_is_active_and_the_others_are_backups_in_order() {
        let config = render_config(4000, &[5001, 5002, 5003]);
        assert!(config.contains("    bind 127.0.0.1:4000\n"), "{config}");
        let servers: Vec<&str> = config
            .lines()
            .filter(|line| line.trim_start().starts_with("server "))
            .collect();
        assert_eq!(
            servers,
            [
                "    server node1 127.0.0.1:5001",
                "    server node2 127.0.0.1:5002 backup",
                "    server node3 127.0.0.1:5003 backup",
            ]
        );
    }
}
