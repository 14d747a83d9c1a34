//! The process's stop signal: the first SIGINT or SIGTERM.

use std::future::Future;

/// Installs the SIGINT and SIGTERM handlers now, and returns what resolves on the first of
/// them. Installed at once rather than when first awaited: a SIGTERM that arrives between
/// "vigil listening" and the first poll would otherwise find the default handler and kill the
/// process without a graceful stop. Call it inside the runtime.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
        let mut terminate = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupt received");
        }
    }
}
