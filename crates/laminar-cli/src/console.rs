//! The terminal, shared by the threads that print rows (stdout) and the progress line
//! (stderr). One lock orders their writes, so on a terminal the progress line is wiped
//! before rows are printed and redrawn after, instead of being torn apart by them. Writers
//! to stderr never wait for a printer stuck on a blocked stdout: they skip the lock.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError, TryLockError};

/// ANSI: return to column 0 and clear to the end of the line.
const CLEAR_LINE: &str = "\r\x1b[K";

#[derive(Debug, Default)]
struct State {
    /// A progress line is on screen without a newline after it.
    progress_shown: bool,
    /// Writing to stdout failed (e.g. a closed pipe); rows are no longer printed.
    stdout_closed: bool,
}

impl State {
    fn wipe_progress(&mut self) {
        if self.progress_shown {
            // A failed write to stderr leaves nowhere to report it.
            let _ = std::io::stderr().write_all(CLEAR_LINE.as_bytes());
            self.progress_shown = false;
        }
    }
}

/// Serialized access to stdout and stderr.
#[derive(Debug)]
pub struct Console {
    stderr_is_terminal: bool,
    state: Mutex<State>,
}

impl Console {
    /// A console for this process's stdout and stderr.
    pub fn new() -> Self {
        Self {
            stderr_is_terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether stderr is a terminal (the progress line is redrawn in place).
    pub fn stderr_is_terminal(&self) -> bool {
        self.stderr_is_terminal
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A printer that panicked mid-write leaves nothing inconsistent behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state if no printer holds it right now (one may be blocked writing to stdout).
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Prints `text` (one or more lines) to stdout. Returns false once stdout is gone, so
    /// callers can stop formatting rows nobody will see.
    pub fn print(&self, text: &str) -> bool {
        let mut state = self.lock();
        if state.stdout_closed {
            return false;
        }
        state.wipe_progress();
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(text.as_bytes())
            .and_then(|()| {
                if text.ends_with('\n') {
                    Ok(())
                } else {
                    stdout.write_all(b"\n")
                }
            })
            .and_then(|()| stdout.flush());
        if written.is_err() {
            state.stdout_closed = true;
        }
        written.is_ok()
    }

    /// Prints a message line to stderr.
    pub fn message(&self, line: &str) {
        if let Some(mut state) = self.try_lock() {
            state.wipe_progress();
        }
        // A failed write to stderr leaves nowhere to report it.
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    /// Shows the progress line: redrawn in place on a terminal, appended otherwise. Skipped
    /// while a printer is writing rows; the next refresh shows it.
    pub fn progress(&self, line: &str) {
        let Some(mut state) = self.try_lock() else {
            return;
        };
        let mut stderr = std::io::stderr().lock();
        // A failed write to stderr leaves nowhere to report it.
        if self.stderr_is_terminal {
            let _ = write!(stderr, "{CLEAR_LINE}{line}");
            state.progress_shown = true;
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }

    /// Removes a progress line still on screen.
    pub fn clear_progress(&self) {
        if let Some(mut state) = self.try_lock() {
            state.wipe_progress();
        }
    }
}
