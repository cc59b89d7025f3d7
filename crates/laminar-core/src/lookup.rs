//! External lookup sources: the [`LookupSource`] trait an application (or a connector)
//! implements to answer "the rows with these keys" from a database or service, the
//! [`LookupService`] that calls it on threads of its own so a worker never waits for it, and
//! the bounded per-worker [`LookupCache`] a lookup join keeps in front of it.

mod cache;
mod service;
mod source;

pub use cache::LookupCache;
pub use service::{LookupCounters, LookupOptions, LookupReply, LookupService};
pub use source::{LookupError, LookupSource};
