//! The ASOF join spellings, rewritten on the token stream into an ordinary join whose `ON`
//! condition starts with the marker call `laminar_asof_join(..)`, which `sqlparser` parses
//! (it reads no `ASOF` join but Snowflake's) and the planner turns back into an ASOF join:
//!
//! - DuckDB: `ASOF [INNER | LEFT [OUTER]] JOIN r ON keys AND l.ts >= r.ts` becomes
//!   `[INNER | LEFT [OUTER]] JOIN r ON laminar_asof_join() AND keys AND l.ts >= r.ts`;
//! - Snowflake: `ASOF JOIN r MATCH_CONDITION (l.ts >= r.ts) [ON keys]` becomes `LEFT JOIN r
//!   ON laminar_asof_join(l.ts >= r.ts) [AND keys]` (a Snowflake ASOF join keeps unmatched
//!   left rows); `ASOF INNER JOIN ... MATCH_CONDITION (..)` drops them;
//! - `TOLERANCE INTERVAL '..'` ending either becomes `AND laminar_asof_tolerance = INTERVAL '..'`.
//!
//! The rewritten statement prints as SQL that parses back to itself, so the catalog stores it.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::error::{Result, SqlError};

/// The marker call opening the `ON` condition of a join written as an ASOF join.
pub(crate) const ASOF_JOIN_MARKER: &str = "laminar_asof_join";
/// The identifier a `TOLERANCE` clause is compared with in the `ON` condition.
pub(crate) const ASOF_TOLERANCE: &str = "laminar_asof_tolerance";

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Tokens that end a join clause when met outside parentheses.
pub(super) fn ends_join(token: &Token) -> bool {
    const WORDS: [&str; 15] = [
        "JOIN",
        "ASOF",
        "WHERE",
        "GROUP",
        "HAVING",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "FETCH",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "WINDOW",
        "QUALIFY",
        "EMIT",
    ];
    matches!(token, Token::Comma | Token::SemiColon | Token::EOF)
        || WORDS.iter().any(|w| is_word(token, w))
}

/// Rewrites every ASOF join in `tokens`.
pub(crate) fn rewrite(mut tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    loop {
        let positions: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
            .map(|(i, _)| i)
            .collect();
        let found = positions.iter().enumerate().position(|(k, &i)| {
            let qualified = k > 0 && tokens[positions[k - 1]].token == Token::Period;
            is_word(&tokens[i].token, "ASOF") && !qualified
        });
        let Some(asof) = found else {
            return Ok(tokens);
        };
        // Every pass turns one ASOF keyword into something else, so the loop ends.
        let edits = plan_edits(&tokens, &positions, asof)?;
        apply(&mut tokens, edits);
    }
}

/// A token replaced by others (none: blanked).
type Edit = (usize, Vec<Token>);

/// The edits turning the ASOF join whose `ASOF` keyword is significant token `asof`
/// into an ordinary join.
fn plan_edits(tokens: &[TokenWithSpan], positions: &[usize], asof: usize) -> Result<Vec<Edit>> {
    let token = |k: usize| positions.get(k).map_or(&Token::EOF, |&i| &tokens[i].token);
    let mut k = asof + 1;
    let mut written_kind = None;
    if is_word(token(k), "INNER") {
        written_kind = Some(false);
        k += 1;
    } else if is_word(token(k), "LEFT") {
        written_kind = Some(true);
        k += 1;
        if is_word(token(k), "OUTER") {
            k += 1;
        }
    }
    if !is_word(token(k), "JOIN") {
        return Err(syntax(
            tokens,
            positions,
            k,
            "JOIN after ASOF [INNER | LEFT [OUTER]]",
        ));
    }
    let condition = condition(tokens, positions, k + 1)?;
    if is_word(token(condition), "USING") {
        return Err(SqlError::Unsupported {
            construct: "ASOF JOIN ... USING (...); write ON l.key = r.key AND l.ts >= r.ts".into(),
            context: "ASOF JOIN".into(),
        });
    }
    let marker = || Token::make_word(ASOF_JOIN_MARKER, None);
    let mut edits: Vec<Edit> = Vec::new();
    let snowflake = is_word(token(condition), "MATCH_CONDITION");
    // DuckDB's ASOF JOIN drops unmatched left rows; Snowflake's keeps them.
    let outer = written_kind.unwrap_or(snowflake);
    let join_words = match (written_kind, outer) {
        (None, true) => vec![Token::make_keyword("LEFT")],
        _ => Vec::new(),
    };
    edits.push((positions[asof], join_words));
    let mut rest = condition + 1;
    if snowflake {
        if token(condition + 1) != &Token::LParen {
            return Err(syntax(
                tokens,
                positions,
                condition + 1,
                "( after MATCH_CONDITION",
            ));
        }
        let close = closing(tokens, positions, condition + 1).ok_or_else(|| {
            syntax(
                tokens,
                positions,
                positions.len(),
                ") closing MATCH_CONDITION (",
            )
        })?;
        edits.push((
            positions[condition],
            vec![Token::make_keyword("ON"), marker()],
        ));
        rest = close + 1;
        if is_word(token(rest), "ON") {
            edits.push((positions[rest], vec![Token::make_keyword("AND")]));
            rest += 1;
        }
    } else {
        edits.push((
            positions[condition],
            vec![
                Token::make_keyword("ON"),
                marker(),
                Token::LParen,
                Token::RParen,
                Token::make_keyword("AND"),
            ],
        ));
    }
    if let Some(tolerance) = tolerance(tokens, positions, rest) {
        edits.push((
            positions[tolerance],
            vec![
                Token::make_keyword("AND"),
                Token::make_word(ASOF_TOLERANCE, None),
                Token::Eq,
            ],
        ));
    }
    Ok(edits)
}

