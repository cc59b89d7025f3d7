//! The streaming SQL statements and their parser: LaminarDB's DDL (`CREATE SOURCE | STREAM |
//! MATERIALIZED VIEW | SINK`, `DROP`, `SHOW`, `DESCRIBE`, `EXPLAIN`) is parsed here with
//! `sqlparser`'s tokenizer and expression/query parsers; everything else (`SELECT`, `INSERT`)
//! is handed to `sqlparser` as is. Statements print back as canonical SQL, which the catalog
//! stores.

mod asof;
mod ast;
mod ddl;
pub(crate) mod ddl_normalize;
mod flink_windows;
mod temporal;

pub(crate) use asof::{ASOF_JOIN_MARKER, ASOF_TOLERANCE};
pub use ddl_normalize::quote_ident;
pub(crate) use temporal::TEMPORAL_JOIN_MARKER;

pub use ast::{
    ConnectorSpec, CreateSink, CreateSource, Emit, ObjectKind, SinkInput, Statement, WatermarkSpec,
};

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Result, SqlError};

/// Parses one or more `;`-separated statements.
pub fn parse_statements(sql: &str) -> Result<Vec<Statement>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| syntax(ParserError::TokenizerError(e.to_string())))?;
    let tokens = temporal::rewrite(asof::rewrite(flink_windows::rewrite(tokens))?)?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        statements.push(ddl::parse_statement(&mut parser)?);
        if !parser.consume_token(&Token::SemiColon) && parser.peek_token().token != Token::EOF {
            let found = parser.peek_token();
            return Err(syntax(ParserError::ParserError(format!(
                "Expected: end of statement, found: {} at {}",
                found.token, found.span.start
            ))));
        }
    }
    Ok(statements)
}

pub(crate) fn syntax(error: ParserError) -> SqlError {
    let message = match error {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nests too deeply".to_string(),
    };
    SqlError::Syntax { message }
}
