//! Private Redis servers for tests that must see Redis die: a lone [`PrivateRedis`] to kill for
//! good, and a [`RedisSentinelGroup`] (a primary, one replica, three sentinels) whose primary a
//! test kills so that Sentinel fails over to the replica. The machine's shared Redis (the one
//! `scripts/services.sh` starts) is never stopped: other tests use it at the same time.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Duration;
//! use vigil_testkit::redis_sentinel::RedisSentinelGroup;
//!
//! let mut group = RedisSentinelGroup::start().await?;
//! let sentinels = group.sentinels(); // "127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>"
//! let old = group.kill_primary().await?; // SIGKILL
//! let new = group.wait_for_new_primary(old, Duration::from_secs(30)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every server is `redis-server` on a free `127.0.0.1` port with its own temp directory, no
//! persistence (`--save "" --appendonly no`), killed (SIGKILL) and its directory removed on
//! drop; a port taken between choosing and binding it is retried with another one. The
//! sentinels (`redis-server <config> --sentinel`) monitor the primary as [`MASTER_NAME`] with a
//! quorum of two, `down-after-milliseconds` [`DOWN_AFTER_MS`] and `failover-timeout`
//! [`FAILOVER_TIMEOUT_MS`]: a killed primary is replaced within a few seconds (about two on an
//! idle machine). [`RedisSentinelGroup::start`] returns only once every sentinel knows the
//! replica, with its link to the primary up, and the two other sentinels, so that a kill right
//! away fails over.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use tempfile::TempDir;

use crate::process::{
    ProcessGroup, StartFailure, files_tail, find_program, spawn_dying_with_process,
    start_on_a_free_port, with_context,
};

/// The name the sentinels monitor the primary under.
pub const MASTER_NAME: &str = "vigil-test";

/// How long a primary may be silent before a sentinel thinks it down.
pub const DOWN_AFTER_MS: u64 = 1_000;

/// Sentinel's failover timeout: also how long before a failed failover is retried (twice
/// this), so small keeps a test's failover within seconds.
pub const FAILOVER_TIMEOUT_MS: u64 = 2_000;

/// Sentinels that must agree the primary is down before one fails it over.
const QUORUM: usize = 2;

/// How many sentinels watch the group.
const SENTINEL_COUNT: usize = 3;

/// The server binary (also the sentinel, with `--sentinel`).
const REDIS_SERVER_PATHS: &[&str] = &["redis-server", "/usr/bin/redis-server"];

/// How long one server may take to answer `PING`, and a group to be ready to fail over.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between checks of a server or the group.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Bound on one connection attempt or command while checking.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Lines of a server's log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// A `redis-server` (or sentinel) of the test's own. Dropping it kills it and removes its
/// directory.
pub struct PrivateRedis {
    /// The running server, `None` once killed.
    process: Option<ProcessGroup>,
    /// Its port on `127.0.0.1`.
    port: u16,
    /// Its working directory: log, sentinel configuration.
    directory: TempDir,
}

