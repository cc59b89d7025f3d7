//! Lookup join against an external lookup source (see [`crate::lookup`]): each row of an
//! append-only stream joins the source's row for its key as the source answers when the row
//! arrives, processing-time semantics as in Flink's lookup join. Stream rows are routed by
//! the key, so each worker's cache holds answers for its share of the keys.
//!
//! The worker never waits for the source. A batch whose keys are all cached is joined at
//! once; otherwise its missed keys go to the source as one request (a key already asked for
//! is not asked again; while every resolver thread is busy, the misses of the batches
//! arriving meanwhile gather into the next request) and the batch waits. A timer, armed only while batches wait, takes
//! the answers in and emits the waiting batches in arrival order (Flink's "ordered" async
//! mode), so rows of one key keep their order. The output watermark is held at the input
//! watermark a waiting batch arrived under, so its rows are not late downstream. A
//! checkpoint saves the waiting rows; restored, they are looked up again.

mod snapshot;

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::JoinType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use super::{batch_of_schema, cast_to_fields, evaluate_columns, Operator};
use crate::change_batch::ChangeBatch;
use crate::lookup::{LookupCache, LookupReply, LookupService};
use crate::state::{OperatorState, RestoredPart};
use crate::watermark::WATERMARK_MIN_MS;

/// How often a join with batches waiting looks for answers.
const POLL_INTERVAL: Duration = Duration::from_micros(500);

/// What a lookup join against a lookup source does.
pub struct LookupSourceJoinSpec {
    /// `Inner` drops stream rows without a match; `Left` pads them with NULLs.
    pub join_type: JoinType,
    /// Over the stream's rows: the value each primary key column of the table must equal,
    /// in the key's order.
    pub stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The table column behind each column the join appends to the stream's.
    pub table_columns: Vec<usize>,
    /// Over the table's rows (all its columns): a row failing it counts as no row (a filter
    /// on the table pushed below the join).
    pub table_filter: Option<Arc<dyn PhysicalExpr>>,
    /// Over the joined row: the rest of the join condition; a row failing it is no match.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The stream's rows.
    pub stream: SchemaRef,
    /// The joined rows: the stream's columns, then the table's.
    pub schema: SchemaRef,
    /// The lookup table's source, cache options and counters.
    pub service: Arc<LookupService>,
}

impl std::fmt::Debug for LookupSourceJoinSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupSourceJoinSpec")
            .field("join_type", &self.join_type)
            .field("table", &self.service.name())
            .finish_non_exhaustive()
    }
}

/// A stream batch waiting for the source.
struct Waiting {
    batch: RecordBatch,
    /// Its rows' keys, `None` for a key with a NULL (no match).
    keys: Vec<Option<Box<[u8]>>>,
    /// The input watermark when it arrived.
    watermark_ms: i64,
}

/// What the source said of a key.
enum Answer {
    /// Asked, not yet answered.
    Pending,
    /// Its row, in the row format.
    Row(Box<[u8]>),
    /// It has no row.
    NoRow,
}

impl Answer {
    fn known(value: Option<&[u8]>) -> Self {
        value.map_or(Self::NoRow, |row| Self::Row(row.into()))
    }
}

/// A key some waiting row needs.
struct Pinned {
    answer: Answer,
    /// Waiting rows with this key.
    users: usize,
}

/// A request sent and not answered.
struct Outstanding {
    keys: Vec<Box<[u8]>>,
    sent: Instant,
}

/// What the join has reported to the service's counters.
#[derive(Default)]
struct Published {
    cached: usize,
    evictions: u64,
    expirations: u64,
}

/// Joins stream rows with a lookup source's rows, through a cache, without blocking.
pub struct LookupSourceJoinOperator {
    spec: Arc<LookupSourceJoinSpec>,
    /// The primary key's columns, as a request carries them.
    key_schema: SchemaRef,
    /// The primary key's encoding.
    keys: RowConverter,
    /// The table rows' encoding.
    rows: RowConverter,
    /// The joined schema with every column nullable: rows before the join type drops the
    /// unmatched.
    loose_schema: SchemaRef,
    cache: LookupCache,
    waiting: VecDeque<Waiting>,
    pinned: HashMap<Box<[u8]>, Pinned>,
    /// Requests sent and not answered: their keys, and when they went.
    outstanding: HashMap<u64, Outstanding>,
    /// Missed keys not asked for yet: while every resolver thread is busy, the misses of
    /// the batches arriving meanwhile gather here and go as one request when one frees.
    unsent: Vec<Box<[u8]>>,
    next_request: u64,
    replies: Sender<LookupReply>,
    answers: Receiver<LookupReply>,
    watermark_ms: i64,
    published: Published,
}

