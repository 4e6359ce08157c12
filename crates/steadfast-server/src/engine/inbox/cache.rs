//! What this node read of sources lately: a delivery costs no source read
//! within [`SOURCE_CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_store::Source;

use crate::inbox::{Config, Kind};

/// How long this node trusts what it read of a source. A change made on
/// this node applies at once; one made on another node (a new secret, a
/// deletion) within this long. A secret's expiry is checked against the
/// clock on every delivery.
pub const SOURCE_CACHE_TTL: Duration = Duration::from_secs(1);
/// Sources, and apart from them unknown ids, cached at most; past it that
/// part of the cache starts over (unknown ids never evict sources).
const BOUND: usize = 10_000;

/// A live source with its kind parsed once.
#[derive(Debug)]
pub struct Known {
    pub source: Source,
    pub kind: Kind,
    pub config: Config,
}

#[derive(Debug, Default)]
struct Entries {
    /// By id, with the clock's `elapsed` when read.
    known: HashMap<String, (Duration, Arc<Known>)>,
    /// Ids that named no live source, when read.
    unknown: HashMap<String, Duration>,
    /// Bumped by every local change, so a read that raced one is not kept.
    generation: u64,
}

#[derive(Debug, Default)]
pub(in crate::engine) struct SourceCache {
    entries: Mutex<Entries>,
}

/// What the cache says of an id.
pub(in crate::engine) enum Cached {
    Known(Arc<Known>),
    Unknown,
    /// Not read lately: read it, then [`SourceCache::put`] with this generation.
    Miss(u64),
}

impl SourceCache {
    pub(in crate::engine) fn get(&self, id: &str, now: Duration) -> Cached {
        let entries = self.entries.lock().expect("the source cache is never poisoned");
        let fresh = |at: Duration| now.saturating_sub(at) < SOURCE_CACHE_TTL;
        if let Some((at, known)) = entries.known.get(id)
            && fresh(*at)
        {
            return Cached::Known(known.clone());
        }
        if entries.unknown.get(id).is_some_and(|at| fresh(*at)) {
            return Cached::Unknown;
        }
        Cached::Miss(entries.generation)
    }

    /// Keeps what was read, unless a local change happened since `generation`.
    pub(in crate::engine) fn put(&self, id: &str, now: Duration, generation: u64, read: Option<Arc<Known>>) {
        let mut entries = self.entries.lock().expect("the source cache is never poisoned");
        if entries.generation != generation {
            return;
        }
        match read {
            Some(known) => {
                if entries.known.len() >= BOUND && !entries.known.contains_key(id) {
                    entries.known.clear();
                }
                entries.unknown.remove(id);
                entries.known.insert(id.to_owned(), (now, known));
            }
            None => {
                if entries.unknown.len() >= BOUND {
                    entries.unknown.clear();
                }
                entries.known.remove(id);
                entries.unknown.insert(id.to_owned(), now);
            }
        }
    }

    /// A local change to `id`: the next delivery reads it again.
    pub(in crate::engine) fn forget(&self, id: &str) {
        let mut entries = self.entries.lock().expect("the source cache is never poisoned");
        entries.generation += 1;
        entries.known.remove(id);
        entries.unknown.remove(id);
    }
}
