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
//! When the process runs as root, `--user=root` is passed (mariadbd refuses root otherwise).
//!
//! Dropping the handle kills the server (SIGKILL: its data is thrown away, so there is nothing
//! to shut down cleanly) and removes the data directory. If the test process itself dies, the
//! kernel kills the server too; only the data directory (some tens of MB) is left behind.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use tempfile::TempDir;
use tokio::sync::oneshot;

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

/// How many ports to try when the chosen one is taken before the server binds it.
const PORT_ATTEMPTS: usize = 5;

/// Pause between checks whether the server is up.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Limit on one connection attempt while waiting, so a stray listener cannot stall start-up.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Lines of the server's log quoted in start-up errors.
const LOG_TAIL_LINES: usize = 40;

/// A `mariadbd` of the test's own, on its own port and data directory. Dropping it kills the
/// server and removes the data directory.
pub struct PrivateMariaDb {
    /// The running server.
    server: Child,
    /// Its TCP port on `127.0.0.1`.
    port: u16,
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
        let paths = ServerPaths::in_directory(directory.path());
        let extra_args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();
        let run_as_root = running_as_root();

        install_data_directory(&paths, &extra_args, run_as_root).await?;

        let mut last_port_clash = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let command = server_command(&paths, port, &extra_args, run_as_root)?;
            let server = spawn_dying_with_process(command)
                .await
                .map_err(|error| with_context(error, "spawn mariadbd"))?;
            match wait_until_ready(server, port, &paths, deadline).await {
                Ok(server) => {
                    return Ok(PrivateMariaDb {
                        server,
                        port,
                        directory,
                    });
                }
                Err(StartFailure::PortTaken(log_tail)) => last_port_clash = log_tail,
                Err(StartFailure::Other(error)) => return Err(error),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "mariadbd could not bind a free port in {PORT_ATTEMPTS} attempts; last log:\n\
                 {last_port_clash}"
            ),
        ))
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
        // SIGKILL, then reap: the port is free once `wait` returns. The data directory goes
        // with `directory`, dropped after this.
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Where one private server keeps its files.
struct ServerPaths {
    data: PathBuf,
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
}

enum StartFailure {
    /// Another process bound the port first; the log tail says so.
    PortTaken(String),
    Other(io::Error),
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn with_context(error: io::Error, context: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Picks a port by letting the kernel choose one and releasing it; the server may still lose
/// it to another process, which start-up detects and retries.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn find_program(candidates: &[&str]) -> io::Result<String> {
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    for candidate in candidates {
        if candidate.contains('/') {
            if Path::new(candidate).is_file() {
                return Ok(candidate.to_string());
            }
            continue;
        }
        if std::env::split_paths(&path_dirs).any(|dir| dir.join(candidate).is_file()) {
            return Ok(candidate.to_string());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("none of {candidates:?} is installed"),
    ))
}

async fn install_data_directory(
    paths: &ServerPaths,
    extra_args: &[String],
    run_as_root: bool,
) -> io::Result<()> {
    let program = find_program(INSTALL_DB_PROGRAMS)?;
    std::fs::create_dir_all(&paths.temp)?;
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
    if run_as_root {
        command.arg("--user=root");
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

fn server_command(
    paths: &ServerPaths,
    port: u16,
    extra_args: &[String],
    run_as_root: bool,
) -> io::Result<Command> {
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
    if run_as_root {
        command.arg("--user=root");
    }
    command.args(extra_args);
    Ok(command)
}

/// Polls until the server on `port` started from `paths` answers queries, then creates `test`.
async fn wait_until_ready(
    mut server: Child,
    port: u16,
    paths: &ServerPaths,
    deadline: Instant,
) -> Result<Child, StartFailure> {
    let options = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("root");
    loop {
        match server.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                let log_tail = server_log_tail(paths);
                if log_tail.contains("Address already in use") {
                    return Err(StartFailure::PortTaken(log_tail));
                }
                return Err(StartFailure::Other(io::Error::other(format!(
                    "mariadbd exited ({status}) before accepting connections; log:\n{log_tail}"
                ))));
            }
            Err(error) => {
                kill(&mut server);
                return Err(StartFailure::Other(error));
            }
        }

        let attempt = tokio::time::timeout(
            CONNECT_ATTEMPT_TIMEOUT,
            create_test_database(&options, paths),
        );
        let last_connect_error = match attempt.await {
            Ok(Ok(())) => return Ok(server),
            Ok(Err(error)) => error,
            Err(_) => String::from("connection attempt timed out"),
        };

        if Instant::now() >= deadline {
            kill(&mut server);
            return Err(StartFailure::Other(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "mariadbd did not accept connections on port {port} within {}s \
                     (last attempt: {last_connect_error}); log:\n{}",
                    STARTUP_TIMEOUT.as_secs(),
                    server_log_tail(paths)
                ),
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Connects, checks that the server answering is ours (not another process that took the
/// port), and creates `test`.
async fn create_test_database(
    options: &MySqlConnectOptions,
    paths: &ServerPaths,
) -> Result<(), String> {
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
    sqlx::query("CREATE DATABASE IF NOT EXISTS test")
        .execute(&mut connection)
        .await
        .map_err(|error| error.to_string())?;
    connection.close().await.map_err(|error| error.to_string())
}

fn kill(server: &mut Child) {
    let _ = server.kill();
    let _ = server.wait();
}

fn server_log_tail(paths: &ServerPaths) -> String {
    let mut text = String::new();
    for log in [&paths.error_log, &paths.output_log] {
        if let Ok(bytes) = std::fs::read(log) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    last_lines(&text, LOG_TAIL_LINES)
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// A spawn request for the spawner thread, with where to send the child.
type SpawnRequest = (Command, oneshot::Sender<io::Result<Child>>);

/// Spawns `command` so that the kernel kills it when the test process dies, even by SIGKILL.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits, not the process, and
/// test harnesses and runtimes end threads long before the process. So children are spawned from
/// one thread that lives as long as the process.
async fn spawn_dying_with_process(mut command: Command) -> io::Result<Child> {
    // SAFETY: the closure only calls prctl, which is async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("vigil-testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the test process's spawner thread");
        requests
    });
    let (reply, child) = oneshot::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    child
        .await
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }
}
