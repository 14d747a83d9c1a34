//! What every private server of the testkit needs from the operating system: free loopback
//! ports, programs found outside `$PATH`, the `mysql` user when the tests run as root, and child
//! processes that die with the test process and are killed with everything they started.
//!
//! [`crate::mariadb`], [`crate::galera`] and [`crate::haproxy`] start real servers; these helpers
//! are the one place where they choose ports, spawn and kill, so the three behave alike.
//!
//! Ports are chosen below the kernel's ephemeral range (`ip_local_port_range`) when there is room:
//! a port there is never handed out to an outgoing connection, and the parallel tests open
//! thousands of those. A server that is killed and restarted on the same ports (a Galera node)
//! would otherwise find them taken by some client's connection.

// Unsafe: libc calls with no safe wrapper in std (the effective uid, getpwnam_r, killing a
// process group, setpgid before exec, waitid without reaping).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::sync::oneshot;

/// The account private servers run as when the tests run as root: `mariadbd` refuses to run as
/// root without `--user`, and Galera's SST scripts run as the server's user, like the machine's
/// shared MariaDB (the one `scripts/services.sh` starts).
pub(crate) const SERVER_USER: &str = "mysql";

/// Lowest port chosen for a private server.
const PRIVATE_PORT_FLOOR: u16 = 20_000;

/// Below this many ports between [`PRIVATE_PORT_FLOOR`] and the ephemeral range, ports are left
/// to the kernel instead (it then picks from the ephemeral range).
const MIN_PRIVATE_PORTS: u16 = 1_000;

/// Where the kernel's range for outgoing connections is configured.
const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// How many ports a server is tried on when the chosen one is taken before the server binds it.
pub(crate) const PORT_ATTEMPTS: usize = 5;

/// Random candidates tried for one port before giving up.
const PORT_CANDIDATES: usize = 200;

/// What a server's log says when one of its ports was taken before it could bind it (mariadbd,
/// Galera and HAProxy all quote the system's message).
pub(crate) const ADDRESS_IN_USE: &str = "Address already in use";

/// Size of the buffer for one `/etc/passwd` entry.
const PASSWD_BUFFER_BYTES: usize = 16 * 1024;

pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The `--user` a private server is started with: [`SERVER_USER`] when running as root, none
/// otherwise (the server then runs as the test's own user).
pub(crate) fn server_user() -> Option<&'static str> {
    running_as_root().then_some(SERVER_USER)
}

/// Gives `path` to [`SERVER_USER`] when running as root, so the server can write its logs,
/// socket and data there; a no-op otherwise.
pub(crate) fn give_to_server_user(path: &Path) -> io::Result<()> {
    let Some(user) = server_user() else {
        return Ok(());
    };
    let (uid, gid) = user_ids(user)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|error| with_context(error, &format!("give {} to user {user}", path.display())))
}

/// Creates `path` (and its parents) and gives it to the server's user.
pub(crate) fn create_server_directory(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|error| with_context(error, &format!("create {}", path.display())))?;
    give_to_server_user(path)
}

fn user_ids(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let c_name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: passwd is plain data; getpwnam_r fills it in and points its strings into `buffer`,
    // which outlives every use (only the numeric ids are read).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; PASSWD_BUFFER_BYTES];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buffer.len()` is its real length.
    let status = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 {
        return Err(with_context(
            io::Error::from_raw_os_error(status),
            &format!("look up user {name}"),
        ));
    }
    if found.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "there is no user {name} to run the private servers as (install mariadb-server)"
            ),
        ));
    }
    Ok((entry.pw_uid, entry.pw_gid))
}

pub(crate) fn with_context(error: io::Error, context: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// One free `127.0.0.1` port; see [`free_ports`].
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `count` distinct ports that are free on `127.0.0.1` now. They are held together while chosen
/// (so they differ) and released on return: the server may still lose one to another process
/// before it binds it, which the callers detect in the server's log and retry.
pub(crate) fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let private_range = private_port_range();
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let listener = match &private_range {
            Some(range) => bind_random_port(range)?,
            None => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?,
        };
        held.push(listener);
    }
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// One attempt to start a server on a given port and wait until it is ready. Boxed and `Send`
/// rather than an async closure, whose future the compiler cannot yet prove `Send`: callers
/// spawn server starts as tasks.
pub(crate) type StartAttempt<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StartFailure>> + Send + 'a>>;

/// Runs `attempt` with a fresh free port until it does not fail with
/// [`StartFailure::PortTaken`], at most [`PORT_ATTEMPTS`] times.
pub(crate) async fn start_on_a_free_port<'a, T>(
    program: &str,
    mut attempt: impl FnMut(u16) -> StartAttempt<'a, T>,
) -> io::Result<T> {
    let mut last_port_clash = String::new();
    for _ in 0..PORT_ATTEMPTS {
        match attempt(free_port()?).await {
            Ok(started) => return Ok(started),
            Err(StartFailure::PortTaken(log_tail)) => last_port_clash = log_tail,
            Err(StartFailure::Other(error)) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "{program} could not bind a free port in {PORT_ATTEMPTS} attempts; last log:\n\
             {last_port_clash}"
        ),
    ))
}

