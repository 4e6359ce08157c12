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
//! Lease commands are *relaxed*: a group made only of them commits with
//! `synchronous = NORMAL`, so it is not fsync'd on its own. A lease is void
//! after a crash anyway (the job is simply leased again), and the next
//! durable commit fsyncs the WAL, relaxed frames before it included, in
//! order. A *barrier* (before audit reads, so a signed or exported head is
//! never one a crash could take back) makes sure relaxed commits are on disk.
//!
//! WAL checkpoints (copying committed pages into the database file) run on
//! a thread of their own with its own connection, at most every
//! [`CHECKPOINT_PAUSE`] and only after writes: in the writer they took a
//! tenth of its time (perf), and every request waited behind them.
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
/// WAL frames (pages) past which a checkpoint waits for the writer: ~32 MiB.
const WAL_RESTART_FRAMES: i64 = 8192;
/// Least time between two background checkpoints.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// Commands waiting for the writer before senders wait too (backpressure).
const QUEUE_CAPACITY: usize = 8192;

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs a command (or, given no connection, only answers), returning what to
/// tell its sender once the commit's outcome is known.
type Run = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// What a command needs from the commit that carries it, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Durability {
    /// On disk by the next durable commit; lost in a crash before it.
    Relaxed,
    /// On disk when the command is answered.
    Durable,
    /// Durable, and every relaxed commit before it is on disk too.
    Barrier,
}

struct Command {
    run: Run,
    durability: Durability,
}

#[derive(Debug, Clone)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer thread and its checkpointer (on `checkpoints`, a
    /// second connection to the same database); both stop when the last
    /// `Writer` is dropped.
    pub fn start(conn: Connection, checkpoints: Connection) -> Result<Writer, StartError> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A RESTART checkpoint holds writers back while it waits for readers:
        // give up quickly (the next round retries) rather than stall the writer.
        checkpoints.busy_timeout(std::time::Duration::from_millis(20))?;
        // After a burst, the WAL file shrinks back to this once reused.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let (commands, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (wrote, written) = std::sync::mpsc::sync_channel(1);
        thread::Builder::new()
            .name("steadfast-sqlite-checkpointer".into())
            .spawn(move || checkpoint_after_writes(checkpoints, written))?;
        thread::Builder::new()
            .name("steadfast-sqlite-writer".into())
            .spawn(move || run(conn, receiver, wrote))?;
        Ok(Writer { commands })
    }

    /// Runs `command` in the next group commit and returns its result once
    /// that commit is durable.
    pub async fn write<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(Durability::Durable, command).await
    }

    /// Returns once every commit so far is on disk.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.send(Durability::Barrier, |_| Ok(())).await
    }

    /// Runs `command` in the next group commit and returns its result once
    /// that commit is as durable as `durability` asks: `Relaxed` answers once
    /// committed but not necessarily on disk, only for changes a crash may
    /// take back without breaking a promise (a lease).
    pub(crate) async fn send<T, F>(&self, durability: Durability, command: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let command = Command {
            run: Box::new(move |conn: Option<&Connection>| {
                let result = match conn {
                    Some(conn) => in_savepoint(conn, command),
                    None => Err(StoreError::Unavailable("the command did not run".into())),
                };
                Box::new(move |committed: Result<(), StoreError>| {
                    let _ = answer.send(committed.and(result));
                })
            }),
            durability,
        };
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

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Checkpoints after each burst of writes, pausing between them so one
/// covers many commits. PASSIVE never waits for the writer; but under
/// sustained writes it never catches up either, and the WAL only starts over
/// once a checkpoint has caught up. Past [`WAL_RESTART_FRAMES`] a RESTART
/// checkpoint holds the writer back for the copy (tens of milliseconds) so
/// the WAL is reused from its start: its size stays bounded.
fn checkpoint_after_writes(conn: Connection, written: std::sync::mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            row.get::<_, i64>(1)
        })
    };
    while written.recv().is_ok() {
        let result = match checkpoint("PASSIVE") {
            Ok(frames) if frames > WAL_RESTART_FRAMES => checkpoint("RESTART"),
            other => other,
        };
        if let Err(error) = result {
            tracing::warn!(%error, "WAL checkpoint failed; the next one will retry");
        }
        thread::sleep(CHECKPOINT_PAUSE);
    }
}

