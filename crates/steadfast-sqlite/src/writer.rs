//! The single writer and its group commit.
//!
//! One thread owns the only write connection. Requests send it closures over
//! a bounded channel; the thread takes what is waiting (up to
//! [`MAX_COMMANDS_PER_COMMIT`]), runs each inside its own savepoint within one
//! `BEGIN IMMEDIATE … COMMIT`, and answers every request only after the
//! commit returned. With `synchronous = FULL` the commit fsyncs the WAL, so
//! an answer means the change is on disk; under load one fsync covers every
//! command that arrived while the previous one ran, and an idle server
//! commits a lone command at once.
//!
//! A command that fails rolls back to its savepoint and leaves the others in
//! the batch untouched. If the commit itself fails (disk full, I/O error),
//! every command in the batch is told so, and none was acknowledged.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;

use rusqlite::Connection;
use steadfast_store::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::sqlite_error;

/// Most commands folded into one transaction.
pub const MAX_COMMANDS_PER_COMMIT: usize = 512;
/// Commands waiting for the writer before senders wait too (backpressure).
const QUEUE_CAPACITY: usize = 8192;

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Command = Box<dyn FnOnce(&Connection) -> Reply + Send>;

#[derive(Debug, Clone)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer thread; it stops when the last `Writer` is dropped.
    pub fn start(conn: Connection) -> std::io::Result<Writer> {
        let (commands, receiver) = mpsc::channel(QUEUE_CAPACITY);
        thread::Builder::new()
            .name("steadfast-sqlite-writer".into())
            .spawn(move || run(conn, receiver))?;
        Ok(Writer { commands })
    }

    /// Runs `command` in the next group commit and returns its result once
    /// that commit is durable.
    pub async fn write<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let command: Command = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, command);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = answer.send(committed.and(result));
            })
        });
        let stopped = || StoreError::Unavailable("the storage writer has stopped".into());
        self.commands.send(command).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    command: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT command").map_err(sqlite_error)?;
    let result = catch_unwind(AssertUnwindSafe(|| command(conn))).unwrap_or_else(|_| {
        Err(StoreError::Corrupt(
            "a storage command panicked; its changes were rolled back".into(),
        ))
    });
    let end = if result.is_ok() {
        "RELEASE command"
    } else {
        "ROLLBACK TO command; RELEASE command"
    };
    conn.execute_batch(end).map_err(sqlite_error)?;
    result
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Command>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_COMMANDS_PER_COMMIT);
    while let Some(first) = receiver.blocking_recv() {
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            first(&conn)(Err(sqlite_error(error)));
            continue;
        }
        replies.push(first(&conn));
        while replies.len() < MAX_COMMANDS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(command) => replies.push(command(&conn)),
                Err(_) => break,
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(|error| {
            tracing::error!(%error, commands = replies.len(), "commit failed; nothing in this batch was acknowledged");
            let _ = conn.execute_batch("ROLLBACK");
            sqlite_error(error)
        });
        for reply in replies.drain(..) {
            reply(committed.clone());
        }
    }
}
