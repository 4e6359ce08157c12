//! The single writer, its group commit, and the WAL syncer behind it.
//!
//! One thread owns the only write connection. Requests send it closures over
//! a bounded channel; the thread takes what is waiting (up to
//! [`MAX_COMMANDS_PER_COMMIT`]), runs each inside its own savepoint within one
//! `BEGIN IMMEDIATE … COMMIT`, and hands the commit to the syncer.
//!
//! Commits run with `synchronous = NORMAL`: SQLite writes the WAL frames but
//! does not wait for the disk. A second thread, the syncer, fsyncs the WAL
//! file after commits and only then answers their *durable* commands, so an
//! answer still means the change is on disk, while the writer goes on with
//! the next group instead of waiting out the fsync (it spent a third of the
//! drain idle in it: BENCHMARKS.md, "Storage round 2"). One fsync covers
//! every commit before it, so under load one covers many groups. A WAL in
//! NORMAL mode stays consistent after a power loss (SQLite checksums its
//! frames); the syncer adds the durability.
//!
//! A committed change is visible to readers before its fsync (under FULL it
//! was visible only after). A crash of the process loses nothing (the
//! frames are in the page cache); a power loss may take back changes nobody
//! was told were durable: a lease, or a change whose answer had not been
//! sent. So a reader may, rarely, see a change that a power loss then takes
//! back: a job leased whose enqueue is lost runs, and its producer, never
//! answered, enqueues it again (at-least-once, as with any lost lease).
//!
//! *Relaxed* commands (leases) are answered as soon as their commit returns:
//! a lease is void after a crash anyway (the job is simply leased again). A
//! durable command that follows waits for an fsync that covers the relaxed
//! frames before it too. A [`Writer::barrier`] (before audit reads, so a
//! signed or exported head is never one a crash could take back) always
//! fsyncs: another process (the CLI beside a server) may have committed
//! frames this writer knows nothing of, on the same WAL file.
//!
//! If an fsync fails, the page cache may have dropped the frames it could
//! not write, and a later fsync could succeed without them, while readers
//! and the checkpointer go on using them: nothing the process does after
//! can be trusted. So the syncer fails the commands it held and ends the
//! process, as PostgreSQL does on a failed fsync; on restart SQLite recovers
//! the WAL from what is on disk, whose frames carry checksums.
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
use std::sync::{Arc, OnceLock};
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
/// tell its sender once the commit's outcome is known, and the command's
/// own error if it failed.
type Run = Box<dyn FnOnce(Option<&Connection>) -> (Reply, Option<StoreError>) + Send>;
/// Makes every WAL frame written so far durable (fsync of the WAL file).
type SyncWal = Box<dyn FnMut() -> std::io::Result<()> + Send>;
/// Set once, when an fsync failed: why nothing more is acknowledged.
type Failed = Arc<OnceLock<String>>;
/// What happens once an fsync failed and the held commands were told:
/// production ends the process; tests watch the writer refuse what follows.
type OnFailedSync = Box<dyn Fn() + Send>;

/// What a command needs from the commit that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Answered once committed; on disk by the next durable answer, lost in
    /// a power loss before it.
    Relaxed,
    /// Answered once on disk, with every commit of this writer before it.
    Durable,
    /// Durable, and answered only after an fsync that began after it
    /// committed: covers commits of other processes too.
    Barrier,
}

struct Command {
    run: Run,
    durability: Durability,
}

/// A commit handed to the syncer: whether it wrote (or carries a barrier,
/// which must fsync whatever it wrote), and the durable commands waiting
/// for it to reach the disk.
struct Committed {
    wrote: bool,
    waiting: Vec<Reply>,
}

