//! The `vigil` binary: read the configuration, start logging, run until SIGINT/SIGTERM.

use std::process::ExitCode;

use vigil_server::config::Config;
use vigil_server::{Application, shutdown, telemetry};

/// mimalloc: per-thread free lists suit a server that allocates small, short-lived buffers
/// on every request across worker threads, where glibc's malloc spends its time
/// consolidating free chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration problem (clap uses the same for bad flags).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let config = Config::from_env_and_args();
    telemetry::init(config.telemetry.log_format);
    if config.store.database_url.is_none()
        && let Err(problem) = config.store.resolved_data_dir()
    {
        tracing::error!("{problem}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match telemetry::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config, "starting vigil");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http.worker_threads())
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let application = Application::build(config).await?;
        application.run_until_stopped(shutdown::signal()).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            if is_bad_setting(&error) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether start-up failed on something the user must change (exit 2, like a bad flag) rather
/// than on a failure that may pass (exit 1).
fn is_bad_setting(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<vigil_server::BadSetting>()
            || cause
                .downcast_ref::<vigil_store::StoreError>()
                .is_some_and(vigil_store::StoreError::is_bad_setting)
    })
}
