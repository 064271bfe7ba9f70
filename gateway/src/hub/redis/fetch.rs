//! Reads shared by the broadcast waiters of one wake-up: waiters polling the same channel from
//! the same cursor (the usual case: thousands of clients held at the head) run one `READ`
//! script between them instead of one each.
//!
//! Each wake-up clears the cache, and a cached read always started after the wake-up that
//! created its generation, so a waiter that finds one has not missed anything that a fresh read
//! would see — except messages whose own wake-up is still on its way, which will wake it again.

use super::super::cursor::Cursor;
use super::super::shards::lock;
use super::scripts::StreamRead;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Above this many distinct (cursor, limit) pairs between two wake-ups, start over: the cache
/// is an optimisation, forgetting it is always correct.
const MAX_ENTRIES: usize = 1024;

type Cell = Arc<OnceCell<Arc<StreamRead>>>;

#[derive(Default)]
pub(crate) struct FetchCache {
    cells: Mutex<HashMap<(Cursor, usize), Cell>>,
}

impl FetchCache {
    /// The shared read for this cursor and limit in the current generation (maybe not yet
    /// done: `get_or_try_init` it). A failed read is not cached.
    pub(crate) fn cell(&self, cursor: Cursor, limit: usize) -> Cell {
        let mut cells = lock(&self.cells);
        if cells.len() >= MAX_ENTRIES && !cells.contains_key(&(cursor, limit)) {
            cells.clear();
        }
        cells.entry((cursor, limit)).or_default().clone()
    }

    /// A new generation: messages arrived.
    pub(crate) fn clear(&self) {
        lock(&self.cells).clear();
    }
}
