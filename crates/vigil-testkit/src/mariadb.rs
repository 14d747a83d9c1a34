//! A private `mariadbd` for tests that need server settings the machine's shared MariaDB does
//! not have (e.g. `--innodb-autoinc-lock-mode=2`), without reconfiguring the shared server.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use vigil_testkit::mariadb::PrivateMariaDb;
//!
//! let db = PrivateMariaDb::start(&["--innodb-autoinc-lock-mode=2"]).await?;
//! let url = db.url(); // mysql://root@127.0.0.1:<port>/test
//! // ... run Vigil against `url` ...
//! drop(db); // the server is killed and its data directory removed
//! # Ok(())
//! # }
//! ```
//!
//! [`PrivateMariaDb::start`] creates a data directory under the temp dir with
//! `mariadb-install-db` (root may log in over TCP with an empty password), starts
//! `/usr/sbin/mariadbd --no-defaults` on a free `127.0.0.1` port with a small buffer pool and
//! redo log plus the caller's arguments, waits until it accepts connections and creates the
//! database `test`. That takes one to two seconds. A port taken between choosing and binding
//! it is retried with another port; a server that exits or does not come up within a minute is
//! an error carrying the tail of its error log.
//!
//! The extra arguments go to `mariadb-install-db` as well as to `mariadbd`, so options fixed when
//! the data directory is created (`--innodb-page-size`, `--lower-case-table-names`) work.
//! When the tests run as root, the server runs as `mysql` (`--user=mysql`, the directory given to
//! that user), like the machine's shared server; otherwise as the test's own user.
//!
//! [`PrivateMariaDb::kill`] SIGKILLs the server, like a crash, and [`PrivateMariaDb::restart`]
//! starts it again on the same port and data directory, for tests of a database that dies and
//! comes back.
//!
//! Dropping the handle kills the server (SIGKILL: its data is thrown away, so there is nothing
//! to shut down cleanly) and removes the data directory. If the test process itself dies, the
//! kernel kills the server too; only the data directory (some tens of MB) is left behind.
//!
//! The pieces (paths, data directory, command line, waiting until the server answers) are
//! `pub(crate)`: [`crate::galera`] starts its nodes with them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use tempfile::TempDir;

use crate::process::{
    ProcessGroup, StartFailure, create_server_directory, files_tail, find_program, last_lines,
    remove_if_exists, server_user, spawn_dying_with_process, start_on_a_free_port, with_context,
};

/// The server binary: Debian and Ubuntu install it outside `$PATH` for non-root users.
const MARIADBD_PATHS: &[&str] = &["/usr/sbin/mariadbd", "mariadbd"];

/// Data directory initialisers, newest name first.
const INSTALL_DB_PROGRAMS: &[&str] = &["mariadb-install-db", "mysql_install_db"];

/// Server options that keep a throwaway server small and quick to start; the caller's
/// arguments come after them and so override them.
const SMALL_SERVER_ARGS: &[&str] = &[
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
];

/// How long the server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between checks whether the server is up.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Limit on one connection attempt or status query while waiting, so a stray listener or a
/// stalled server cannot stall start-up past its deadline.
pub(crate) const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Lines of the server's log quoted in start-up errors.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// A `mariadbd` of the test's own, on its own port and data directory. Dropping it kills the
/// server and removes the data directory.
pub struct PrivateMariaDb {
    /// The running server, or `None` after [`PrivateMariaDb::kill`].
    server: Option<ProcessGroup>,
    /// Its TCP port on `127.0.0.1`; kept across [`PrivateMariaDb::restart`].
    port: u16,
    /// The caller's server arguments, for restarts.
    extra_args: Vec<String>,
    /// Data directory, socket, pid file and logs; removed after the server is killed.
    directory: TempDir,
}