#[derive(Debug, Clone)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer thread, its syncer (fsyncing the WAL file next to
    /// the writer's database) and its checkpointer (on `checkpoints`, a
    /// second connection to the same database); all stop when the last
    /// `Writer` is dropped.
    pub fn start(conn: Connection, checkpoints: Connection) -> Result<Writer, StartError> {
        let wal = std::fs::File::open(wal_path(&conn)?)?;
        Writer::start_with(
            conn,
            checkpoints,
            Box::new(move || wal.sync_data()),
            Box::new(|| std::process::abort()),
        )
    }

    fn start_with(
        conn: Connection,
        checkpoints: Connection,
        sync_wal: SyncWal,
        on_failed_sync: OnFailedSync,
    ) -> Result<Writer, StartError> {
        // The syncer makes commits durable; SQLite need not wait for the disk.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A RESTART checkpoint holds writers back while it waits for readers:
        // give up quickly (the next round retries) rather than stall the writer.
        checkpoints.busy_timeout(std::time::Duration::from_millis(20))?;
        // After a burst, the WAL file shrinks back to this once reused.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let (commands, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let (wrote, written) = std::sync::mpsc::sync_channel(1);
        // Unbounded, but it holds only the commits made during one fsync.
        let (to_sync, commits) = std::sync::mpsc::channel();
        let failed = Failed::default();
        thread::Builder::new()
            .name("sqlite-checkpt".into())
            .spawn(move || checkpoint_after_writes(checkpoints, written))?;
        let syncer_failed = failed.clone();
        thread::Builder::new()
            .name("sqlite-syncer".into())
            .spawn(move || sync_after_commits(sync_wal, commits, syncer_failed, on_failed_sync))?;
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, receiver, wrote, to_sync, failed))?;
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

    /// Returns once every commit so far, by any process, is on disk.
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
                let failed = result.as_ref().err().cloned();
                let reply: Reply = Box::new(move |committed: Result<(), StoreError>| {
                    let _ = answer.send(committed.and(result));
                });
                (reply, failed)
            }),
            durability,
        };
        let stopped = || StoreError::Unavailable("the storage writer has stopped".into());
        self.commands.send(command).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// The WAL file of the writer's (main) database.
fn wal_path(conn: &Connection) -> Result<std::path::PathBuf, StartError> {
    let database = conn
        .path()
        .filter(|path| !path.is_empty())
        .ok_or_else(|| StartError::Io(std::io::Error::other("the writer needs a database file, not memory")))?;
    Ok(std::path::PathBuf::from(format!("{database}-wal")))
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
    match result {
        Ok(value) => {
            conn.execute_batch("RELEASE command").map_err(sqlite_error)?;
            Ok(value)
        }
        // SQLite may have rolled the whole transaction back itself (a full
        // disk, an I/O error): no savepoint is left to undo, and the writer
        // fails the group (`run_group`).
        Err(error) if conn.is_autocommit() => Err(error),
        Err(error) => {
            conn.execute_batch("ROLLBACK TO command; RELEASE command")
                .map_err(sqlite_error)?;
            Err(error)
        }
    }
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
/// the WAL is reused from its start: its size stays bounded. (SQLite fsyncs
/// the WAL before it copies, so a checkpoint never moves unsynced frames.)
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

/// The writer's loop: take a group, run it in one transaction, commit, and
/// hand the commit to the syncer.
fn run(
    conn: Connection,
    mut receiver: mpsc::Receiver<Command>,
    wrote_tx: std::sync::mpsc::SyncSender<()>,
    to_sync: std::sync::mpsc::Sender<Committed>,
    failed: Failed,
) {
    let mut group: Vec<Command> = Vec::with_capacity(MAX_COMMANDS_PER_COMMIT);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < MAX_COMMANDS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        if let Some(reason) = failed.get() {
            answer_all(group.drain(..), StoreError::Unavailable(reason.clone()));
            continue;
        }
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            answer_all(group.drain(..), sqlite_error(error));
            continue;
        }
        let replies = run_group(&conn, &mut group, &mut receiver);
        if let Some(cause) = replies.rolled_back.clone() {
            // SQLite ended the transaction itself (a full disk, an I/O
            // error): nothing of this group was written; none of it may be
            // committed, or acknowledged.
            tracing::error!(error = %cause, commands = replies.len(), "SQLite rolled the batch back; nothing in it was acknowledged");
            for (_, reply) in replies.all {
                reply(Err(cause.clone()));
            }
            continue;
        }
        // Commands write rows only (no DDL or PRAGMA runs through the
        // writer), so the change count tells whether WAL frames were added.
        let barrier = replies
            .all
            .iter()
            .any(|(durability, _)| *durability == Durability::Barrier);
        let wrote = barrier || conn.total_changes() != replies.changes_before;
        if let Err(error) = conn.execute_batch("COMMIT") {
            tracing::error!(%error, commands = replies.len(), "commit failed; nothing in this batch was acknowledged");
            let _ = conn.execute_batch("ROLLBACK");
            let error = sqlite_error(error);
            for (_, reply) in replies.all {
                reply(Err(error.clone()));
            }
            continue;
        }
        if wrote {
            // Full means a checkpoint is already due.
            let _ = wrote_tx.try_send(());
        }
        let mut waiting = Vec::new();
        for (durability, reply) in replies.all {
            match durability {
                Durability::Relaxed => reply(Ok(())),
                Durability::Durable | Durability::Barrier => waiting.push(reply),
            }
        }
        if !wrote && waiting.is_empty() {
            continue;
        }
        if let Err(std::sync::mpsc::SendError(lost)) = to_sync.send(Committed { wrote, waiting }) {
            let error = StoreError::Unavailable("the WAL syncer has stopped".into());
            for reply in lost.waiting {
                reply(Err(error.clone()));
            }
        }
    }
}