impl std::fmt::Debug for LookupSourceJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl LookupSourceJoinOperator {
    /// A lookup join as `spec` says (an inner or left join).
    ///
    /// # Errors
    /// For another join type, or key or column types the row format cannot encode.
    pub fn new(spec: LookupSourceJoinSpec) -> DfResult<Self> {
        if !matches!(spec.join_type, JoinType::Inner | JoinType::Left) {
            return Err(DataFusionError::Internal(format!(
                "{} join planned as a lookup join",
                spec.join_type
            )));
        }
        Self::from_spec(Arc::new(spec))
    }

    fn from_spec(spec: Arc<LookupSourceJoinSpec>) -> DfResult<Self> {
        let service = &spec.service;
        let table = service.schema();
        let sort_fields = |schema: &Schema| -> Vec<SortField> {
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()
        };
        let loose_schema = Arc::new(Schema::new(
            spec.schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let options = service.options();
        let key_schema = service.key_schema();
        let (replies, answers) = channel();
        Ok(Self {
            keys: RowConverter::new(sort_fields(&key_schema))?,
            key_schema,
            rows: RowConverter::new(sort_fields(table))?,
            loose_schema,
            cache: LookupCache::new(options.cache_rows, options.cache_ttl),
            waiting: VecDeque::new(),
            pinned: HashMap::new(),
            outstanding: HashMap::new(),
            unsent: Vec::new(),
            next_request: 0,
            replies,
            answers,
            watermark_ms: WATERMARK_MIN_MS,
            published: Published::default(),
            spec,
        })
    }

    /// The rows' keys in the table's key types, and which of them hold a NULL.
    fn key_rows(&self, batch: &RecordBatch) -> DfResult<(Rows, Vec<bool>)> {
        let columns = cast_to_fields(
            evaluate_columns(&self.spec.stream_keys, batch)?,
            self.key_schema.fields(),
        )?;
        let valid = (0..batch.num_rows())
            .map(|row| columns.iter().all(|c| c.is_valid(row)))
            .collect();
        Ok((self.keys.convert_columns(&columns)?, valid))
    }

    /// A stream batch: joined at once when nothing waits and every key is cached, else
    /// queued behind what waits, its missed keys asked for.
    fn probe(&mut self, batch: RecordBatch, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        let (keys, valid) = self.key_rows(&batch)?;
        let now = Instant::now();
        if self.waiting.is_empty() {
            let mut slots = Vec::with_capacity(batch.num_rows());
            for (row, valid) in valid.iter().enumerate() {
                if !valid {
                    slots.push(None);
                    continue;
                }
                match self.cache.get(keys.row(row).as_ref(), now) {
                    Some(slot) => slots.push(Some(slot)),
                    None => break,
                }
            }
            if slots.len() == batch.num_rows() {
                let hits = valid.iter().filter(|v| **v).count() as u64;
                let answers: Vec<Option<&[u8]>> = slots
                    .iter()
                    .map(|slot| slot.and_then(|s| self.cache.answer(s)))
                    .collect();
                if let Some(joined) = self.assemble(&batch, &answers)? {
                    out.push(ChangeBatch::insert_only(joined));
                }
                self.spec.service.count_probes(hits, 0);
                self.publish_cache();
                return Ok(());
            }
        }
        let keys = valid
            .iter()
            .enumerate()
            .map(|(row, valid)| valid.then(|| Box::from(keys.row(row).as_ref())))
            .collect();
        self.enqueue(batch, keys, now)?;
        self.release(out)
    }

    /// Queues `batch` (rows keyed `keys`), pinning its keys' answers and asking the
    /// source for the keys neither cached nor asked for already.
    fn enqueue(
        &mut self,
        batch: RecordBatch,
        keys: Vec<Option<Box<[u8]>>>,
        now: Instant,
    ) -> DfResult<()> {
        let (mut hits, mut misses) = (0, 0);
        let mut to_ask = Vec::new();
        for key in keys.iter().flatten() {
            if let Some(pinned) = self.pinned.get_mut(key) {
                pinned.users += 1;
                if matches!(pinned.answer, Answer::Pending) {
                    misses += 1;
                } else {
                    hits += 1;
                }
                continue;
            }
            let answer = if let Some(slot) = self.cache.get(key, now) {
                hits += 1;
                Answer::known(self.cache.answer(slot))
            } else {
                misses += 1;
                to_ask.push(key.clone());
                Answer::Pending
            };
            self.pinned.insert(key.clone(), Pinned { answer, users: 1 });
        }
        self.spec.service.count_probes(hits, misses);
        self.unsent.extend(to_ask);
        self.send_unsent(now)?;
        self.waiting.push_back(Waiting {
            batch,
            keys,
            watermark_ms: self.watermark_ms,
        });
        self.publish_cache();
        Ok(())
    }

    /// Asks for the keys gathered in `unsent`, as one request, unless every resolver
    /// thread is busy with this join's requests already.
    fn send_unsent(&mut self, now: Instant) -> DfResult<()> {
        if self.unsent.is_empty() || self.outstanding.len() >= self.spec.service.options().threads {
            return Ok(());
        }
        let keys = std::mem::take(&mut self.unsent);
        self.request(keys, now)
    }

    /// Sends one request for `keys`.
    fn request(&mut self, keys: Vec<Box<[u8]>>, now: Instant) -> DfResult<()> {
        let parser = self.keys.parser();
        let columns = self
            .keys
            .convert_rows(keys.iter().map(|key| parser.parse(key)))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.key_schema), columns)?;
        let id = self.next_request;
        self.next_request += 1;
        self.spec
            .service
            .submit(id, batch, &self.replies)
            .map_err(DataFusionError::Execution)?;
        self.outstanding.insert(id, Outstanding { keys, sent: now });
        Ok(())
    }

