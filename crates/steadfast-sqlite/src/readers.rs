//! Read-only connections for queries, used from tokio's blocking pool.
//!
//! Rationale for a hand-rolled pool: the usual pool crates pin their own
//! rusqlite version, and this needs ten lines: take an idle connection or
//! open one, give it back after, keep at most [`MAX_IDLE`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use steadfast_store::StoreError;

use crate::sqlite_error;

const MAX_IDLE: usize = 8;

#[derive(Debug, Clone)]
pub struct Readers {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Readers {
        Readers {
            path: Arc::new(path),
            idle: Arc::default(),
        }
    }

    pub async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = query(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Corrupt("a storage query panicked".into()))?
    }

    /// [`Readers::read`], interrupted once it has run for `limit` (the
    /// dashboard's statement timeout): it then fails `Unavailable`.
    pub async fn read_within<T, F>(&self, limit: Duration, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = readers.take()?;
            let deadline = Instant::now() + limit;
            // Checked every few thousand virtual machine steps.
            conn.progress_handler(4096, Some(move || Instant::now() > deadline))
                .map_err(sqlite_error)?;
            let result = query(&conn);
            // A connection whose handler cannot be removed is not reused.
            if conn.progress_handler(0, None::<fn() -> bool>).is_ok() {
                readers.give_back(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Corrupt("a storage query panicked".into()))?
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("not poisoned").pop() {
            return Ok(conn);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(self.path.as_ref(), flags).map_err(sqlite_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite_error)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("not poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}
