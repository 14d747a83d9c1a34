//! Logging: tracing to stderr, human text by default, JSON lines with `VIGIL_LOG_FORMAT=json`;
//! the filter comes from `RUST_LOG` (default `info`).

// Unsafe: one libc call with no safe wrapper in std (see its comment below).
#![allow(unsafe_code)]

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// Colour only for a person at a terminal: a log redirected to a file or a collector gets
/// plain text, and `NO_COLOR` (set and not empty, as no-color.org says) turns it off anyway.
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

/// Raises the open-files soft limit to the hard limit, so connection count is bounded by
/// `VIGIL_MAX_CONNECTIONS` rather than by a conservative default of 1024. Returns the new
/// soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        Ok(0)
    }
}
