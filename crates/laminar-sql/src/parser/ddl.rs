//! Recursive-descent parsing of LaminarDB's statements over `sqlparser`'s token stream;
//! standard SQL (`SELECT`, `INSERT`) is delegated to `sqlparser`, other statements are an
//! `Unsupported` error naming them.

use datafusion::sql::sqlparser::ast::{
    ColumnOption, Ident, ObjectName, Query, SetExpr, Statement as SqlStatement, TableFactor, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{IsOptional, Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::ast::{
    ConnectorSpec, CreateSink, CreateSource, Emit, ObjectKind, SinkInput, Statement, WatermarkSpec,
};
use super::ddl_normalize::normalize_ident;
use super::syntax;
use crate::error::{Result, SqlError};

/// The word at lookahead `n`, upper case, if it is an unquoted word.
fn word(parser: &Parser<'_>, n: usize) -> Option<String> {
    match parser.peek_nth_token(n).token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
        _ => None,
    }
}

fn words_are(parser: &Parser<'_>, expected: &[&str]) -> bool {
    expected
        .iter()
        .enumerate()
        .all(|(i, e)| word(parser, i).as_deref() == Some(*e))
}

fn advance(parser: &mut Parser<'_>, count: usize) {
    for _ in 0..count {
        parser.next_token();
    }
}

fn unsupported(construct: impl Into<String>, context: impl Into<String>) -> SqlError {
    SqlError::Unsupported {
        construct: construct.into(),
        context: context.into(),
    }
}

fn object_name(parser: &mut Parser<'_>) -> Result<String> {
    let name: ObjectName = parser.parse_object_name(false).map_err(syntax)?;
    let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
    match parts.as_slice() {
        [single] if name.0.len() == 1 => Ok(normalize_ident(single)),
        _ => Err(unsupported(
            format!("qualified name {name} (schemas and catalogs)"),
            "object name",
        )),
    }
}

fn if_not_exists(parser: &mut Parser<'_>) -> bool {
    parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS])
}

/// Parses one statement at the parser's position.
pub(crate) fn parse_statement(parser: &mut Parser<'_>) -> Result<Statement> {
    let first = word(parser, 0);
    match first.as_deref() {
        Some("CREATE") => parse_create(parser),
        Some("DROP") => parse_drop(parser),
        Some("SHOW") => parse_show(parser),
        Some("FLUSH") => {
            advance(parser, 1);
            Ok(Statement::Flush)
        }
        Some("CHECKPOINT") => {
            advance(parser, 1);
            Ok(Statement::Checkpoint)
        }
        Some("DESCRIBE" | "DESC") => {
            advance(parser, 1);
            Ok(Statement::Describe(object_name(parser)?))
        }
        Some("EXPLAIN") => {
            advance(parser, 1);
            let inner = parse_statement(parser)?;
            if matches!(inner, Statement::Explain(_)) {
                return Err(unsupported("EXPLAIN EXPLAIN", "EXPLAIN"));
            }
            Ok(Statement::Explain(Box::new(inner)))
        }
        _ => {
            let statement = parser.parse_statement().map_err(syntax)?;
            match statement {
                SqlStatement::Query(query) => Ok(Statement::Query(query)),
                SqlStatement::Insert(_) => Ok(Statement::Insert(Box::new(statement))),
                other => {
                    let text = other.to_string();
                    let construct: String = text
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    Err(unsupported(format!("statement {construct}"), text))
                }
            }
        }
    }
}

fn parse_create(parser: &mut Parser<'_>) -> Result<Statement> {
    if words_are(parser, &["CREATE", "SOURCE"]) {
        advance(parser, 2);
        return parse_create_source(parser, false);
    }
    if words_are(parser, &["CREATE", "TABLE"]) {
        advance(parser, 2);
        return parse_create_source(parser, true);
    }
    if words_are(parser, &["CREATE", "STREAM"]) {
        advance(parser, 2);
        let if_not_exists = if_not_exists(parser);
        let name = object_name(parser)?;
        let options = parse_query_options(parser, &format!("CREATE STREAM {name}"))?;
        parser.expect_keyword_is(Keyword::AS).map_err(syntax)?;
        let (query, emit) = parse_query_and_emit(parser)?;
        return Ok(Statement::CreateStream {
            name,
            if_not_exists,
            options,
            query,
            emit,
        });
    }
    if words_are(parser, &["CREATE", "MATERIALIZED", "VIEW"]) {
        advance(parser, 3);
        let if_not_exists = if_not_exists(parser);
        let name = object_name(parser)?;
        let options = parse_query_options(parser, &format!("CREATE MATERIALIZED VIEW {name}"))?;
        parser.expect_keyword_is(Keyword::AS).map_err(syntax)?;
        let (query, emit) = parse_query_and_emit(parser)?;
        return Ok(Statement::CreateMaterializedView {
            name,
            if_not_exists,
            options,
            query,
            emit,
        });
    }
    if words_are(parser, &["CREATE", "SINK"]) {
        advance(parser, 2);
        return parse_create_sink(parser);
    }
    let what = match word(parser, 1).as_deref() {
        Some("VIEW") => "CREATE VIEW (plain views); use CREATE MATERIALIZED VIEW or CREATE STREAM",
        Some("OR") => "CREATE OR REPLACE; DROP the object and create it again",
        _ => "",
    };
    if what.is_empty() {
        let statement = parser.parse_statement().map_err(syntax)?;
        let text = statement.to_string();
        let construct: String = text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        return Err(unsupported(format!("statement {construct}"), text));
    }
    Err(unsupported(what, "CREATE"))
}

