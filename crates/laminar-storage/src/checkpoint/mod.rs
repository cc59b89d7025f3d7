//! Checkpoints on disk: what the checkpoint coordinator writes and recovery reads.
//!
//! A [`CheckpointStore`] owns one directory of manifests and state files. At start,
//! [`CheckpointStore::open`] finds the newest usable checkpoint ([`Recovered`]); the
//! coordinator then writes each checkpoint through a [`CheckpointBuilder`]
//! ([`CheckpointStore::begin`], `add_state`, `commit`), asking [`CheckpointStore::needs_full`]
//! whether a state's next snapshot should be full (compaction) or a delta.
//!
//! Files: `store` (opening, options, garbage collection), `builder` (one checkpoint and its
//! commit order), `recovery` (choosing the checkpoint, loading states), `policy` (pure
//! compaction and garbage decisions), `naming` (file names from state ids).

mod builder;
mod naming;
mod policy;
mod recovery;
mod store;

pub use builder::CheckpointBuilder;
pub use recovery::Recovered;
pub use store::{CheckpointOptions, CheckpointStore, COMPACTION_DELTAS_DEFAULT, RETAIN_DEFAULT};
