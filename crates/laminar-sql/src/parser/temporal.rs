//! `FOR SYSTEM_TIME AS OF expr` after a joined table (Flink's and RisingWave's temporal join
//! spelling, which `sqlparser` reads only in dialects LaminarDB does not use), rewritten on
//! the token stream: the clause goes, and the join's `ON` condition starts with the marker
//! call `laminar_temporal_join(expr) AND ...`, which the planner turns into a temporal join
//! (`PROCTIME()`: a lookup join) once it knows the table. The rewritten statement prints as
//! SQL that parses back to itself, so the catalog stores it.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use super::asof::ends_join;
use crate::error::{Result, SqlError};

/// The marker call opening the `ON` condition of a join written with `FOR SYSTEM_TIME AS OF`.
pub(crate) const TEMPORAL_JOIN_MARKER: &str = "laminar_temporal_join";

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Words that continue an expression after a complete operand.
const CONTINUING: [&str; 12] = [
    "AND", "OR", "IS", "NOT", "IN", "BETWEEN", "LIKE", "AT", "TIME", "ZONE", "NULL", "ESCAPE",
];

/// Rewrites every `FOR SYSTEM_TIME AS OF` clause in `tokens`.
pub(crate) fn rewrite(mut tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    loop {
        let positions: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
            .map(|(i, _)| i)
            .collect();
        let token = |k: usize| positions.get(k).map_or(&Token::EOF, |&i| &tokens[i].token);
        let found = (0..positions.len()).find(|&k| {
            is_word(token(k), "FOR")
                && is_word(token(k + 1), "SYSTEM_TIME")
                && is_word(token(k + 2), "AS")
                && is_word(token(k + 3), "OF")
        });
        let Some(start) = found else {
            return Ok(tokens);
        };
        let expr_start = start + 4;
        let expr_end = expression_end(&tokens, &positions, expr_start);
        if expr_end == expr_start {
            return Err(syntax("an expression after FOR SYSTEM_TIME AS OF"));
        }
        let on = (expr_end..positions.len())
            .find(|&k| is_word(token(k), "ON") || ends_join(token(k)))
            .filter(|&k| is_word(token(k), "ON"))
            .ok_or_else(|| {
                syntax("ON <condition> after JOIN <table> FOR SYSTEM_TIME AS OF <time>")
            })?;
        let expression: Vec<Token> = (expr_start..expr_end).map(|k| token(k).clone()).collect();
        let mut replacement = vec![
            Token::make_keyword("ON"),
            Token::make_word(TEMPORAL_JOIN_MARKER, None),
            Token::LParen,
        ];
        replacement.extend(expression);
        replacement.extend([Token::RParen, Token::make_keyword("AND")]);
        let span = tokens[positions[on]].span;
        let on_index = positions[on];
        tokens.splice(
            on_index..=on_index,
            replacement
                .into_iter()
                .map(|token| TokenWithSpan { token, span }),
        );
        // Every pass removes one FOR SYSTEM_TIME AS OF, so the loop ends.
        for k in (start..expr_end).rev() {
            let index = positions[k];
            tokens[index].token = Token::Whitespace(Whitespace::Space);
        }
    }
}

/// The significant index just past the expression starting at `from`: it ends at a
/// parenthesis it did not open, at `AS`/`ON` or a word ending a join clause, or at a word
/// directly after a complete operand (the table's alias).
fn expression_end(tokens: &[TokenWithSpan], positions: &[usize], from: usize) -> usize {
    let token = |k: usize| positions.get(k).map_or(&Token::EOF, |&i| &tokens[i].token);
    let mut depth = 0_usize;
    for k in from..positions.len() {
        let t = token(k);
        match t {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => return k,
            Token::RParen => depth -= 1,
            _ if depth > 0 => {}
            _ if is_word(t, "AS") || is_word(t, "ON") || ends_join(t) => return k,
            Token::Word(_) if k > from => {
                let operand = matches!(
                    token(k - 1),
                    Token::Word(_) | Token::RParen | Token::Number(..)
                );
                if operand && !CONTINUING.iter().any(|w| is_word(t, w)) {
                    return k;
                }
            }
            _ => {}
        }
    }
    positions.len()
}

fn syntax(expected: &str) -> SqlError {
    SqlError::Syntax {
        message: format!("Expected: {expected}"),
    }
}