/// sqlparser reads `FROM t EMIT ON WINDOW CLOSE` as table `t` aliased `EMIT`; when the
/// query's last table carries that alias and an emit clause follows, the alias was the clause.
fn take_emit_alias(query: &mut Query) -> bool {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let Some(from) = select.from.last_mut() else {
        return false;
    };
    let relation = match from.joins.last_mut() {
        Some(join) => &mut join.relation,
        None => &mut from.relation,
    };
    let (TableFactor::Table { alias, .. } | TableFactor::Derived { alias, .. }) = relation else {
        return false;
    };
    let is_emit = alias.as_ref().is_some_and(|a| {
        a.name.quote_style.is_none()
            && a.name.value.eq_ignore_ascii_case("emit")
            && a.columns.is_empty()
    });
    if is_emit {
        *alias = None;
    }
    is_emit
}

/// The query of `CREATE STREAM | MATERIALIZED VIEW` and its optional `EMIT` clause.
fn parse_query_and_emit(parser: &mut Parser<'_>) -> Result<(Box<Query>, Emit)> {
    let mut query = parser.parse_query().map_err(syntax)?;
    let follows_emit = matches!(
        word(parser, 0).as_deref(),
        Some("ON" | "AFTER" | "FINAL" | "CHANGES" | "EVERY")
    );
    if follows_emit && take_emit_alias(&mut query) {
        return Ok((query, parse_emit_rest(parser)?));
    }
    let emit = parse_emit(parser)?;
    Ok((query, emit))
}

/// The optional `EMIT` clause after a continuous query.
fn parse_emit(parser: &mut Parser<'_>) -> Result<Emit> {
    if word(parser, 0).as_deref() != Some("EMIT") {
        return Ok(Emit::Default);
    }
    advance(parser, 1);
    parse_emit_rest(parser)
}

/// The `EMIT` clause after its `EMIT` keyword.
fn parse_emit_rest(parser: &mut Parser<'_>) -> Result<Emit> {
    let close = Emit::OnWindowClose {
        allowed_lateness_ms: 0,
    };
    if words_are(parser, &["EVERY"]) {
        advance(parser, 1);
        let interval = parser.parse_expr().map_err(syntax)?;
        let interval_ms = crate::interval::interval_ms(&interval.to_string(), "EMIT EVERY")?;
        if words_are(parser, &["ALLOW", "LATENESS"]) {
            return Err(unsupported(
                "ALLOW LATENESS with EMIT EVERY (updates are never late)",
                "EMIT",
            ));
        }
        return Ok(Emit::Every { interval_ms });
    }
    let clauses: [(&[&str], Emit); 5] = [
        (&["ON", "WINDOW", "CLOSE"], close),
        (&["AFTER", "WATERMARK"], close),
        (&["FINAL"], close),
        (&["ON", "UPDATE"], Emit::OnUpdate),
        (&["CHANGES"], Emit::OnUpdate),
    ];
    for (words, emit) in clauses {
        if words_are(parser, words) {
            advance(parser, words.len());
            if words_are(parser, &["ALLOW", "LATENESS"]) {
                advance(parser, 2);
                let interval = parser.parse_expr().map_err(syntax)?;
                let allowed_lateness_ms =
                    crate::interval::interval_ms(&interval.to_string(), "ALLOW LATENESS")?;
                if emit == Emit::OnUpdate {
                    return Err(unsupported(
                        "ALLOW LATENESS without EMIT ON WINDOW CLOSE (updates are never late)",
                        "EMIT",
                    ));
                }
                return Ok(Emit::OnWindowClose {
                    allowed_lateness_ms,
                });
            }
            return Ok(emit);
        }
    }
    Err(syntax(ParserError::ParserError(format!(
        "Expected: EMIT ON WINDOW CLOSE, EMIT AFTER WATERMARK, EMIT FINAL, EMIT ON UPDATE, EMIT CHANGES or EMIT EVERY INTERVAL '..', found: {} at {}",
        parser.peek_token().token,
        parser.peek_token().span.start
    ))))
}

