//! Live rows of a stream or view on stdout: one thread per subscription waits for change
//! batches and prints them as tables headed by the object's name, so a slow terminal never
//! holds up the progress loop (the subscription's bounded channel slows the pipeline down
//! instead, which is the engine's backpressure).

use std::sync::Arc;
use std::thread::JoinHandle;

use laminar_db::{ChangeBatch, Subscription};

use crate::console::Console;
use crate::error::CliError;
use crate::table;

/// Rows gathered from batches that are already waiting before one table is printed: large
/// enough that a fast stream prints few headers, small enough to keep output live.
const PRINT_ROWS_MAX: usize = 4_096;

/// A thread printing one subscription until its stream ends.
#[derive(Debug)]
pub struct Printer {
    name: String,
    thread: JoinHandle<()>,
}

impl Printer {
    /// Starts printing `subscription`.
    pub fn spawn(mut subscription: Subscription, console: Arc<Console>) -> Result<Self, CliError> {
        let name = subscription.name().to_string();
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("print-{name}"))
            .spawn(move || {
                let mut printing = true;
                while let Some(first) = subscription.next_blocking() {
                    let mut batches = vec![first];
                    let mut rows = batches[0].num_rows();
                    while rows < PRINT_ROWS_MAX {
                        let Some(next) = subscription.try_next() else {
                            break;
                        };
                        rows += next.num_rows();
                        batches.push(next);
                    }
                    // Once stdout is gone the subscription is still drained, so the pipeline
                    // is not held up by rows nobody reads.
                    if printing {
                        printing = print(&thread_name, &batches, &console);
                    }
                }
            })
            .map_err(|e| CliError::environment("cannot start a printing thread", e))?;
        Ok(Self { name, thread })
    }

    /// The stream or view printed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until every row was printed; returns only once the stream has ended.
    pub fn join(self) {
        // The thread's body cannot panic on user data; a panic there would already have
        // been reported by the default hook, so there is nothing more to say.
        let _ = self.thread.join();
    }
}

fn print(name: &str, batches: &[ChangeBatch], console: &Console) -> bool {
    match table::changes(batches) {
        Ok(text) => console.print(&format!("{name}\n{text}")),
        Err(e) => {
            console.message(&format!("error: cannot format rows of {name}: {e}"));
            true
        }
    }
}
