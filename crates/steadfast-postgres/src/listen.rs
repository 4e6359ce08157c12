//! LISTEN for ready queues, so a job enqueued on one node wakes the workers
//! long-polling on every other node (a node hears its own commits at once,
//! from [`PostgresStore::announce`], and skips their echo). A dedicated
//! connection, reconnected on failure.

use std::time::Duration;

use futures::StreamExt;
use steadfast_core::{QueueName, TenantId};
use steadfast_store::ReadyCallback;
use tokio_postgres::AsyncMessage;

use crate::PostgresStore;

fn parse(payload: &str) -> Option<(TenantId, QueueName)> {
    let (tenant, queue) = payload.split_once(' ')?;
    Some((tenant.parse().ok()?, QueueName::new(queue).ok()?))
}

impl PostgresStore {
    /// Calls `on_ready` for every queue that gains ready jobs: at once for
    /// this node's commits, through `LISTEN` for other nodes'.
    pub(crate) fn spawn_listener(&self, on_ready: ReadyCallback) {
        self.announcements
            .local
            .lock()
            .expect("the subscriber list is never poisoned")
            .push(on_ready.clone());
        let target = self.target.clone();
        let announcements = self.announcements.clone();
        tokio::spawn(async move {
            loop {
                match target.connect().await {
                    Ok((client, mut connection)) => {
                        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                        let listening = async {
                            client.batch_execute("LISTEN steadfast_ready").await?;
                            Ok::<_, tokio_postgres::Error>(())
                        };
                        // The LISTEN request completes only while the connection is polled.
                        let (listen_result, stream_end) = tokio::join!(listening, async {
                            while let Some(message) = messages.next().await {
                                match message {
                                    // This node's own announcements: their waiters were woken at commit.
                                    Ok(AsyncMessage::Notification(note)) if announcements.is_own(note.process_id()) => {
                                    }
                                    Ok(AsyncMessage::Notification(note)) => {
                                        if let Some((tenant, queue)) = parse(note.payload()) {
                                            on_ready(tenant, queue);
                                        }
                                    }
                                    Ok(_) => {}
                                    Err(error) => return Some(error),
                                }
                            }
                            None
                        });
                        if let Err(error) = listen_result {
                            tracing::warn!(%error, "LISTEN failed");
                        }
                        if let Some(error) = stream_end {
                            tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot open the LISTEN connection; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
