//! Splitting SQL text into statements by position, for `run` (which reports the line of a
//! failing statement and executes them one by one) and `repl` (which must know when a
//! multi-line statement is complete). This is lexical only: it knows `;`, quotes and
//! comments, never SQL grammar; parsing stays in the database. Dollar-quoted strings are not
//! recognised, so a `;` inside one splits the statement (the parser then reports an error).

/// One statement of a script: its source text without the closing `;`, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    /// The text from the statement's first token up to (not including) its `;`.
    pub text: String,
    /// 1-based line of the statement's first token.
    pub line: usize,
    /// 1-based column (in characters) of the statement's first token.
    pub column: usize,
}

impl ScriptStatement {
    /// The text preceded by blank lines and spaces so that positions the parser reports
    /// (`Line: L, Column: C`) are positions in the whole script.
    pub fn positioned_text(&self) -> String {
        let mut padded = String::with_capacity(self.line + self.column + self.text.len());
        padded.extend(std::iter::repeat_n('\n', self.line.saturating_sub(1)));
        padded.extend(std::iter::repeat_n(' ', self.column.saturating_sub(1)));
        padded.push_str(&self.text);
        padded
    }
}

/// Where the lexer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    /// Inside `'...'`; a doubled `''` closes and reopens, which needs no special case.
    SingleQuoted,
    /// Inside `"..."` (a quoted identifier).
    DoubleQuoted,
    /// Inside `` `...` `` (a quoted identifier in MySQL spelling).
    BackQuoted,
    /// After `--`, until the end of the line.
    LineComment,
    /// Inside `/* ... */`, nesting depth.
    BlockComment(usize),
}

/// A scan of SQL text: statement boundaries and the state at the end.
struct Scan {
    statements: Vec<ScriptStatement>,
    end_state: State,
    /// The last character outside comments and whitespace was a `;` in code.
    ends_with_semicolon: bool,
}

fn scan(sql: &str) -> Scan {
    let mut statements = Vec::new();
    let mut state = State::Code;
    let mut start: Option<(usize, usize, usize)> = None; // (byte offset, line, column)
    let mut ends_with_semicolon = false;
    let (mut line, mut column) = (1, 1);
    let mut chars = sql.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let (here_line, here_column) = (line, column);
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
        match state {
            State::Code => {
                if c.is_whitespace() {
                    continue;
                }
                if c == '-' && next == Some('-') {
                    state = State::LineComment;
                    continue;
                }
                if c == '/' && next == Some('*') {
                    chars.next();
                    column += 1;
                    state = State::BlockComment(1);
                    continue;
                }
                if c == ';' {
                    ends_with_semicolon = true;
                    if let Some((from, line, column)) = start.take() {
                        statements.push(ScriptStatement {
                            text: sql[from..offset].trim_end().to_string(),
                            line,
                            column,
                        });
                    }
                    continue;
                }
                ends_with_semicolon = false;
                if start.is_none() {
                    start = Some((offset, here_line, here_column));
                }
                state = match c {
                    '\'' => State::SingleQuoted,
                    '"' => State::DoubleQuoted,
                    '`' => State::BackQuoted,
                    _ => State::Code,
                };
            }
            State::SingleQuoted if c == '\'' => state = State::Code,
            State::DoubleQuoted if c == '"' => state = State::Code,
            State::BackQuoted if c == '`' => state = State::Code,
            State::LineComment if c == '\n' => state = State::Code,
            State::BlockComment(depth) => {
                if c == '*' && next == Some('/') {
                    chars.next();
                    column += 1;
                    state = if depth == 1 {
                        State::Code
                    } else {
                        State::BlockComment(depth - 1)
                    };
                } else if c == '/' && next == Some('*') {
                    chars.next();
                    column += 1;
                    state = State::BlockComment(depth + 1);
                }
            }
            State::SingleQuoted | State::DoubleQuoted | State::BackQuoted | State::LineComment => {}
        }
    }
    if let Some((from, line, column)) = start {
        statements.push(ScriptStatement {
            text: sql[from..].trim_end().to_string(),
            line,
            column,
        });
    }
    Scan {
        statements,
        end_state: state,
        ends_with_semicolon,
    }
}

/// The statements of a script, in order. Text after the last `;` is a statement too, and
/// stretches holding only whitespace and comments are none.
pub fn split(sql: &str) -> Vec<ScriptStatement> {
    scan(sql).statements
}

/// Whether `buffer` ends a statement: its last token is a `;` outside quotes and comments
/// (a trailing `-- comment` does not matter).
pub fn is_complete(buffer: &str) -> bool {
    let scan = scan(buffer);
    scan.ends_with_semicolon && matches!(scan.end_state, State::Code | State::LineComment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<(String, usize, usize)> {
        split(sql)
            .into_iter()
            .map(|s| (s.text, s.line, s.column))
            .collect()
    }

    #[test]
    fn splits_statements_with_their_positions() {
        let sql = "-- setup\nCREATE SOURCE s (a BIGINT);\n\n  SELECT 1;SELECT 2\n";
        assert_eq!(
            texts(sql),
            vec![
                ("CREATE SOURCE s (a BIGINT)".to_string(), 2, 1),
                ("SELECT 1".to_string(), 4, 3),
                ("SELECT 2".to_string(), 4, 12),
            ]
        );
    }

    #[test]
    fn semicolons_in_quotes_and_comments_do_not_split() {
        let sql = "SELECT 'a;b', \"c;d\" /* x; /* nested; */ y; */ FROM t -- z;\n;";
        let statements = split(sql);
        assert_eq!(statements.len(), 1);
        assert!(statements[0].text.ends_with("-- z;"));
    }

    #[test]
    fn doubled_quotes_stay_inside_the_string() {
        assert_eq!(split("SELECT 'it''s;'; SELECT 2;").len(), 2);
    }

    #[test]
    fn comments_alone_are_no_statement() {
        assert!(split("-- nothing\n/* at all; */\n;;").is_empty());
    }

    #[test]
    fn positioned_text_keeps_script_positions() {
        let statement = &split("SELECT 1;\n  SELECT 2;")[1];
        assert_eq!(statement.positioned_text(), "\n  SELECT 2");
    }

    #[test]
    fn completeness_needs_a_final_semicolon_in_code() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1;  -- done"));
        assert!(is_complete("SELECT\n 1\n;\n"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1 /* ; */"));
        assert!(!is_complete("SELECT 1; SELECT 2"));
        assert!(!is_complete(""));
    }
}