/// The commands one transaction ran, with what to tell each.
struct Ran {
    all: Vec<(Durability, Reply)>,
    changes_before: u64,
    /// Set when SQLite rolled the whole transaction back after a command's
    /// error (it does so for a full disk or an I/O error): that error.
    rolled_back: Option<StoreError>,
}

impl Ran {
    fn len(&self) -> usize {
        self.all.len()
    }
}

/// Runs the group inside the open transaction, and whatever arrives
/// meanwhile, up to [`MAX_COMMANDS_PER_COMMIT`]. Stops at once if SQLite
/// rolls the transaction back: a command run after that would run outside
/// it, and commit on its own.
fn run_group(conn: &Connection, group: &mut Vec<Command>, receiver: &mut mpsc::Receiver<Command>) -> Ran {
    let mut ran = Ran {
        all: Vec::with_capacity(group.len()),
        changes_before: conn.total_changes(),
        rolled_back: None,
    };
    let run = |command: Command, ran: &mut Ran| {
        let (reply, failed) = (command.run)(Some(conn));
        ran.all.push((command.durability, reply));
        if conn.is_autocommit() {
            ran.rolled_back =
                Some(failed.unwrap_or_else(|| StoreError::Unavailable("SQLite rolled the transaction back".into())));
        }
    };
    let mut pending = group.drain(..);
    for command in pending.by_ref() {
        run(command, &mut ran);
        if ran.rolled_back.is_some() {
            break;
        }
    }
    // Commands not run because the transaction is gone: told so, not run.
    let skipped: Vec<Command> = pending.collect();
    while ran.rolled_back.is_none() && ran.all.len() < MAX_COMMANDS_PER_COMMIT {
        match receiver.try_recv() {
            Ok(command) => run(command, &mut ran),
            Err(_) => break,
        }
    }
    for command in skipped {
        let (reply, _) = (command.run)(None);
        ran.all.push((command.durability, reply));
    }
    ran
}

/// The syncer's loop: take every commit handed over so far, fsync the WAL
/// once if any of them wrote since the last fsync and someone waits, then
/// answer the waiting commands.
fn sync_after_commits(
    mut sync_wal: SyncWal,
    commits: std::sync::mpsc::Receiver<Committed>,
    failed: Failed,
    on_failed_sync: OnFailedSync,
) {
    // A commit wrote frames that no fsync has covered yet.
    let mut unsynced = false;
    while let Ok(first) = commits.recv() {
        let mut waiting = Vec::new();
        for commit in std::iter::once(first).chain(commits.try_iter()) {
            unsynced |= commit.wrote;
            waiting.extend(commit.waiting);
        }
        if waiting.is_empty() {
            // Only relaxed commits: nobody waits for the disk yet.
            continue;
        }
        let mut sync_failed = false;
        let outcome = match failed.get() {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None if !unsynced => Ok(()),
            None => match sync_wal() {
                Ok(()) => {
                    unsynced = false;
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(%error, "fsync of the WAL failed; stopping: what is on disk is all that can be trusted");
                    let reason = format!("the storage could not be made durable ({error}); restart the server");
                    let _ = failed.set(reason.clone());
                    sync_failed = true;
                    Err(StoreError::Unavailable(reason))
                }
            },
        };
        for reply in waiting {
            reply(outcome.clone());
        }
        if sync_failed {
            on_failed_sync();
        }
    }
}