/// The significant index of the join condition's keyword (the first `ON`,
/// `MATCH_CONDITION` or `USING` outside parentheses from `from` on).
fn condition(tokens: &[TokenWithSpan], positions: &[usize], from: usize) -> Result<usize> {
    let token = |k: usize| positions.get(k).map_or(&Token::EOF, |&i| &tokens[i].token);
    let mut depth = 0_usize;
    for candidate in from..=positions.len() {
        let t = token(candidate);
        match t {
            Token::LParen => depth += 1,
            Token::RParen if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ if ["ON", "MATCH_CONDITION", "USING"]
                .iter()
                .any(|w| is_word(t, w)) =>
            {
                return Ok(candidate);
            }
            // The join clause ended without a condition.
            _ if matches!(t, Token::RParen) || ends_join(t) => {
                return Err(syntax(
                    tokens,
                    positions,
                    candidate,
                    "ON <keys AND time comparison> or MATCH_CONDITION (<time comparison>) after ASOF JOIN <table>",
                ));
            }
            _ => {}
        }
    }
    // `ends_join` holds for the EOF past the last token.
    Err(syntax(
        tokens,
        positions,
        positions.len(),
        "ON after ASOF JOIN <table>",
    ))
}

/// The significant index of the parenthesis closing the one at `open`.
fn closing(tokens: &[TokenWithSpan], positions: &[usize], open: usize) -> Option<usize> {
    let mut depth = 0_usize;
    for (k, &i) in positions.iter().enumerate().skip(open) {
        match tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// A `TOLERANCE INTERVAL` clause at depth 0 between `from` and the end of the join clause.
fn tolerance(tokens: &[TokenWithSpan], positions: &[usize], from: usize) -> Option<usize> {
    let mut depth = 0_usize;
    for k in from..positions.len() {
        let t = &tokens[positions[k]].token;
        match t {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => return None,
            Token::RParen => depth -= 1,
            _ if depth > 0 => {}
            _ if ends_join(t) => return None,
            _ if is_word(t, "TOLERANCE")
                && tokens[positions[k - 1]].token != Token::Period
                && positions
                    .get(k + 1)
                    .is_some_and(|&i| is_word(&tokens[i].token, "INTERVAL")) =>
            {
                return Some(k);
            }
            _ => {}
        }
    }
    None
}

/// Applies `edits` (each replacing one token), keeping each replaced token's position for
/// the tokens put in its place.
fn apply(tokens: &mut Vec<TokenWithSpan>, mut edits: Vec<Edit>) {
    // From the last token back, so earlier indices stay valid.
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
    for (index, replacement) in edits {
        let span = tokens[index].span;
        let replacement: Vec<TokenWithSpan> = if replacement.is_empty() {
            vec![Token::Whitespace(Whitespace::Space)]
        } else {
            replacement
        }
        .into_iter()
        .map(|token| TokenWithSpan { token, span })
        .collect();
        tokens.splice(index..=index, replacement);
    }
}

fn syntax(tokens: &[TokenWithSpan], positions: &[usize], k: usize, expected: &str) -> SqlError {
    let (found, at) = positions.get(k).map_or_else(
        || ("end of statement".to_string(), String::new()),
        |&i| {
            (
                tokens[i].token.to_string(),
                // A location prints as " at Line: L, Column: C".
                tokens[i].span.start.to_string(),
            )
        },
    );
    SqlError::Syntax {
        message: format!("Expected: {expected}, found: {found}{at}"),
    }
}
