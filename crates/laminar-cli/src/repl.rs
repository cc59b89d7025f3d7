//! `laminardb repl`: an interactive SQL shell. Lines accumulate until the statement ends
//! with `;` (outside quotes and comments), then run; results print as tables, other
//! statements as a one-line confirmation, errors as `error: ...` without leaving the shell.
//! History is kept in `~/.laminardb_history` when `HOME` is set.

use std::path::PathBuf;

use laminar_db::{ExecuteResult, LaminarDB};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::error::CliError;
use crate::script;
use crate::table;

/// Prompt for the first line of a statement.
const PROMPT: &str = "laminardb> ";
/// Prompt for the following lines of a statement.
const CONTINUATION_PROMPT: &str = "      -> ";
/// History file name inside `HOME`.
const HISTORY_FILE: &str = ".laminardb_history";

const HELP: &str = "\
Statements end with ';' and may span several lines.

  CREATE SOURCE name (column TYPE, ... [, WATERMARK FOR column AS column - INTERVAL '1' SECOND])
                [FROM connector (option = 'value', ...)]
  CREATE STREAM name AS SELECT ...
  CREATE MATERIALIZED VIEW name AS SELECT ...
  CREATE SINK name INTO connector (option = 'value', ...) AS SELECT ... | FROM name
  INSERT INTO source VALUES (...), (...)
  SELECT ... FROM view              a snapshot of materialized views
  SHOW SOURCES | STREAMS | MATERIALIZED VIEWS | SINKS
  DESCRIBE name
  EXPLAIN CREATE STREAM ... | EXPLAIN SELECT ...
  DROP SOURCE | STREAM | MATERIALIZED VIEW | SINK [IF EXISTS] name

  \\help                            this text
  \\q, quit, exit or Ctrl-D         leave the shell
  Ctrl-C                           abandon the statement being typed";

/// Options of `repl`.
#[derive(Debug, Clone)]
pub struct ReplOptions {
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Keep the catalog in this directory instead of in memory.
    pub data_dir: Option<PathBuf>,
}

/// A line that is a shell command rather than SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Quit,
    Help,
}

fn command(line: &str) -> Option<Command> {
    match line.trim().trim_end_matches(';').trim() {
        "\\q" | "quit" | "exit" => Some(Command::Quit),
        "\\help" | "\\h" | "\\?" | "help" => Some(Command::Help),
        _ => None,
    }
}

/// Runs the shell until the user leaves.
pub fn repl(options: &ReplOptions) -> Result<(), CliError> {
    let db = crate::run::open_database(options.workers, options.data_dir.as_deref())?;
    let mut editor = DefaultEditor::new()
        .map_err(|e| CliError::environment("cannot start the line editor", e))?;
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(HISTORY_FILE));
    if let Some(path) = &history {
        // A missing or unreadable history only means starting without one.
        let _ = editor.load_history(path);
    }
    eprintln!(
        "LaminarDB {} shell: statements end with ';'. \\help for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );

    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            PROMPT
        } else {
            CONTINUATION_PROMPT
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if buffer.is_empty() {
                    match command(&line) {
                        Some(Command::Quit) => break,
                        Some(Command::Help) => {
                            println!("{HELP}");
                            continue;
                        }
                        None if line.trim().is_empty() => continue,
                        None => {}
                    }
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if script::is_complete(&buffer) {
                    // History is a convenience; failing to record an entry changes nothing.
                    let _ = editor.add_history_entry(buffer.trim_end());
                    execute(&db, &buffer);
                    buffer.clear();
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::environment("cannot read input", e)),
        }
    }
    if let Some(path) = &history {
        // Not saving history must not turn a normal exit into a failure.
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Runs every statement of `input` in order, stopping at the first error.
fn execute(db: &LaminarDB, input: &str) {
    for statement in script::split(input) {
        match db.execute(&statement.positioned_text()) {
            Ok(result) => print_result(&result),
            Err(e) => {
                eprintln!("error: {e}");
                return;
            }
        }
    }
}

fn print_result(result: &ExecuteResult) {
    match result {
        ExecuteResult::Rows { schema, batches } => match table::result(schema, batches) {
            Ok(text) => println!("{text}\n{}", result.message()),
            Err(e) => eprintln!("error: cannot format the result: {e}"),
        },
        _ => println!("{}", result.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_are_recognised() {
        assert_eq!(command("\\q"), Some(Command::Quit));
        assert_eq!(command(" quit; "), Some(Command::Quit));
        assert_eq!(command("exit"), Some(Command::Quit));
        assert_eq!(command("\\help"), Some(Command::Help));
        assert_eq!(command("SELECT 1;"), None);
        assert_eq!(command("quitting"), None);
    }
}