impl PrivateMariaDb {
    /// Starts `mariadbd` on a free 127.0.0.1 port with its own temp data directory, with
    /// `extra_args` (e.g. `["--innodb-autoinc-lock-mode=2"]`), waits until it accepts
    /// connections, creates database `test`.
    pub async fn start(extra_args: &[&str]) -> io::Result<PrivateMariaDb> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let directory = tempfile::Builder::new()
            .prefix("vigil-mariadb-")
            .tempdir()?;
        let paths = ServerPaths::create(directory.path())?;
        let extra_args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();

        install_data_directory(&paths, &extra_args).await?;

        let (paths, extra_args) = (&paths, &extra_args);
        let (server, port, connection) = start_on_a_free_port("mariadbd", |port| {
            Box::pin(async move {
                let mut server = spawn_server(paths, port, extra_args)
                    .await
                    .map_err(StartFailure::Other)?;
                let connection = wait_until_answering(&mut server, port, paths, deadline).await?;
                Ok((server, port, connection))
            })
        })
        .await?;
        create_test_database(connection).await?;
        Ok(PrivateMariaDb {
            server: Some(server),
            port,
            extra_args: extra_args.clone(),
            directory,
        })
    }

    /// SIGKILLs the server, like a crash: connections drop and the port refuses new ones.
    /// Returns once the process is gone. The data directory stays, for [`PrivateMariaDb::restart`].
    pub fn kill(&mut self) {
        // Dropping the process group kills and reaps it.
        self.server = None;
    }

    /// Starts the server again on the same port and data directory (killing it first if it
    /// runs) and waits until it accepts connections. InnoDB recovers what was committed before
    /// a kill.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let paths = ServerPaths::in_directory(self.directory.path());
        let mut server = spawn_server(&paths, self.port, &self.extra_args).await?;
        match wait_until_answering(&mut server, self.port, &paths, deadline).await {
            Ok(connection) => {
                self.server = Some(server);
                connection.close().await.map_err(|error| {
                    io::Error::other(format!("close the set-up connection: {error}"))
                })
            }
            Err(StartFailure::PortTaken(log_tail)) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "mariadbd cannot restart: another process took port {} while it was down; \
                     log:\n{log_tail}",
                    self.port
                ),
            )),
            Err(StartFailure::Other(error)) => Err(with_context(error, "restart mariadbd")),
        }
    }

    /// `mysql://root@127.0.0.1:<port>/test`
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }

    /// The server's TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (removed on drop).
    pub fn data_dir(&self) -> PathBuf {
        ServerPaths::in_directory(self.directory.path()).data
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        // SIGKILL, then reap: the port is free once this returns. The data directory goes with
        // `directory`, dropped after this.
        self.kill();
    }
}

/// Where one private server keeps its files.
pub(crate) struct ServerPaths {
    pub(crate) data: PathBuf,
    /// The server's `--tmpdir`, so that concurrent servers never share temporary files.
    temp: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    error_log: PathBuf,
    output_log: PathBuf,
}

impl ServerPaths {
    fn in_directory(directory: &Path) -> ServerPaths {
        ServerPaths {
            data: directory.join("data"),
            temp: directory.join("tmp"),
            socket: directory.join("mysqld.sock"),
            pid_file: directory.join("mysqld.pid"),
            error_log: directory.join("error.log"),
            output_log: directory.join("output.log"),
        }
    }

    /// Creates `directory` with an empty data and temp directory in it, all writable by the
    /// server's user.
    pub(crate) fn create(directory: &Path) -> io::Result<ServerPaths> {
        let paths = ServerPaths::in_directory(directory);
        for path in [directory, &paths.data, &paths.temp] {
            create_server_directory(path)?;
        }
        Ok(paths)
    }

    /// The end of the server's error log and of what it printed.
    pub(crate) fn log_tail(&self) -> String {
        files_tail(&[&self.error_log, &self.output_log], LOG_TAIL_LINES)
    }
}

