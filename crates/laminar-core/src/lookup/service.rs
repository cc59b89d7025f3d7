//! The threads that call a lookup source. Lookup joins on the workers send each batch of
//! cache misses here as one request and go on; a resolver thread calls the source (retrying
//! failed calls with backoff), casts the answer to the table's declared columns and sends it
//! back on the requesting join's reply channel, which the join polls. One service per lookup
//! table, shared by every join reading it on every worker; its counters sum theirs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::source::LookupSource;

/// How a lookup table caches and calls its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOptions {
    /// Keys each worker's cache holds at most (0: no cache, every probe asks the source).
    pub cache_rows: usize,
    /// How long a cached answer is trusted; `None` until evicted.
    pub cache_ttl: Option<Duration>,
    /// Whether "no row for this key" is cached too.
    pub cache_missing: bool,
    /// Failed calls retried before the joins reading the table fail.
    pub retries: u32,
    /// How long a join waits for an answer before it fails.
    pub timeout: Duration,
    /// Threads calling the source (concurrent requests).
    pub threads: usize,
}

impl Default for LookupOptions {
    fn default() -> Self {
        Self {
            cache_rows: 10_000,
            cache_ttl: Some(Duration::from_secs(60)),
            cache_missing: true,
            retries: 3,
            timeout: Duration::from_secs(30),
            threads: 2,
        }
    }
}

/// A lookup table's counters, summed over the joins and workers using it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupCounters {
    /// Stream rows answered from a cache.
    pub hits: u64,
    /// Stream rows whose key was not cached (asked for, or already being asked for).
    pub misses: u64,
    /// Calls of the source that answered (one per batch of misses).
    pub requests: u64,
    /// Keys asked for in those calls.
    pub keys_requested: u64,
    /// Rows the source returned.
    pub rows_returned: u64,
    /// Calls that failed (each retry counts).
    pub failures: u64,
    /// Keys the caches evicted to make room.
    pub evictions: u64,
    /// Cached answers dropped for their age.
    pub expirations: u64,
    /// Keys the caches hold now.
    pub cached_keys: u64,
}

#[derive(Debug, Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    requests: AtomicU64,
    keys_requested: AtomicU64,
    rows_returned: AtomicU64,
    failures: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    cached_keys: AtomicI64,
}

/// An answer to a join's request: the table's rows for its keys, or why there are none.
#[derive(Debug)]
pub struct LookupReply {
    /// The request's number (the join's own numbering).
    pub request: u64,
    /// The rows found, with the table's schema.
    pub rows: Result<RecordBatch, String>,
}

struct Request {
    id: u64,
    keys: RecordBatch,
    reply: Sender<LookupReply>,
}

/// What the resolver threads share.
struct Resolver {
    name: String,
    schema: SchemaRef,
    source: Arc<dyn LookupSource>,
    retries: u32,
    stats: Arc<Stats>,
}

/// A lookup table's source behind its resolver threads.
pub struct LookupService {
    name: String,
    schema: SchemaRef,
    key: Vec<usize>,
    options: LookupOptions,
    stats: Arc<Stats>,
    /// Dropped with the service, which ends the threads once they finish their call.
    requests: Sender<Request>,
}