/// `PRIMARY KEY` as a column option: taken off the column and returned, so the canonical
/// SQL states the key once, as a table constraint.
fn take_primary_key(column: &mut datafusion::sql::sqlparser::ast::ColumnDef) -> bool {
    let before = column.options.len();
    column
        .options
        .retain(|o| !matches!(o.option, ColumnOption::PrimaryKey(_)));
    column.options.len() != before
}

/// `CREATE SOURCE` (`table` false) or `CREATE TABLE`: columns, `WATERMARK FOR`, and for a
/// table its `PRIMARY KEY`.
#[allow(
    clippy::too_many_lines,
    reason = "one clause after another, in the order they are written"
)]
fn parse_create_source(parser: &mut Parser<'_>, table: bool) -> Result<Statement> {
    let if_not_exists = if_not_exists(parser);
    let name = object_name(parser)?;
    let kind = if table { "TABLE" } else { "SOURCE" };
    let context = format!("CREATE {kind} {name}");
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key: Vec<String> = Vec::new();
    let mut set_key = |key: Vec<String>| {
        if !primary_key.is_empty() {
            return Err(SqlError::Invalid {
                context: context.clone(),
                message: "a table has one PRIMARY KEY".into(),
            });
        }
        primary_key = key;
        Ok(())
    };
    if parser.consume_token(&Token::LParen) {
        loop {
            if words_are(parser, &["PRIMARY", "KEY"]) {
                advance(parser, 2);
                let key = parser
                    .parse_parenthesized_column_list(IsOptional::Mandatory, false)
                    .map_err(syntax)?;
                set_key(key.iter().map(normalize_ident).collect())?;
            } else if words_are(parser, &["WATERMARK", "FOR"]) {
                let at = parser.peek_token().span.start;
                advance(parser, 2);
                let column = normalize_ident(&parser.parse_identifier().map_err(syntax)?);
                parser.expect_keyword_is(Keyword::AS).map_err(syntax)?;
                let expr = parser.parse_expr().map_err(syntax)?;
                let per_key = parse_per_key(parser, &name)?;
                if watermark.is_some() {
                    return Err(SqlError::Invalid {
                        context: format!("CREATE SOURCE {name}"),
                        message: format!("a source has at most one WATERMARK (second one at {at})"),
                    });
                }
                watermark = Some(WatermarkSpec {
                    column,
                    expr,
                    per_key,
                });
            } else if words_are(parser, &["PER", "KEY"]) {
                return Err(SqlError::Invalid {
                    context: format!("CREATE SOURCE {name}"),
                    message: "PER KEY belongs to a WATERMARK: write WATERMARK FOR ts AS \
                              ts - INTERVAL '..' PER KEY (column, ...)"
                        .into(),
                });
            } else {
                let mut column = parser.parse_column_def().map_err(syntax)?;
                if take_primary_key(&mut column) {
                    set_key(vec![normalize_ident(&column.name)])?;
                }
                columns.push(column);
            }
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser.expect_token(&Token::RParen).map_err(syntax)?;
            break;
        }
    }
    let connector = if parser.parse_keyword(Keyword::FROM) {
        Some(parse_connector(parser)?)
    } else {
        None
    };
    let options = if parser.parse_keyword(Keyword::WITH) {
        if let Some(connector) = &connector {
            return Err(SqlError::Invalid {
                context: format!("CREATE SOURCE {name}"),
                message: format!(
                    "a source read by a connector takes its options with the connector's: \
                     FROM {} (..., key = 'value')",
                    connector.name
                ),
            });
        }
        parse_options(parser, &format!("CREATE SOURCE {name}"))?
    } else {
        Vec::new()
    };
    let late_data_to = if words_are(parser, &["LATE", "DATA", "TO"]) {
        advance(parser, 3);
        let stream = object_name(parser)?;
        if watermark.is_none() {
            return Err(SqlError::Invalid {
                context: format!("CREATE SOURCE {name}"),
                message: format!(
                    "LATE DATA TO {stream} needs a WATERMARK: a row is late when its event time \
                     is behind the source's watermark"
                ),
            });
        }
        if stream == name {
            return Err(SqlError::Invalid {
                context: format!("CREATE SOURCE {name}"),
                message: "LATE DATA TO must name a stream other than the source".into(),
            });
        }
        if watermark.as_ref().is_some_and(|w| !w.per_key.is_empty()) {
            return Err(unsupported(
                "LATE DATA TO with a PER KEY watermark (each keyed view decides per key \
                 which rows are late)",
                format!("CREATE SOURCE {name}"),
            ));
        }
        Some(stream)
    } else {
        None
    };
    let create = Box::new(CreateSource {
        name,
        if_not_exists,
        columns,
        watermark,
        connector,
        options,
        late_data_to,
        primary_key,
    });
    finish_create(create, table, context)
}