/// Tells every command of a group that could not start why, without running it.
fn answer_all(commands: impl Iterator<Item = Command>, error: StoreError) {
    for command in commands {
        let (reply, _) = (command.run)(None);
        reply(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use super::*;

    /// The longest any step of these tests may take before it counts as hung.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn open_writer(
        dir: &std::path::Path,
        sync_wal: impl FnMut() -> std::io::Result<()> + Send + 'static,
        on_failed_sync: impl Fn() + Send + 'static,
    ) -> Writer {
        let mut conn = crate::connect(&dir.join("db.sqlite")).unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        conn.execute_batch("CREATE TABLE t (durable INTEGER)").unwrap();
        let checkpoints = crate::connect(&dir.join("db.sqlite")).unwrap();
        Writer::start_with(conn, checkpoints, Box::new(sync_wal), Box::new(on_failed_sync)).unwrap()
    }

    /// An fsync of the real WAL file, counted.
    fn counted_sync(dir: &std::path::Path, syncs: &Arc<AtomicUsize>) -> impl FnMut() -> std::io::Result<()> + use<> {
        let (wal, syncs) = (dir.join("db.sqlite-wal"), syncs.clone());
        move || {
            std::fs::File::open(&wal)?.sync_data()?;
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn insert(durable: bool) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |conn: &Connection| {
            conn.execute("INSERT INTO t VALUES (?1)", [durable])
                .map(|_| ())
                .map_err(sqlite_error)
        }
    }

    fn rows(conn: &Connection) -> Result<i64, StoreError> {
        conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .map_err(sqlite_error)
    }

    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
    }

    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, future)
            .await
            .expect("hung: an answer never came")
    }

    /// A full database fails the command that overflows it with
    /// `StorageFull`. When SQLite rolls the group's whole transaction back
    /// for it, every command of the group is told so, and none runs outside
    /// the transaction (it would commit on its own while the group is
    /// answered with an error): what was acknowledged is exactly what is
    /// there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_that_sqlite_rolls_back_is_failed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let writer = open_writer(dir.path(), || Ok(()), || {});
        within(writer.send(Durability::Durable, |conn| {
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |row| row.get(0))
                .map_err(sqlite_error)?;
            conn.pragma_update(None, "max_page_count", pages).map_err(sqlite_error)
        }))
        .await
        .unwrap();

        // The first command holds the writer until the others are queued,
        // so all four run in one group: insert, insert, overflow, insert.
        let (queued, wait_for_queue) = std::sync::mpsc::channel::<()>();
        let (holding, held) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .send(Durability::Durable, move |conn| {
                        let _ = holding.send(());
                        wait_for_queue.recv().expect("the test queues the others");
                        insert(true)(conn)
                    })
                    .await
            }
        });
        within(held).await.expect("the holder runs");
        let before = tokio::spawn({
            let writer = writer.clone();
            async move { writer.send(Durability::Durable, insert(true)).await }
        });
        let overflow = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .send(Durability::Durable, |conn| {
                        conn.execute("INSERT INTO t VALUES (zeroblob(1000000))", [])
                            .map(|_| ())
                            .map_err(sqlite_error)
                    })
                    .await
            }
        });
        let after = tokio::spawn({
            let writer = writer.clone();
            async move { writer.send(Durability::Durable, insert(true)).await }
        });
        // The three are in the writer's queue once its capacity shows them.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while writer.commands.capacity() > QUEUE_CAPACITY - 3 {
            assert!(tokio::time::Instant::now() < deadline, "the commands never queued");
            tokio::task::yield_now().await;
        }
        queued.send(()).unwrap();

        // SQLite rolls back either the overflowing statement or the whole
        // transaction; either way exactly what was acknowledged is there.
        let overflow = within(overflow).await.unwrap();
        assert!(matches!(overflow, Err(StoreError::StorageFull)), "{overflow:?}");
        let mut acknowledged = 0;
        for answer in [holder, before, after] {
            match within(answer).await.unwrap() {
                Ok(()) => acknowledged += 1,
                Err(StoreError::StorageFull) => {}
                Err(other) => panic!("{other}"),
            }
        }
        let left = within(writer.send(Durability::Durable, rows)).await.unwrap();
        assert_eq!(left, acknowledged, "only what was acknowledged is there");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_answers_wait_for_the_wal_fsync_and_relaxed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let syncs = Arc::new(AtomicUsize::new(0));
        let mut sync = counted_sync(dir.path(), &syncs);
        let writer = open_writer(
            dir.path(),
            move || {
                gate.recv().map_err(std::io::Error::other)?;
                sync()
            },
            || {},
        );

        // The durable write is sent first and commits first; its answer is
        // held while the fsync is held back, while relaxed ones are answered.
        let mut durable = Box::pin(writer.write(insert(true)));
        assert!(poll_once(&mut durable).is_pending());
        within(writer.send(Durability::Relaxed, insert(false))).await.unwrap();
        assert!(
            poll_once(&mut durable).is_pending(),
            "a durable write was answered before the fsync"
        );
        let committed = within(writer.send(Durability::Relaxed, rows)).await.unwrap();
        assert_eq!(committed, 2, "both committed");
        open_gate.send(()).unwrap();
        within(durable).await.unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);

        // A barrier fsyncs even when this writer wrote nothing since: another
        // process may have.
        let mut barrier = Box::pin(writer.barrier());
        assert!(poll_once(&mut barrier).is_pending());
        open_gate.send(()).unwrap();
        within(barrier).await.unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 2);

        // A durable command that wrote nothing, after everything was synced,
        // needs no fsync (one now would fail: the gate is gone).
        drop(open_gate);
        assert_eq!(within(writer.write(rows)).await.unwrap(), 2);
        assert_eq!(syncs.load(Ordering::SeqCst), 2, "nothing unsynced: no fsync");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_of_both_kinds_all_commit_and_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let syncs = Arc::new(AtomicUsize::new(0));
        let mut sync = counted_sync(dir.path(), &syncs);
        let mut first = true;
        let writer = open_writer(
            dir.path(),
            move || {
                // The first fsync waits until every command has committed.
                if std::mem::take(&mut first) {
                    gate.recv().map_err(std::io::Error::other)?;
                }
                sync()
            },
            || {},
        );
        let mut tasks = Vec::new();
        for i in 0..400 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    writer.write(insert(true)).await
                } else {
                    writer.send(Durability::Relaxed, insert(false)).await
                }
            }));
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while within(writer.send(Durability::Relaxed, rows)).await.unwrap() < 400 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the commands never all committed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        open_gate.send(()).unwrap();
        for task in tasks {
            within(task).await.unwrap().unwrap();
        }
        // The held fsync, then at most one for what queued behind it: 134
        // durable writes, two fsyncs.
        let syncs = syncs.load(Ordering::SeqCst);
        assert!((1..=2).contains(&syncs), "{syncs} fsyncs for 134 durable writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_fsync_fails_its_writes_stops_the_process_and_refuses_every_write_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut failures = 1;
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let writer = open_writer(
            dir.path(),
            move || {
                // Fails once; a later fsync would succeed (and prove nothing).
                if std::mem::take(&mut failures) == 1 {
                    Err(std::io::Error::other("injected EIO"))
                } else {
                    Ok(())
                }
            },
            move || stop.store(true, Ordering::SeqCst),
        );
        let error = within(writer.write(insert(true))).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Unavailable(reason) if reason.contains("injected EIO")),
            "{error:?}"
        );
        // The syncer answers the held commands first, then stops the process.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !stopped.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the process was not told to stop");
            tokio::task::yield_now().await;
        }
        for durability in [Durability::Durable, Durability::Relaxed, Durability::Barrier] {
            let error = within(writer.send(durability, insert(false))).await.unwrap_err();
            assert!(
                matches!(&error, StoreError::Unavailable(reason) if reason.contains("injected EIO")),
                "{durability:?}: {error:?}"
            );
        }
    }
}