impl std::fmt::Debug for LookupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupService")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl LookupService {
    /// Starts `options.threads` threads calling `source` for table `name`, whose rows have
    /// `schema` and primary key columns `key`.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start(
        name: &str,
        schema: SchemaRef,
        key: Vec<usize>,
        source: Arc<dyn LookupSource>,
        options: LookupOptions,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Request>();
        let receiver = Arc::new(Mutex::new(receiver));
        let stats = Arc::new(Stats::default());
        let resolver = Arc::new(Resolver {
            name: name.to_string(),
            schema: Arc::clone(&schema),
            source,
            retries: options.retries,
            stats: Arc::clone(&stats),
        });
        for index in 0..options.threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let resolver = Arc::clone(&resolver);
            std::thread::Builder::new()
                .name(format!("laminar-lookup-{name}-{index}"))
                .spawn(move || resolver.serve(&receiver))?;
        }
        Ok(Self {
            name: name.to_string(),
            schema,
            key,
            options,
            stats,
            requests: sender,
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's declared rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The primary key's column indices.
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    /// The primary key's columns, as the keys of a request carry them.
    pub fn key_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.key
                .iter()
                .map(|&k| self.schema.field(k).clone())
                .collect::<Vec<_>>(),
        ))
    }

    /// How the table caches and calls its source.
    pub fn options(&self) -> &LookupOptions {
        &self.options
    }

    /// The counters so far.
    pub fn counters(&self) -> LookupCounters {
        let s = &self.stats;
        LookupCounters {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            keys_requested: s.keys_requested.load(Ordering::Relaxed),
            rows_returned: s.rows_returned.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            expirations: s.expirations.load(Ordering::Relaxed),
            cached_keys: u64::try_from(s.cached_keys.load(Ordering::Relaxed)).unwrap_or(0),
        }
    }

    /// Asks for `keys` (request `id` of the caller); the answer comes on `reply`.
    ///
    /// # Errors
    /// When the service has stopped.
    pub(crate) fn submit(
        &self,
        id: u64,
        keys: RecordBatch,
        reply: &Sender<LookupReply>,
    ) -> Result<(), String> {
        self.stats
            .keys_requested
            .fetch_add(keys.num_rows() as u64, Ordering::Relaxed);
        self.requests
            .send(Request {
                id,
                keys,
                reply: reply.clone(),
            })
            .map_err(|_| format!("lookup table {}: its source has stopped", self.name))
    }

    /// Counts probes answered from a cache and not.
    pub(crate) fn count_probes(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.stats.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            self.stats.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }

    /// Counts a cache's changes: evictions, expirations and its change in size.
    pub(crate) fn count_cache(&self, evictions: u64, expirations: u64, size_change: i64) {
        self.stats.evictions.fetch_add(evictions, Ordering::Relaxed);
        self.stats
            .expirations
            .fetch_add(expirations, Ordering::Relaxed);
        self.stats
            .cached_keys
            .fetch_add(size_change, Ordering::Relaxed);
    }
}

impl Resolver {
    /// Answers requests until the service is dropped.
    fn serve(&self, requests: &Mutex<Receiver<Request>>) {
        loop {
            // The lock is held only while waiting, so the threads take turns receiving.
            let request = requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            let Ok(request) = request else {
                return;
            };
            let rows = self.resolve(&request.keys);
            // A join that is gone no longer needs the answer.
            let _ = request.reply.send(LookupReply {
                request: request.id,
                rows,
            });
        }
    }

    /// Calls the source, retrying with backoff, and conforms its answer to the schema.
    fn resolve(&self, keys: &RecordBatch) -> Result<RecordBatch, String> {
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| self.source.lookup(keys)));
            let error = match outcome {
                Ok(Ok(rows)) => {
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .rows_returned
                        .fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                    // A malformed answer is not retried: asking again gives the same shape.
                    return self.conform(&rows);
                }
                Ok(Err(error)) => error.to_string(),
                Err(panic) => format!(
                    "the source panicked: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(ToString::to_string)
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default()
                ),
            };
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            if attempt > self.retries {
                return Err(format!(
                    "lookup table {}: the source failed for {} keys after {attempt} attempts: \
                     {error}",
                    self.name,
                    keys.num_rows()
                ));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// `rows` with the table's declared columns and types.
    fn conform(&self, rows: &RecordBatch) -> Result<RecordBatch, String> {
        let fields = self.schema.fields();
        if rows.num_columns() != fields.len() {
            return Err(format!(
                "lookup table {}: the source returned rows of {} columns; the table declares {}",
                self.name,
                rows.num_columns(),
                fields.len()
            ));
        }
        let columns = rows
            .columns()
            .iter()
            .zip(fields)
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    cast(column, field.data_type()).map_err(|e| {
                        format!(
                            "lookup table {}: the source returned column {} as {}, which does \
                             not cast to the declared {}: {e}",
                            self.name,
                            field.name(),
                            column.data_type(),
                            field.data_type()
                        )
                    })
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| format!("lookup table {}: the source's rows: {e}", self.name))
    }
}