/// The ports from [`PRIVATE_PORT_FLOOR`] up to the start of the ephemeral range, if that leaves
/// at least [`MIN_PRIVATE_PORTS`].
fn private_port_range() -> Option<Range<u16>> {
    let text = std::fs::read_to_string(EPHEMERAL_RANGE_FILE).ok()?;
    let ephemeral_low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let range = PRIVATE_PORT_FLOOR..ephemeral_low;
    (range.len() >= usize::from(MIN_PRIVATE_PORTS)).then_some(range)
}

fn bind_random_port(range: &Range<u16>) -> io::Result<TcpListener> {
    // A fresh RandomState per call has fresh keys: a cheap random number without a dependency.
    let random = RandomState::new();
    let width = u64::from(range.end - range.start);
    for attempt in 0..PORT_CANDIDATES {
        let offset = random.hash_one(attempt) % width;
        let port = range.start + u16::try_from(offset).expect("offset is below the range width");
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return Ok(listener);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port among {PORT_CANDIDATES} tried in {range:?}"),
    ))
}

/// The first of `candidates` that exists: a path containing `/` as is, a bare name on `$PATH`.
pub(crate) fn find_program(candidates: &[&str]) -> io::Result<String> {
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

/// The last `line_count` lines of the given files, concatenated (missing files are skipped).
pub(crate) fn files_tail(files: &[&Path], line_count: usize) -> String {
    let mut text = String::new();
    for file in files {
        if let Ok(bytes) = std::fs::read(file) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    last_lines(&text, line_count)
}

pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// A spawn request for the spawner thread, with where to send the child.
type SpawnRequest = (Command, oneshot::Sender<io::Result<Child>>);

/// A child process started by [`spawn_dying_with_process`] in a process group of its own, with
/// whatever it started (e.g. Galera's SST scripts and their `rsync` daemons). Dropping it SIGKILLs
/// the whole group and reaps the child: its ports are free once the drop returns.
pub(crate) struct ProcessGroup {
    /// The spawned process, leader of the group whose id is its pid.
    leader: Child,
}

/// Why an attempt to start a server failed.
pub(crate) enum StartFailure {
    /// Another process bound one of the server's ports first; the log tail says so.
    PortTaken(String),
    Other(io::Error),
}

impl ProcessGroup {
    /// `Ok` while the leader runs; once it has exited, why, from `log_tail` (the end of its log).
    pub(crate) fn ensure_running(
        &mut self,
        program: &str,
        log_tail: impl FnOnce() -> String,
    ) -> Result<(), StartFailure> {
        match self.leader.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let log_tail = log_tail();
                if log_tail.contains(ADDRESS_IN_USE) {
                    return Err(StartFailure::PortTaken(log_tail));
                }
                Err(StartFailure::Other(io::Error::other(format!(
                    "{program} exited ({status}) before it was ready; log:\n{log_tail}"
                ))))
            }
            Err(error) => Err(StartFailure::Other(with_context(
                error,
                &format!("check whether {program} runs"),
            ))),
        }
    }

    /// SIGKILLs the group and reaps the leader; its ports are free once this returns. Does
    /// nothing more once done.
    pub(crate) fn kill(&mut self) {
        // The group's id is the leader's pid, which cannot be reused while the leader is
        // unreaped. Once `ensure_running` has reaped it (an early exit), the group is not
        // signalled: what the leader left behind (an SST script) watches for its parent and exits.
        if not_yet_reaped(&self.leader)
            && let Ok(group) = libc::pid_t::try_from(self.leader.id())
        {
            // SAFETY: kill has no memory preconditions; a negative pid names the process group.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        // `Child::kill` does not signal a child it has already reaped.
        let _ = self.leader.kill();
        let _ = self.leader.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` as the leader of a new process group, so that the kernel kills it when the
/// test process dies, even by SIGKILL.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits, not the process, and
/// test harnesses and runtimes end threads long before the process. So children are spawned from
/// one thread that lives as long as the process.
pub(crate) async fn spawn_dying_with_process(mut command: Command) -> io::Result<ProcessGroup> {
    // SAFETY: the closure only calls setpgid and prctl, which are async-signal-safe, between
    // fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setpgid(0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
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
    let leader = child
        .await
        .map_err(|_| io::Error::other("spawner thread dropped the request"))??;
    Ok(ProcessGroup { leader })
}

/// Whether `child` is still running or an unreaped zombie (so its pid is still its own).
fn not_yet_reaped(child: &Child) -> bool {
    let pid: libc::id_t = child.id();
    // SAFETY: siginfo_t is plain data that waitid fills in; WNOWAIT leaves the child unreaped.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes for the duration of the call.
    let status = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    status == 0
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