/// Fills `paths.data` with the system tables (root may log in over TCP without a password).
pub(crate) async fn install_data_directory(
    paths: &ServerPaths,
    extra_args: &[String],
) -> io::Result<()> {
    let program = find_program(INSTALL_DB_PROGRAMS)?;
    let mut command = Command::new(&program);
    // --no-defaults must come first.
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", paths.data.display()))
        .arg(format!("--tmpdir={}", paths.temp.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .args(SMALL_SERVER_ARGS)
        .args(extra_args)
        .stdin(Stdio::null());
    if let Some(user) = server_user() {
        command.arg(format!("--user={user}"));
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(io::Error::other)?
        .map_err(|error| with_context(error, &format!("run {program}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(io::Error::other(format!(
        "{program} failed ({}):\n{}",
        output.status,
        last_lines(&text, LOG_TAIL_LINES)
    )))
}

/// Starts `mariadbd --no-defaults` on `paths` and `port` with the small settings, then
/// `extra_args`.
pub(crate) async fn spawn_server(
    paths: &ServerPaths,
    port: u16,
    extra_args: &[String],
) -> io::Result<ProcessGroup> {
    // The logs are per attempt: start-up failures are read from them.
    remove_if_exists(&paths.error_log)?;
    let output = File::create(&paths.output_log)?;
    let mut command = Command::new(find_program(MARIADBD_PATHS)?);
    command
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        // --no-defaults must come first.
        .arg("--no-defaults")
        .arg(format!("--datadir={}", paths.data.display()))
        .arg(format!("--tmpdir={}", paths.temp.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", paths.socket.display()))
        .arg(format!("--pid-file={}", paths.pid_file.display()))
        .arg(format!("--log-error={}", paths.error_log.display()))
        .args(SMALL_SERVER_ARGS);
    if let Some(user) = server_user() {
        command.arg(format!("--user={user}"));
    }
    command.args(extra_args);
    spawn_dying_with_process(command)
        .await
        .map_err(|error| with_context(error, "spawn mariadbd"))
}

/// Root's connect options for the server on `port`.
pub(crate) fn root_options(port: u16) -> MySqlConnectOptions {
    MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("root")
}

/// Polls until the server on `port` started from `paths` answers as root, and returns that
/// connection.
pub(crate) async fn wait_until_answering(
    server: &mut ProcessGroup,
    port: u16,
    paths: &ServerPaths,
    deadline: Instant,
) -> Result<MySqlConnection, StartFailure> {
    let options = root_options(port);
    loop {
        server.ensure_running("mariadbd", || paths.log_tail())?;
        let attempt = tokio::time::timeout(
            CONNECT_ATTEMPT_TIMEOUT,
            connect_to_own_server(&options, paths),
        );
        let last_connect_error = match attempt.await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) => error,
            Err(_) => String::from("connection attempt timed out"),
        };
        if Instant::now() >= deadline {
            return Err(StartFailure::Other(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "mariadbd did not accept connections on port {port} in time \
                     (last attempt: {last_connect_error}); log:\n{}",
                    paths.log_tail()
                ),
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Connects and checks that the server answering is ours, not another process that took the
/// port.
async fn connect_to_own_server(
    options: &MySqlConnectOptions,
    paths: &ServerPaths,
) -> Result<MySqlConnection, String> {
    let mut connection = MySqlConnection::connect_with(options)
        .await
        .map_err(|error| error.to_string())?;
    let pid_file: String = sqlx::query_scalar("SELECT @@pid_file")
        .fetch_one(&mut connection)
        .await
        .map_err(|error| error.to_string())?;
    if Path::new(&pid_file) != paths.pid_file {
        return Err(format!("another server answered (pid file {pid_file})"));
    }
    Ok(connection)
}

/// Creates the database `test` and closes the connection.
pub(crate) async fn create_test_database(mut connection: MySqlConnection) -> io::Result<()> {
    sqlx::query("CREATE DATABASE IF NOT EXISTS test")
        .execute(&mut connection)
        .await
        .map_err(|error| io::Error::other(format!("create database test: {error}")))?;
    connection
        .close()
        .await
        .map_err(|error| io::Error::other(format!("close the set-up connection: {error}")))
}
