//! Flink's window table-function spelling, `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))`,
//! rewritten on the token stream to `TUMBLE(t, ts, size)` (which `sqlparser` does not parse
//! otherwise), so Flink queries run with no change of spelling. String literals and
//! identifiers that merely look alike are untouched: only this exact token shape changes.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

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
pub(crate) fn rewrite(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
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