impl PrivateRedis {
    /// Starts a `redis-server` without persistence, with `extra_args` (e.g.
    /// `["--replicaof", "127.0.0.1", "6390"]`), and waits until it answers `PING`.
    pub async fn start(extra_args: &[&str]) -> io::Result<PrivateRedis> {
        let extra_args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();
        PrivateRedis::spawn("redis-", move |port, directory| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &directory.display().to_string(),
            ]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
            args.extend(extra_args.iter().cloned());
            Ok(args)
        })
        .await
    }

    /// Starts a sentinel watching the primary on `primary_port` as [`MASTER_NAME`].
    async fn start_sentinel(primary_port: u16) -> io::Result<PrivateRedis> {
        PrivateRedis::spawn("redis-sentinel-", move |port, directory| {
            // Sentinel rewrites its configuration file as it learns, so it gets a file of its own.
            let config = directory.join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {QUORUM}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = directory.display()
            );
            std::fs::write(&config, text)
                .map_err(|error| with_context(error, "write sentinel.conf"))?;
            Ok(vec![config.display().to_string(), "--sentinel".into()])
        })
        .await
    }

    /// Runs `redis-server` with the arguments `args(port, directory)` gives, on a free port, in
    /// a fresh temp directory, its output going to a log there; waits until it answers `PING`.
    async fn spawn(
        prefix: &str,
        args: impl Fn(u16, &Path) -> io::Result<Vec<String>> + Send + Sync,
    ) -> io::Result<PrivateRedis> {
        let program = find_program(REDIS_SERVER_PATHS).map_err(|error| {
            io::Error::new(error.kind(), format!("install redis-server: {error}"))
        })?;
        let directory = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (program, path, args) = (&program, directory.path(), &args);
        let (process, port) = start_on_a_free_port("redis-server", |port| {
            Box::pin(async move {
                let log = log_path(path);
                let output = File::create(&log)
                    .and_then(|file| Ok((file.try_clone()?, file)))
                    .map_err(|error| StartFailure::Other(with_context(error, "create the log")))?;
                let mut command = Command::new(program);
                command
                    .args(args(port, path).map_err(StartFailure::Other)?)
                    .current_dir(path)
                    .stdin(Stdio::null())
                    .stdout(output.0)
                    .stderr(output.1);
                let mut process = spawn_dying_with_process(command)
                    .await
                    .map_err(|error| StartFailure::Other(with_context(error, "spawn redis")))?;
                wait_until_answering(&mut process, port, &log, deadline).await?;
                Ok((process, port))
            })
        })
        .await?;
        Ok(PrivateRedis {
            process: Some(process),
            port,
            directory,
        })
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server at once (SIGKILL: nothing is flushed, clients see their connections
    /// reset); its port is closed when this returns. It is not restarted.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// What the server logged so far, for a failing test to print.
    pub fn log(&self) -> String {
        files_tail(&[&log_path(self.directory.path())], LOG_TAIL_LINES)
    }
}

/// A Redis primary, one replica and three sentinels, all private (module docs).
pub struct RedisSentinelGroup {
    /// The two data servers; either may be primary.
    servers: [PrivateRedis; 2],
    sentinels: Vec<PrivateRedis>,
}

impl RedisSentinelGroup {
    /// Starts the primary, its replica and the sentinels, and waits until a failover would work:
    /// every sentinel knows the replica (its link to the primary up) and the other sentinels.
    pub async fn start() -> io::Result<RedisSentinelGroup> {
        let primary = PrivateRedis::start(&[]).await?;
        let primary_port = primary.port().to_string();
        let replica = PrivateRedis::start(&["--replicaof", "127.0.0.1", &primary_port]).await?;
        let mut sentinels = Vec::with_capacity(SENTINEL_COUNT);
        for _ in 0..SENTINEL_COUNT {
            sentinels.push(PrivateRedis::start_sentinel(primary.port()).await?);
        }
        let group = RedisSentinelGroup {
            servers: [primary, replica],
            sentinels,
        };
        group.wait_until_ready().await?;
        Ok(group)
    }

    /// The sentinels as `VIGIL_REDIS_SENTINELS` lists them: `127.0.0.1:<port>,…`.
    pub fn sentinels(&self) -> String {
        self.sentinels
            .iter()
            .map(|sentinel| sentinel.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The name the sentinels know the primary by ([`MASTER_NAME`]).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The primary as the first sentinel that answers names it.
    pub async fn primary(&self) -> io::Result<SocketAddr> {
        let mut last_error = io::Error::other("no sentinel");
        for sentinel in &self.sentinels {
            match master_addr(sentinel.port()).await {
                Ok(addr) => return Ok(addr),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// Kills the current primary with SIGKILL; its address.
    pub async fn kill_primary(&mut self) -> io::Result<SocketAddr> {
        let primary = self.primary().await?;
        let server = self
            .servers
            .iter_mut()
            .find(|server| server.addr() == primary)
            .ok_or_else(|| io::Error::other(format!("the sentinels name {primary}, not ours")))?;
        server.kill();
        Ok(primary)
    }

    /// Waits until every sentinel names a primary other than `old` and that server says it is
    /// a master, at most `limit`; the new primary's address.
    pub async fn wait_for_new_primary(
        &self,
        old: SocketAddr,
        limit: Duration,
    ) -> io::Result<SocketAddr> {
        let deadline = Instant::now() + limit;
        loop {
            let mut named = Vec::with_capacity(self.sentinels.len());
            for sentinel in &self.sentinels {
                named.push(master_addr(sentinel.port()).await.ok());
            }
            if let Some(Some(new)) = named.first().copied()
                && new != old
                && named.iter().all(|addr| *addr == Some(new))
                && role(new.port()).await.is_ok_and(|role| role == "master")
            {
                return Ok(new);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no new primary within {limit:?}: the sentinels name {named:?}; \
                         a sentinel's log:\n{}",
                        self.sentinels[0].log()
                    ),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls until every sentinel knows the replica, its link up, and the other sentinels.
    async fn wait_until_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let mut ready = true;
            for sentinel in &self.sentinels {
                ready &= sentinel_is_ready(sentinel.port()).await.unwrap_or(false);
            }
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the sentinels did not discover the replica and each other within \
                         {STARTUP_TIMEOUT:?}; a sentinel's log:\n{}",
                        self.sentinels[0].log()
                    ),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // Killed and reaped (its port free) before `directory` is removed.
        self.kill();
    }
}

fn log_path(directory: &Path) -> PathBuf {
    directory.join("redis.log")
}

/// Polls until the server on `port` answers `PING`, or fails with why (its log, a port clash).
async fn wait_until_answering(
    process: &mut ProcessGroup,
    port: u16,
    log: &Path,
    deadline: Instant,
) -> Result<(), StartFailure> {
    loop {
        process.ensure_running("redis-server", || files_tail(&[log], LOG_TAIL_LINES))?;
        let answered = query::<String>(port, &mut redis::cmd("PING")).await;
        if answered.is_ok_and(|reply| reply == "PONG") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartFailure::Other(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "redis-server did not answer on port {port} within {STARTUP_TIMEOUT:?}; \
                     log:\n{}",
                    files_tail(&[log], LOG_TAIL_LINES)
                ),
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether the sentinel on `port` knows one replica, with flags `slave` only and its link to
/// the primary `ok`, and the other sentinels.
async fn sentinel_is_ready(port: u16) -> io::Result<bool> {
    let replicas: Vec<Vec<String>> = query(
        port,
        redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME),
    )
    .await?;
    let sentinels: Vec<Vec<String>> = query(
        port,
        redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME),
    )
    .await?;
    let replica_ready = replicas.len() == 1
        && field(&replicas[0], "flags") == Some("slave")
        && field(&replicas[0], "master-link-status") == Some("ok");
    Ok(replica_ready && sentinels.len() == SENTINEL_COUNT - 1)
}

/// The value after `name` in a flat `[name, value, name, value…]` reply.
fn field<'a>(pairs: &'a [String], name: &str) -> Option<&'a str> {
    pairs
        .chunks_exact(2)
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str())
}

/// The primary the sentinel on `port` names.
async fn master_addr(port: u16) -> io::Result<SocketAddr> {
    let (host, primary_port): (String, u16) = query(
        port,
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME),
    )
    .await?;
    format!("{host}:{primary_port}")
        .parse()
        .map_err(io::Error::other)
}

/// The role (`master`, `slave`) the server on `port` says it has.
async fn role(port: u16) -> io::Result<String> {
    let reply: Vec<redis::Value> = query(port, &mut redis::cmd("ROLE")).await?;
    match reply.first() {
        Some(redis::Value::BulkString(role)) => Ok(String::from_utf8_lossy(role).into_owned()),
        other => Err(io::Error::other(format!("unexpected ROLE reply {other:?}"))),
    }
}

/// One command to the server on `port` over a fresh connection, bounded by [`CHECK_TIMEOUT`].
async fn query<T: redis::FromRedisValue>(port: u16, command: &mut redis::Cmd) -> io::Result<T> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(io::Error::other)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CHECK_TIMEOUT))
        .set_response_timeout(Some(CHECK_TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(io::Error::other)?;
    command
        .query_async(&mut connection)
        .await
        .map_err(io::Error::other)
}