    /// Takes in the answers that arrived, fails on one overdue, and emits what they complete.
    fn poll(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        while let Ok(reply) = self.answers.try_recv() {
            self.take_answer(reply)?;
        }
        self.send_unsent(Instant::now())?;
        let timeout = self.spec.service.options().timeout;
        if let Some(late) = self
            .outstanding
            .values()
            .find(|request| request.sent.elapsed() > timeout)
        {
            return Err(DataFusionError::Execution(format!(
                "lookup table {}: no answer for {} keys within {} ms (the table's timeout)",
                self.spec.service.name(),
                late.keys.len(),
                timeout.as_millis()
            )));
        }
        self.release(out)
    }

    /// Caches an answer and fills in the waiting rows' keys it answers.
    fn take_answer(&mut self, reply: LookupReply) -> DfResult<()> {
        let Some(Outstanding { keys, .. }) = self.outstanding.remove(&reply.request) else {
            return Err(DataFusionError::Internal(format!(
                "lookup table {}: an answer to request {} that is not outstanding",
                self.spec.service.name(),
                reply.request
            )));
        };
        let rows = reply.rows.map_err(DataFusionError::Execution)?;
        let key_columns: Vec<ArrayRef> = self
            .spec
            .service
            .key()
            .iter()
            .map(|&k| Arc::clone(rows.column(k)))
            .collect();
        let found_keys = self.keys.convert_columns(&key_columns)?;
        let found_rows = self.rows.convert_columns(rows.columns())?;
        let found: HashMap<&[u8], usize> = (0..rows.num_rows())
            .map(|row| (found_keys.row(row).data(), row))
            .collect();
        let cache_missing = self.spec.service.options().cache_missing;
        let now = Instant::now();
        for key in keys {
            let answer = found.get(&*key).map(|&row| found_rows.row(row).data());
            if answer.is_some() || cache_missing {
                self.cache.insert(&key, answer, now);
            }
            if let Some(pinned) = self.pinned.get_mut(&key) {
                pinned.answer = Answer::known(answer);
            }
        }
        self.publish_cache();
        Ok(())
    }