/// A parsed `CREATE SOURCE` or `CREATE TABLE`, checked for what only one of them takes.
fn finish_create(create: Box<CreateSource>, table: bool, context: String) -> Result<Statement> {
    if !table {
        if !create.primary_key.is_empty() {
            return Err(SqlError::Invalid {
                context,
                message: "a source has no PRIMARY KEY; declare a reference table with CREATE \
                          TABLE"
                    .into(),
            });
        }
        return Ok(Statement::CreateSource(create));
    }
    if create.primary_key.is_empty() {
        return Err(SqlError::Invalid {
            context,
            message: "a table needs a PRIMARY KEY (a column's PRIMARY KEY option, or PRIMARY \
                      KEY (a, b) after the columns): its rows are upserted by key"
                .into(),
        });
    }
    if let Some(connector) = &create.connector {
        if connector.name == "LOOKUP" && create.watermark.is_some() {
            return Err(SqlError::Invalid {
                context,
                message: "a lookup table has no versions for a WATERMARK to stamp: its source \
                          is asked for each row's key as the row arrives"
                    .into(),
            });
        }
        if connector.name != "FILE" && connector.name != "LOOKUP" {
            return Err(unsupported(
                format!(
                    "FROM {} on a table; a table loads its first rows FROM FILE, then INSERT, \
                     or reads rows by key FROM LOOKUP (source = '...')",
                    connector.name
                ),
                context,
            ));
        }
    }
    if create.late_data_to.is_some() || !create.options.is_empty() {
        return Err(unsupported(
            "WITH and LATE DATA TO on a table; a table is fed by INSERT (or loaded FROM FILE)",
            context,
        ));
    }
    Ok(Statement::CreateTable(create))
}

