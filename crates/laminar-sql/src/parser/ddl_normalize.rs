//! Identifier normalization shared by the parser and planner: unquoted names are lower-cased
//! (as DataFusion does), and names print back quoted only when they need it.

use datafusion::sql::sqlparser::ast::Ident;

/// Normalizes an identifier the way DataFusion does: unquoted names are lower-cased.
pub(crate) fn normalize_ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Quotes a normalized name when reading it back unquoted would change it.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
