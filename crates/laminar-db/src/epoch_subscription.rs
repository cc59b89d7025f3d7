//! Subscriptions that resume from an epoch: the changes of a stream, materialized view or
//! push source declared `WITH (output_log = 'on')`, each checkpoint's changes followed by
//! a [`SubscriptionEvent::Committed`] marker. An application that remembers the last epoch
//! it saw committed resumes after it, after its own crash or the database's, and receives
//! exactly the changes after that epoch: no gap, no duplicate.
//!
//! A subscription reads the object's output log and nothing else: the committed epochs it
//! resumes from, then each later epoch's file as the writer appends to it (up to the bytes
//! the writer has published as whole records). Since live changes come from the same files
//! as old ones, there is no hand-over from a backlog to a live feed that could drop or
//! repeat a batch, and the rows of an epoch are followed by its marker only once the
//! checkpoint that made them durable committed it, however far behind the reader is. A
//! subscription never holds the pipeline back: a slow reader only reads older files.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use laminar_core::ChangeBatch;

use crate::catalog::ObjectState;
use crate::db::{hint, LaminarDB};
use crate::durability::output_log::{EpochFile, EpochStatus, LogShared, Refusal};
use crate::error::{DbError, Result};

/// How long `subscribe_from` waits for an output log to be recovered (which its writer
/// thread does as the database opens).
const LOG_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What an [`EpochSubscription`] yields.
#[derive(Debug, Clone)]
pub enum SubscriptionEvent {
    /// Changes of the object, in the order it produced them. Those after the last
    /// `Committed` are tentative: after a crash, the database may produce them again,
    /// possibly batched differently, in a later epoch.
    Changes(ChangeBatch),
    /// Every change before this one belongs to an epoch up to this one and is durable: the
    /// checkpoint of this epoch (or, if it failed, the next one) holds the state they
    /// came from. `subscribe_from(name, epoch)` resumes right after them.
    Committed(u64),
}

/// A feed of a stream's, view's or source's changes from its output log, resumable after
/// any committed epoch the log still holds (see [`LaminarDB::subscribe_from`]).
///
/// It ends once the object's input has ended and its last changes are committed, or when
/// the object is dropped or the database closed; it also ends when its output log fails
/// or one of its files cannot be read ([`EpochSubscription::error`] says why). An ended
/// subscription misses nothing: resuming after the last `Committed` it delivered goes on
/// where it stopped.
#[derive(Debug)]
pub struct EpochSubscription {
    name: String,
    log: Arc<LogShared>,
    /// This subscription's slot for an async waker.
    id: u64,
    /// The epoch being read, or read next.
    epoch: u64,
    reading: Option<EpochFile>,
    /// The files of the epochs there were when the subscription started, oldest first,
    /// opened then so that garbage collection cannot take them away before they are read.
    opened: VecDeque<EpochFile>,
    last_committed: u64,
    error: Option<DbError>,
    ended: bool,
}

/// The outcome of one look at the log.
enum Step {
    Event(SubscriptionEvent),
    /// Nothing new until the log's state moves on from this version.
    Wait(u64),
    End,
}

impl EpochSubscription {
    /// Starts reading `log` after epoch `after`.
    pub(crate) fn start(name: &str, log: Arc<LogShared>, after: u64) -> Result<Self> {
        let unusable = |message: String| DbError::OutputLog {
            object: name.to_string(),
            message,
        };
        let state = log.wait_ready(LOG_READY_TIMEOUT).map_err(unusable)?;
        let holdings = state.holdings().ok_or_else(|| {
            DbError::Internal(format!("output log of {name} ready without epochs"))
        })?;
        let first = holdings
            .first_to_read(after)
            .map_err(|refusal| match refusal {
                Refusal::Removed { oldest } => DbError::EpochNotRetained {
                    object: name.to_string(),
                    epoch: after,
                    oldest,
                },
                Refusal::NotCommitted { newest } => DbError::EpochNotCommitted {
                    object: name.to_string(),
                    epoch: after,
                    newest,
                },
            })?;
        let mut opened = VecDeque::new();
        let mut epoch = first;
        // Renames and deletions wait for the state's lock, held here throughout.
        while let Some(file) = state.file(epoch) {
            let path = log.path(file);
            let file = EpochFile::open(epoch, &path)
                .map_err(|e| unusable(format!("cannot open {}: {e}", path.display())))?;
            opened.push_back(file);
            epoch += 1;
        }
        drop(state);
        let id = log.subscription_id();
        Ok(Self {
            name: name.to_string(),
            log,
            id,
            epoch: first,
            reading: None,
            opened,
            last_committed: after,
            error: None,
            ended: false,
        })
    }

