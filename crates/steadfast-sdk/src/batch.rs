//! Batching of the calls running jobs make (completions, step starts and
//! checkpoints): whatever queued up while earlier requests were in flight
//! goes out in one request. Nothing waits to fill a batch; a lone call goes
//! alone, on its own route and in its job's trace.

use std::future::Future;
use std::sync::Arc;

use reqwest::StatusCode;
use tokio::sync::{Semaphore, mpsc};

use crate::{Client, Error};

/// Batch requests in flight at once: while one commits, the next gathers.
const CONCURRENT_BATCHES: usize = 4;
/// Most payload bytes one batch carries, well under the server's default
/// 1 MiB body limit; a larger item goes in a request of its own.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One call a running job queued.
pub(crate) trait Item: Send + Sized + 'static {
    /// Most items one request carries.
    const MAX_PER_REQUEST: usize;

    /// What the item adds to the request body (its output), for the byte cap.
    fn bytes(&self) -> usize;

    /// Sends `batch` (one request when it holds more than one item) and
    /// answers every item.
    fn send(client: Client, batch: Vec<Self>) -> impl Future<Output = ()> + Send;
}

/// Whether a batch refused whole is worth sending again item by item: the
/// server answered it with a 4xx about the batch (an older server without
/// the route, a batch over its limits, one item it could not take). A 5xx,
/// no answer at all (storage or network down), a rate limit or quota (429)
/// or a request timeout (408) would fail each item alike, and sending them
/// one by one would multiply the load on a server that is struggling.
pub(crate) fn retry_alone(error: &Error) -> bool {
    let alike = [StatusCode::TOO_MANY_REQUESTS, StatusCode::REQUEST_TIMEOUT];
    matches!(error, Error::Api { status, .. } if status.is_client_error() && !alike.contains(status))
}

/// The queue of one kind of call, drained by one task.
pub(crate) struct Batcher<T> {
    queue: mpsc::Sender<T>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Item> Batcher<T> {
    /// `capacity`: at most one pending item per running job.
    pub(crate) fn start(client: Client, capacity: usize) -> Batcher<T> {
        let (queue, pending) = mpsc::channel(capacity.max(1));
        tokio::spawn(send_in_batches(client, pending));
        Batcher { queue }
    }

    /// Queues `item`; it answers on its own channel.
    pub(crate) async fn push(&self, item: T) -> Result<(), String> {
        self.queue
            .send(item)
            .await
            .map_err(|_| "the worker is stopping".to_owned())
    }
}

async fn send_in_batches<T: Item>(client: Client, mut pending: mpsc::Receiver<T>) {
    let in_flight = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    while let Some(first) = pending.recv().await {
        let slot = in_flight.clone().acquire_owned().await.expect("never closed");
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        let mut held = None;
        // Jobs leased together tend to reach the same point together: give
        // the others a scheduler turn to queue theirs before the batch is
        // cut (no timer: an idle worker still sends a lone call at once).
        let mut turns = 0;
        while batch.len() < T::MAX_PER_REQUEST && bytes < MAX_BATCH_BYTES && held.is_none() {
            match pending.try_recv() {
                Ok(next) => {
                    bytes += next.bytes();
                    if bytes > MAX_BATCH_BYTES {
                        held = Some(next);
                    } else {
                        batch.push(next);
                    }
                }
                Err(_) if turns < 2 => {
                    turns += 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            T::send(client.clone(), batch).await;
            if let Some(next) = held {
                T::send(client, vec![next]).await;
            }
            drop(slot);
        });
    }
}