/// The optional `PER KEY (column, ...)` after a source's watermark expression.
fn parse_per_key(parser: &mut Parser<'_>, source: &str) -> Result<Vec<String>> {
    if !words_are(parser, &["PER", "KEY"]) {
        return Ok(Vec::new());
    }
    advance(parser, 2);
    parser.expect_token(&Token::LParen).map_err(syntax)?;
    let mut keys: Vec<String> = Vec::new();
    loop {
        let key = normalize_ident(&parser.parse_identifier().map_err(syntax)?);
        if keys.contains(&key) {
            return Err(SqlError::Invalid {
                context: format!("CREATE SOURCE {source}"),
                message: format!("PER KEY names column {key} twice"),
            });
        }
        keys.push(key);
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.expect_token(&Token::RParen).map_err(syntax)?;
    Ok(keys)
}

fn parse_create_sink(parser: &mut Parser<'_>) -> Result<Statement> {
    let if_not_exists = if_not_exists(parser);
    let name = object_name(parser)?;
    parser.expect_keyword_is(Keyword::INTO).map_err(syntax)?;
    let connector = parse_connector(parser)?;
    let options = parse_query_options(parser, &format!("CREATE SINK {name}"))?;
    let input = if parser.parse_keyword(Keyword::AS) {
        SinkInput::Query(parser.parse_query().map_err(syntax)?)
    } else if parser.parse_keyword(Keyword::FROM) {
        SinkInput::From(object_name(parser)?)
    } else {
        return Err(syntax(ParserError::ParserError(format!(
            "Expected: AS SELECT ... or FROM <stream> after the sink's connector, found: {} at {}",
            parser.peek_token().token,
            parser.peek_token().span.start
        ))));
    };
    Ok(Statement::CreateSink(CreateSink {
        name,
        if_not_exists,
        connector,
        options,
        input,
    }))
}

/// The optional `WITH (key = 'value', ...)` of a continuous query, before its `AS`.
fn parse_query_options(parser: &mut Parser<'_>, context: &str) -> Result<Vec<(String, String)>> {
    if parser.parse_keyword(Keyword::WITH) {
        parse_options(parser, context)
    } else {
        Ok(Vec::new())
    }
}

/// `NAME ( key = value, ... )`; keys may be dotted (`format.delimiter`).
fn parse_connector(parser: &mut Parser<'_>) -> Result<ConnectorSpec> {
    let name = parser
        .parse_identifier()
        .map_err(syntax)?
        .value
        .to_uppercase();
    let options = parse_options(parser, &format!("connector {name}"))?;
    Ok(ConnectorSpec { name, options })
}

/// `( key = value, ... )`; keys may be dotted (`format.delimiter`) and are lower-cased;
/// a key given twice is an error naming `context`.
fn parse_options(parser: &mut Parser<'_>, context: &str) -> Result<Vec<(String, String)>> {
    let mut options: Vec<(String, String)> = Vec::new();
    parser.expect_token(&Token::LParen).map_err(syntax)?;
    if parser.consume_token(&Token::RParen) {
        return Ok(options);
    }
    loop {
        let mut key = parser
            .parse_identifier()
            .map_err(syntax)?
            .value
            .to_lowercase();
        while parser.consume_token(&Token::Period) {
            key.push('.');
            key.push_str(
                &parser
                    .parse_identifier()
                    .map_err(syntax)?
                    .value
                    .to_lowercase(),
            );
        }
        parser.expect_token(&Token::Eq).map_err(syntax)?;
        let value = match parser.parse_value().map_err(syntax)?.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
            Value::Number(n, _) => n,
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        if options.iter().any(|(k, _)| *k == key) {
            return Err(SqlError::Invalid {
                context: context.to_string(),
                message: format!("option '{key}' is given twice"),
            });
        }
        options.push((key, value));
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        parser.expect_token(&Token::RParen).map_err(syntax)?;
        break;
    }
    Ok(options)
}

fn parse_object_kind(parser: &mut Parser<'_>) -> Option<ObjectKind> {
    let (kind, words) = match word(parser, 0).as_deref() {
        Some("SOURCE") => (ObjectKind::Source, 1),
        Some("STREAM") => (ObjectKind::Stream, 1),
        Some("SINK") => (ObjectKind::Sink, 1),
        Some("TABLE") => (ObjectKind::Table, 1),
        Some("MATERIALIZED") if word(parser, 1).as_deref() == Some("VIEW") => {
            (ObjectKind::MaterializedView, 2)
        }
        _ => return None,
    };
    advance(parser, words);
    Some(kind)
}

fn parse_drop(parser: &mut Parser<'_>) -> Result<Statement> {
    advance(parser, 1);
    let Some(kind) = parse_object_kind(parser) else {
        let what = word(parser, 0).unwrap_or_else(|| parser.peek_token().token.to_string());
        return Err(unsupported(
            format!("DROP {what}; DROP takes SOURCE, TABLE, STREAM, MATERIALIZED VIEW or SINK"),
            "DROP",
        ));
    };
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = object_name(parser)?;
    Ok(Statement::Drop {
        kind,
        name,
        if_exists,
    })
}

fn parse_show(parser: &mut Parser<'_>) -> Result<Statement> {
    advance(parser, 1);
    if word(parser, 0).as_deref() == Some("WATERMARKS") {
        advance(parser, 1);
        return Ok(Statement::ShowWatermarks);
    }
    if word(parser, 0).as_deref() == Some("WORKERS") {
        advance(parser, 1);
        return Ok(Statement::ShowWorkers);
    }
    let kind = match word(parser, 0).as_deref() {
        Some("SOURCES") => Some((ObjectKind::Source, 1)),
        Some("STREAMS") => Some((ObjectKind::Stream, 1)),
        Some("SINKS") => Some((ObjectKind::Sink, 1)),
        Some("TABLES") => Some((ObjectKind::Table, 1)),
        Some("MATERIALIZED") if word(parser, 1).as_deref() == Some("VIEWS") => {
            Some((ObjectKind::MaterializedView, 2))
        }
        _ => None,
    };
    let Some((kind, words)) = kind else {
        let what = word(parser, 0).unwrap_or_else(|| parser.peek_token().token.to_string());
        return Err(unsupported(
            format!(
                "SHOW {what}; SHOW takes SOURCES, TABLES, STREAMS, MATERIALIZED VIEWS or SINKS"
            ),
            "SHOW",
        ));
    };
    advance(parser, words);
    Ok(Statement::Show(kind))
}
