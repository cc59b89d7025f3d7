//! Flink's window table-function spelling, `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))`,
//! rewritten on the token stream to `TUMBLE(t, ts, size)` (which `sqlparser` does not parse
//! otherwise), so Flink queries run with no change of spelling. String literals and
//! identifiers that merely look alike are untouched: only this exact token shape changes.
//! `SESSION(TABLE t PARTITION BY k, ...)` keeps its partition as a pseudo-argument,
//! `SESSION(t, partition_by(k), ...)`, which the window rewrite checks against `GROUP BY`.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::windows::PARTITION_BY;

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Indices of the tokens that are not whitespace or comments.
fn significant(tokens: &[TokenWithSpan]) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect()
}

/// Rewrites every Flink window table function in `tokens`.
pub(crate) fn rewrite(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut tokens = session_partitions(tokens);
    loop {
        let positions = significant(&tokens);
        let found = positions.windows(5).position(|w| {
            is_word(&tokens[w[0]].token, "TABLE")
                && tokens[w[1]].token == Token::LParen
                && ["TUMBLE", "HOP", "SESSION"]
                    .iter()
                    .any(|f| is_word(&tokens[w[2]].token, f))
                && tokens[w[3]].token == Token::LParen
                && is_word(&tokens[w[4]].token, "TABLE")
        });
        let Some(start) = found else {
            return tokens;
        };
        // The parenthesis closing `TABLE(`: depth counted from the one after TABLE.
        let open = start + 1;
        let mut depth = 0;
        let mut close = None;
        for (k, &index) in positions.iter().enumerate().skip(open) {
            match tokens[index].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(k);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else {
            return tokens;
        };
        let mut drop: Vec<usize> = vec![
            positions[start],
            positions[open],
            positions[start + 4],
            positions[close],
        ];
        // DESCRIPTOR ( column ) inside the call becomes column.
        for k in (start + 4)..close.saturating_sub(3) {
            if is_word(&tokens[positions[k]].token, "DESCRIPTOR")
                && tokens[positions[k + 1]].token == Token::LParen
                && tokens[positions[k + 3]].token == Token::RParen
            {
                drop.extend([positions[k], positions[k + 1], positions[k + 3]]);
            }
        }
        for index in drop {
            // Blanked rather than removed, so spans of later tokens keep their meaning.
            tokens[index].token = Token::Whitespace(Whitespace::Space);
        }
    }
}

/// In `TABLE(SESSION(TABLE t [PARTITION BY keys], ...))`, turns the partition clause into
/// the pseudo-argument `, partition_by(keys)` after `t` (empty without the clause), so the
/// call parses and its partition can be checked.
fn session_partitions(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let positions = significant(&tokens);
    let starts: Vec<usize> = positions
        .windows(6)
        .enumerate()
        .filter(|(_, w)| {
            is_word(&tokens[w[0]].token, "TABLE")
                && tokens[w[1]].token == Token::LParen
                && is_word(&tokens[w[2]].token, "SESSION")
                && tokens[w[3]].token == Token::LParen
                && is_word(&tokens[w[4]].token, "TABLE")
                && matches!(tokens[w[5]].token, Token::Word(_))
        })
        .map(|(k, _)| k)
        .collect();
    // From the last call back, so earlier token indices stay valid while inserting.
    for start in starts.into_iter().rev() {
        let table = positions[start + 5];
        let partition = positions.get(start + 6..start + 8).filter(|pair| {
            is_word(&tokens[pair[0]].token, "PARTITION") && is_word(&tokens[pair[1]].token, "BY")
        });
        let Some(&[partition, by]) = partition else {
            let inserted = [
                Token::Comma,
                Token::make_word(PARTITION_BY, None),
                Token::LParen,
                Token::RParen,
            ];
            tokens.splice(
                (table + 1)..=table,
                inserted.into_iter().map(TokenWithSpan::wrap),
            );
            continue;
        };
        // The keys end at the first comma outside parentheses.
        let mut depth = 0_i32;
        let mut end = None;
        for (index, token) in tokens.iter().enumerate().skip(by + 1) {
            match token.token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            continue;
        };
        tokens.insert(end, TokenWithSpan::wrap(Token::RParen));
        tokens.insert(by + 1, TokenWithSpan::wrap(Token::LParen));
        tokens[by].token = Token::make_word(PARTITION_BY, None);
        tokens[partition].token = Token::Comma;
    }
    tokens
}
