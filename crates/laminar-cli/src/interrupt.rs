//! Ctrl-C for `run`: the first one asks the pipeline to stop (the command then shuts the
//! database down cleanly and exits 0); a second one exits at once, in case shutting down
//! hangs. Signals are caught by a one-thread tokio runtime that lives as long as the handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::CliError;

/// Exit status after a second Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED_TWICE: i32 = 130;

/// Whether Ctrl-C was pressed since [`Interrupt::install`].
#[derive(Debug)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl Interrupt {
    /// Starts catching Ctrl-C.
    pub fn install() -> Result<Self, CliError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("laminardb-signal")
            .enable_all()
            .build()
            .map_err(|e| CliError::environment("cannot start the signal handler", e))?;
        let requested = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&requested);
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                // No signal handling on this platform: Ctrl-C keeps its default effect.
                return;
            }
            flag.store(true, Ordering::Release);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EXIT_INTERRUPTED_TWICE);
            }
        });
        Ok(Self {
            requested,
            _runtime: runtime,
        })
    }

    /// Whether Ctrl-C was pressed.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}