    /// Emits the waiting batches, oldest first, while every key of the oldest is answered.
    fn release(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        while let Some(front) = self.waiting.front() {
            let answered = front.keys.iter().flatten().all(|key| {
                self.pinned
                    .get(key)
                    .is_some_and(|pinned| !matches!(pinned.answer, Answer::Pending))
            });
            if !answered {
                break;
            }
            let answers: Vec<Option<&[u8]>> = front
                .keys
                .iter()
                .map(
                    |key| match key.as_ref().and_then(|key| self.pinned.get(key)) {
                        Some(Pinned {
                            answer: Answer::Row(row),
                            ..
                        }) => Some(row.as_ref()),
                        _ => None,
                    },
                )
                .collect();
            if let Some(joined) = self.assemble(&front.batch, &answers)? {
                out.push(ChangeBatch::insert_only(joined));
            }
            let Some(done) = self.waiting.pop_front() else {
                break;
            };
            for key in done.keys.iter().flatten() {
                if let Some(pinned) = self.pinned.get_mut(key) {
                    pinned.users -= 1;
                    if pinned.users == 0 {
                        self.pinned.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    /// The joined rows of `batch`, row `i` with the table row `answers[i]` (in the row
    /// format; `None`: no row), or nothing when an inner join matched none.
    fn assemble(
        &self,
        batch: &RecordBatch,
        answers: &[Option<&[u8]>],
    ) -> DfResult<Option<RecordBatch>> {
        let found: Vec<&[u8]> = answers.iter().flatten().copied().collect();
        let table = if found.is_empty() {
            None
        } else {
            let parser = self.rows.parser();
            let columns = self
                .rows
                .convert_rows(found.iter().map(|row| parser.parse(row)))?;
            Some(RecordBatch::try_new(
                Arc::clone(self.spec.service.schema()),
                columns,
            )?)
        };
        let mut next = 0_u32;
        let mut spread: Vec<Option<u32>> = answers
            .iter()
            .map(|answer| {
                answer.map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        if let (Some(filter), Some(table)) = (&self.spec.table_filter, &table) {
            let keep = boolean(filter.as_ref(), table)?;
            for entry in &mut spread {
                if entry.is_some_and(|row| !passes(&keep, row as usize)) {
                    *entry = None;
                }
            }
        }
        let mut joined = self.joined(batch, table.as_ref(), &spread)?;
        if let Some(filter) = &self.spec.filter {
            let keep = boolean(filter.as_ref(), &joined)?;
            let mut rejected = false;
            for (row, entry) in spread.iter_mut().enumerate() {
                if entry.is_some() && !passes(&keep, row) {
                    *entry = None;
                    rejected = true;
                }
            }
            if rejected {
                joined = self.joined(batch, table.as_ref(), &spread)?;
            }
        }
        if self.spec.join_type == JoinType::Inner {
            let matched: BooleanArray = spread.iter().map(|e| Some(e.is_some())).collect();
            joined = filter_record_batch(&joined, &matched)?;
        }
        if joined.num_rows() == 0 {
            return Ok(None);
        }
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.spec.schema),
            joined.columns().to_vec(),
        )?))
    }

    /// `batch`'s columns, then the table columns of row `spread[i]` of `table` (NULLs for
    /// none), under the all-nullable schema.
    fn joined(
        &self,
        batch: &RecordBatch,
        table: Option<&RecordBatch>,
        spread: &[Option<u32>],
    ) -> DfResult<RecordBatch> {
        let rows = batch.num_rows();
        let mut columns = batch.columns().to_vec();
        let spread: UInt32Array = spread.iter().copied().collect();
        for &column in &self.spec.table_columns {
            columns.push(match table {
                Some(table) => take(table.column(column).as_ref(), &spread, None)?,
                None => new_null_array(self.spec.service.schema().field(column).data_type(), rows),
            });
        }
        batch_of_schema(&self.loose_schema, columns)
    }

    /// Reports the cache's changes since the last report to the table's counters.
    fn publish_cache(&mut self) {
        let cache = &self.cache;
        let published = &mut self.published;
        let change = cache.len() as i64 - published.cached as i64;
        let evictions = cache.evictions() - published.evictions;
        let expirations = cache.expirations() - published.expirations;
        if change != 0 || evictions != 0 || expirations != 0 {
            self.spec
                .service
                .count_cache(evictions, expirations, change);
            published.cached = cache.len();
            published.evictions = cache.evictions();
            published.expirations = cache.expirations();
        }
    }
}

/// `filter` over `batch`, as booleans.
fn boolean(filter: &dyn PhysicalExpr, batch: &RecordBatch) -> DfResult<BooleanArray> {
    let value = filter.evaluate(batch)?.into_array(batch.num_rows())?;
    value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("join filter is not boolean".into()))
}

/// Whether row `row` passed (NULL does not).
fn passes(keep: &BooleanArray, row: usize) -> bool {
    keep.is_valid(row) && keep.value(row)
}

impl Drop for LookupSourceJoinOperator {
    fn drop(&mut self) {
        // Its cache goes with it.
        let cached = self.published.cached as i64;
        if cached != 0 {
            self.spec.service.count_cache(0, 0, -cached);
        }
    }
}

impl Operator for LookupSourceJoinOperator {
    fn name(&self) -> &'static str {
        "LookupJoin"
    }

    fn describe(&self) -> String {
        let service = &self.spec.service;
        let options = service.options();
        let ttl = options
            .cache_ttl
            .map_or_else(|| "no ttl".to_string(), |ttl| format!("ttl {ttl:?}"));
        let keys: Vec<String> = self
            .spec
            .stream_keys
            .iter()
            .zip(service.key())
            .map(|(expr, &k)| format!("{expr} = {}", service.schema().field(k).name()))
            .collect();
        format!(
            "LookupJoin {} with lookup table {} on [{}]{}: each stream row joined with the \
             source's row on its arrival (append-only); cache {} keys per worker, {ttl}",
            if self.spec.join_type == JoinType::Left {
                "LEFT"
            } else {
                "INNER"
            },
            service.name(),
            keys.join(", "),
            self.spec
                .filter
                .as_ref()
                .map_or_else(String::new, |f| format!(" filter {f}")),
            options.cache_rows,
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        // The prototype was built from this very spec, so building it again cannot fail.
        Box::new(
            Self::from_spec(Arc::clone(&self.spec))
                .expect("the spec was accepted when the prototype was built"),
        )
    }

    fn process(
        &mut self,
        port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        match port {
            0 if input.is_insert_only() => {
                // Answers that came meanwhile go first: they may release waiting rows.
                self.poll(out)?;
                self.probe(input.into_batch(), out)
            }
            0 => Err(DataFusionError::Internal(
                "retractions reached the stream side of a lookup join".into(),
            )),
            other => Err(DataFusionError::Internal(format!(
                "a lookup join with a lookup source has one input, not port {other}"
            ))),
        }
    }

    fn on_watermark(&mut self, watermark_ms: i64, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.watermark_ms = watermark_ms;
        Ok(())
    }

    fn output_watermark(&self, watermark_ms: i64) -> i64 {
        self.waiting
            .front()
            .map_or(watermark_ms, |w| w.watermark_ms.min(watermark_ms))
    }

    fn timer_interval(&self) -> Option<Duration> {
        Some(POLL_INTERVAL)
    }

    fn timer_armed(&self) -> bool {
        !self.waiting.is_empty() || !self.outstanding.is_empty() || !self.unsent.is_empty()
    }

    fn on_timer(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.poll(out)
    }

    fn on_end(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        // The input is over: the rows still waiting are waited for here (at most the
        // table's timeout per request), the only time this join waits on the worker.
        loop {
            self.poll(out)?;
            if self.waiting.is_empty() {
                return Ok(());
            }
            match self.answers.recv_timeout(Duration::from_millis(20)) {
                Ok(reply) => self.take_answer(reply)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(DataFusionError::Internal(
                        "a lookup join's answers stopped".into(),
                    ))
                }
            }
        }
    }

    fn state_entries(&self) -> u64 {
        (self.cache.len()
            + self
                .waiting
                .iter()
                .map(|w| w.batch.num_rows())
                .sum::<usize>()) as u64
    }

    fn state_bytes(&self) -> u64 {
        let waiting: usize = self
            .waiting
            .iter()
            .map(|w| w.batch.get_array_memory_size())
            .sum();
        (self.cache.bytes() + waiting) as u64
    }

    fn snapshot(&mut self, _full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_waiting().map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        self.restore_waiting(&parts)
    }
}

#[cfg(test)]
mod tests;