fn run(conn: Connection, mut receiver: mpsc::Receiver<Command>, wrote_tx: std::sync::mpsc::SyncSender<()>) {
    let mut replies: Vec<(Durability, Reply)> = Vec::with_capacity(MAX_COMMANDS_PER_COMMIT);
    let mut group: Vec<Command> = Vec::with_capacity(MAX_COMMANDS_PER_COMMIT);
    // A durable command that arrived while a relaxed group ran: it opens the next one.
    let mut carried: Option<Command> = None;
    // Whether a relaxed commit may not be on disk yet.
    let mut unsynced = false;
    let mut relaxed_mode = false;
    loop {
        let Some(first) = carried.take().or_else(|| receiver.blocking_recv()) else {
            break;
        };
        group.push(first);
        while group.len() < MAX_COMMANDS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let mut durability = group
            .iter()
            .map(|command| command.durability)
            .max()
            .expect("one command");
        // SQLite takes the safety level only outside a transaction.
        let relaxed = durability == Durability::Relaxed;
        if relaxed != relaxed_mode {
            let level = if relaxed { "NORMAL" } else { "FULL" };
            if let Err(error) = conn.execute_batch(&format!("PRAGMA synchronous = {level}")) {
                answer_all(group.drain(..), sqlite_error(error));
                continue;
            }
            relaxed_mode = relaxed;
        }
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            answer_all(group.drain(..), sqlite_error(error));
            continue;
        }
        let changes_before = conn.total_changes();
        replies.extend(
            group
                .drain(..)
                .map(|command| (command.durability, (command.run)(Some(&conn)))),
        );
        // What arrived meanwhile joins, unless it needs more than this commit gives.
        while replies.len() < MAX_COMMANDS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(command) if relaxed && command.durability != Durability::Relaxed => {
                    carried = Some(command);
                    break;
                }
                Ok(command) => {
                    durability = durability.max(command.durability);
                    replies.push((command.durability, (command.run)(Some(&conn))));
                }
                Err(_) => break,
            }
        }
        if durability == Durability::Barrier && unsynced {
            // Make this commit write, so it fsyncs the WAL and the relaxed frames before it.
            if let Err(error) = conn.execute_batch(
                "INSERT INTO durability_barrier (id, passed) VALUES (1, 1) \
                 ON CONFLICT (id) DO UPDATE SET passed = passed + 1",
            ) {
                tracing::error!(%error, "the durability barrier could not write");
            }
        }
        let wrote = conn.total_changes() != changes_before;
        let committed = conn.execute_batch("COMMIT").map_err(|error| {
            tracing::error!(%error, commands = replies.len(), "commit failed; nothing in this batch was acknowledged");
            let _ = conn.execute_batch("ROLLBACK");
            sqlite_error(error)
        });
        if committed.is_ok() && wrote {
            // A durable commit that wrote fsync'd the WAL, earlier frames included.
            unsynced = relaxed;
            // Full means a checkpoint is already due.
            let _ = wrote_tx.try_send(());
        }
        // Only a barrier depends on earlier commits being on disk; if its
        // write failed, only barriers are told so.
        let barrier_failed = committed.is_ok() && unsynced;
        for (needs, reply) in replies.drain(..) {
            if needs == Durability::Barrier && barrier_failed {
                reply(Err(StoreError::Unavailable(
                    "could not make earlier commits durable".into(),
                )));
            } else {
                reply(committed.clone());
            }
        }
    }
}

/// Tells every command of a group that could not start why, without running it.
fn answer_all(commands: impl Iterator<Item = Command>, error: StoreError) {
    for command in commands {
        (command.run)(None)(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The safety level a command runs under is the one its commit uses.
    fn level(conn: &Connection) -> Result<i64, StoreError> {
        conn.query_row("PRAGMA synchronous", [], |row| row.get(0))
            .map_err(sqlite_error)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relaxed_commands_commit_without_fsync_and_never_share_a_commit_with_durable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::connect(&dir.path().join("db.sqlite")).unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        conn.execute_batch("CREATE TABLE t (durable INTEGER, level INTEGER)")
            .unwrap();
        let checkpoints = crate::connect(&dir.path().join("db.sqlite")).unwrap();
        let writer = Writer::start(conn, checkpoints).unwrap();
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;

        // Many of each at once, so groups form and late arrivals are carried over.
        let mut tasks = Vec::new();
        for i in 0..400 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let durable = i % 3 == 0;
                let insert = move |conn: &Connection| {
                    let level = level(conn)?;
                    conn.execute("INSERT INTO t VALUES (?1, ?2)", (durable, level))
                        .map_err(sqlite_error)?;
                    Ok(level)
                };
                let level = if durable {
                    writer.write(insert).await
                } else {
                    writer.send(Durability::Relaxed, insert).await
                };
                (durable, level.unwrap())
            }));
        }
        let mut relaxed_levels = Vec::new();
        for task in tasks {
            let (durable, level) = task.await.unwrap();
            if durable {
                assert_eq!(level, FULL, "a durable command committed without fsync");
            } else {
                relaxed_levels.push(level);
            }
        }
        assert!(relaxed_levels.iter().all(|&level| level == NORMAL || level == FULL));
        writer.barrier().await.unwrap();
        let rows: i64 = writer
            .write(|conn| {
                conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                    .map_err(sqlite_error)
            })
            .await
            .unwrap();
        assert_eq!(rows, 400, "every command, relaxed or not, committed");

        // Alone, a relaxed command commits relaxed, and the next durable one is FULL again.
        assert_eq!(writer.send(Durability::Relaxed, level).await.unwrap(), NORMAL);
        assert_eq!(writer.write(level).await.unwrap(), FULL);

        // A barrier after a relaxed commit makes its own commit write (and so fsync).
        let passed = |writer: Writer| async move {
            writer
                .write(|conn| {
                    conn.query_row("SELECT coalesce(max(passed), 0) FROM durability_barrier", [], |row| {
                        row.get::<_, i64>(0)
                    })
                    .map_err(sqlite_error)
                })
                .await
                .unwrap()
        };
        let before = passed(writer.clone()).await;
        writer
            .send(Durability::Relaxed, |conn| {
                conn.execute("INSERT INTO t VALUES (0, 0)", [])
                    .map(|_| ())
                    .map_err(sqlite_error)
            })
            .await
            .unwrap();
        writer.barrier().await.unwrap();
        assert_eq!(passed(writer.clone()).await, before + 1);
        writer.barrier().await.unwrap();
        assert_eq!(passed(writer.clone()).await, before + 1, "nothing unsynced: no write");
    }
}
