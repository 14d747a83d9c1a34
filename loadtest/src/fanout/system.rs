//! What the measurer asks of the operating system: where the server is (loopback only), more
//! file descriptors, its own CPU time, and the server's resident memory.

// Unsafe: libc calls with no safe wrapper in std (file descriptor limits, own CPU time).
#![allow(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The server under test: an address on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header: the authority as given.
    pub authority: String,
}

impl Target {
    /// Parses `http://host:port` (port 80 when omitted) and refuses any host that resolves to
    /// an address off this machine: the measurer is a load generator and only ever loads
    /// loopback.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("host {url:?}: only http:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(format!("host {url:?} has no host name"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|error| format!("host {url:?} does not resolve: {error}"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            return Err(format!("host {url:?} resolves to no address"));
        };
        if let Some(remote) = addrs.iter().find(|addr| !addr.ip().is_loopback()) {
            return Err(format!(
                "host {url:?} resolves to {remote}, which is not a loopback address; \
                 the measurer only loads servers on this machine"
            ));
        }
        Ok(Target {
            addr,
            authority: authority.to_owned(),
        })
    }
}

/// Raises the soft limit on open files to the hard limit, so that 10,000+ sockets fit, and
/// returns the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit with the soft limit at most the hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// CPU time (user + system) this process has used so far, all threads.
pub fn process_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for getrusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |value: libc::timeval| {
        Duration::from_secs(value.tv_sec as u64) + Duration::from_micros(value.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time (user + system, all threads) process `pid` has used so far: fields 14 and 15 of
/// `/proc/PID/stat`, in clock ticks.
pub fn cpu_time_of(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no CPU times"),
        )
    })?;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_s))
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no VmRSS line"),
        )
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (vigil (worker) 1) S 1 4242 4242 0 -1 4194560 9000 0 0 0 \
                    1234 567 0 0 20 0 4 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("4242 (vigil) S 1"), None);
        let own = cpu_time_of(std::process::id()).expect("this process's stat");
        assert!(own <= process_cpu_time() + Duration::from_millis(50));
    }

    #[test]
    fn loopback_hosts_are_accepted() {
        let target = Target::parse("http://127.0.0.1:3950").unwrap();
        assert_eq!(target.addr, "127.0.0.1:3950".parse().unwrap());
        assert_eq!(target.authority, "127.0.0.1:3950");
        assert_eq!(Target::parse("http://127.0.0.1/").unwrap().addr.port(), 80);
        assert_eq!(
            Target::parse("http://[::1]:3000").unwrap().addr,
            "[::1]:3000".parse().unwrap()
        );
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:3000",
            "http://192.168.1.2:80",
            "http://8.8.8.8",
            "https://127.0.0.1:3000",
            "127.0.0.1:3000",
            "http://",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        assert_eq!(
            parse_vm_rss("Name:\tvigil\nVmRSS:\t   12345 kB\nThreads: 4\n"),
            Some(12_345)
        );
        assert_eq!(parse_vm_rss("Name:\tvigil\n"), None);
    }
}