    /// The stream, view or source subscribed to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch of the last [`SubscriptionEvent::Committed`] delivered, or the epoch the
    /// subscription resumed after: what to resume after once this subscription is gone.
    pub fn last_committed(&self) -> u64 {
        self.last_committed
    }

    /// Why the subscription ended early: its output log failed, fell behind garbage
    /// collection, or a file of it is damaged. `None` while it runs or after a normal end.
    pub fn error(&self) -> Option<&DbError> {
        self.error.as_ref()
    }

    /// Waits for the next event; `None` once the subscription has ended.
    pub fn next_blocking(&mut self) -> Option<SubscriptionEvent> {
        loop {
            match self.step() {
                Step::Event(event) => return Some(event),
                Step::End => return None,
                Step::Wait(version) => self.log.wait_change(version),
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<SubscriptionEvent> {
        match self.step() {
            Step::Event(event) => Some(event),
            Step::Wait(_) | Step::End => None,
        }
    }

    /// Waits for the next event asynchronously; `None` once the subscription has ended.
    /// (Reading the log's files is done in place: they are local and read a batch at a
    /// time.)
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// A blocking iterator over the events, for non-async callers.
    pub fn blocking_iter(&mut self) -> impl Iterator<Item = SubscriptionEvent> + '_ {
        std::iter::from_fn(move || self.next_blocking())
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<SubscriptionEvent>> {
        loop {
            match self.step() {
                Step::Event(event) => return Poll::Ready(Some(event)),
                Step::End => return Poll::Ready(None),
                Step::Wait(version) => {
                    if self.log.wake_on_change(self.id, version, cx.waker()) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn step(&mut self) -> Step {
        if self.ended {
            return Step::End;
        }
        match self.advance() {
            Ok(Step::End) => {
                self.ended = true;
                Step::End
            }
            Ok(step) => step,
            Err(error) => {
                self.error = Some(error);
                self.ended = true;
                Step::End
            }
        }
    }

    fn advance(&mut self) -> Result<Step> {
        loop {
            if self.reading.is_none() {
                if let Some(step) = self.open_epoch()? {
                    return Ok(step);
                }
            }
            if let Some(step) = self.read_epoch()? {
                return Ok(step);
            }
        }
    }

    /// Opens the file of the epoch to read next; a step instead while it does not exist.
    fn open_epoch(&mut self) -> Result<Option<Step>> {
        if self.opened.front().is_some_and(|f| f.epoch() == self.epoch) {
            self.reading = self.opened.pop_front();
            return Ok(None);
        }
        let state = self.log.lock();
        if let Some(failed) = &state.failed {
            return Err(self.failure(failed.clone()));
        }
        match (state.file(self.epoch), state.status(self.epoch)) {
            (Some(file), _) => {
                let path = self.log.path(file);
                let opened = EpochFile::open(self.epoch, &path)
                    .map_err(|e| self.failure(format!("cannot open {}: {e}", path.display())))?;
                self.reading = Some(opened);
                Ok(None)
            }
            (None, EpochStatus::Removed) => Err(self.failure(format!(
                "epoch {} was removed before this subscription read it (it fell more than {} \
                 epochs behind); resume after epoch {}",
                self.epoch,
                self.log.keep_epochs(),
                self.last_committed
            ))),
            (None, _) if state.closed => Ok(Some(Step::End)),
            (None, _) => Ok(Some(Step::Wait(state.version()))),
        }
    }

    /// Reads on in the open file: its next change batch, its `Committed` marker once its
    /// epoch is committed, or a step to wait or end.
    fn read_epoch(&mut self) -> Result<Option<Step>> {
        let Some(file) = self.reading.as_mut() else {
            return Ok(None);
        };
        let epoch = file.epoch();
        let (status, version, input_ended, closed, failed) = {
            let state = self.log.lock();
            (
                state.status(epoch),
                state.version(),
                state.input_ended,
                state.closed,
                state.failed.clone(),
            )
        };
        let object = &self.name;
        let unreadable = |message: String| DbError::OutputLog {
            object: object.clone(),
            message,
        };
        if let Some(failed) = failed {
            return Err(unreadable(failed));
        }
        let limit = match status {
            EpochStatus::Open { bytes } | EpochStatus::Pending { bytes } => bytes,
            EpochStatus::Committed | EpochStatus::Removed => file.len().map_err(unreadable)?,
            EpochStatus::NotBegun => {
                return Err(DbError::Internal(format!(
                    "output log of {object}: epoch {epoch} is being read but was never begun"
                )))
            }
        };
        if let Some(changes) = file.next_changes(limit).map_err(unreadable)? {
            return Ok(Some(Step::Event(SubscriptionEvent::Changes(changes))));
        }
        debug_assert_eq!(file.read_bytes(), limit);
        let whole = matches!(
            status,
            EpochStatus::Committed | EpochStatus::Removed | EpochStatus::Pending { .. }
        );
        if whole && !file.is_complete() {
            return Err(unreadable(format!(
                "{}: the file of epoch {epoch} ends after {limit} bytes without its end \
                 record: it was cut short",
                file.path().display()
            )));
        }
        match status {
            EpochStatus::Committed | EpochStatus::Removed => {
                self.reading = None;
                self.epoch = epoch + 1;
                self.last_committed = epoch;
                Ok(Some(Step::Event(SubscriptionEvent::Committed(epoch))))
            }
            // Every change that will ever come was delivered and committed.
            EpochStatus::Open { .. } if input_ended && !file.has_changes() => Ok(Some(Step::End)),
            _ if closed => Ok(Some(Step::End)),
            _ => Ok(Some(Step::Wait(version))),
        }
    }

    fn failure(&self, message: String) -> DbError {
        DbError::OutputLog {
            object: self.name.clone(),
            message,
        }
    }
}

impl Drop for EpochSubscription {
    fn drop(&mut self) {
        self.log.forget_waker(self.id);
    }
}

impl futures_core::Stream for EpochSubscription {
    type Item = SubscriptionEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl LaminarDB {
    /// Subscribes to the changes of a stream, materialized view or push source after epoch
    /// `after_epoch`, from its output log: first the committed epochs after it (each
    /// followed by [`SubscriptionEvent::Committed`]), then the changes as they are produced,
    /// with a `Committed` marker after each later checkpoint. Use `0` for every change the
    /// log holds since the object was created.
    ///
    /// An application keeps the last epoch it saw committed together with what it made of
    /// the changes before it; after a crash (its own or the database's) it drops what it
    /// made of later changes and subscribes again after that epoch: it receives exactly
    /// the changes after it, without a gap or a duplicate.
    ///
    /// The object must be declared `WITH (output_log = 'on')`, and the database opened on
    /// a data directory. An epoch whose successors the log no longer keeps (see
    /// [`output_log_extra_epochs`]) or that is not committed is an error naming the epochs
    /// available.
    ///
    /// [`output_log_extra_epochs`]: crate::LaminarDbBuilder::output_log_extra_epochs
    pub fn subscribe_from(&self, name: &str, after_epoch: u64) -> Result<EpochSubscription> {
        let statement = || format!("subscribe_from({name}, {after_epoch})");
        if self.inner.durable.is_none() {
            return Err(DbError::NotAllowed {
                statement: statement(),
                message: "the database has no data directory: epochs are the checkpoints of a \
                          database opened with LaminarDB::open"
                    .into(),
            });
        }
        let catalog = self.catalog();
        let object = catalog.get(name).ok_or_else(|| DbError::NotFound {
            kind: "stream, view or source",
            name: name.to_string(),
            hint: hint(&catalog.names()),
        })?;
        let Some(log) = &object.output_log else {
            let noun = object.kind.noun();
            let message = match &object.state {
                ObjectState::PushSource { table: None, .. } | ObjectState::Derived { .. }
                    if object.kind != laminar_sql::ObjectKind::Sink =>
                {
                    format!(
                        "{noun} {name} keeps no output log; declare it WITH (output_log = 'on') \
                         to resume subscriptions after an epoch"
                    )
                }
                _ => format!(
                    "{name} is a {noun}; only streams, materialized views and sources without a \
                     connector keep an output log (WITH (output_log = 'on'))"
                ),
            };
            return Err(DbError::NotAllowed {
                statement: statement(),
                message,
            });
        };
        let log = Arc::clone(log.shared());
        // Waiting for the log's recovery must not hold the catalog.
        drop(catalog);
        EpochSubscription::start(name, log, after_epoch)
    }
}
