//! Wakes long-polling lease requests when their queue may have work.
//!
//! One watch channel per (tenant, queue) carries a counter that moves on
//! every wake. A waiter marks the current value as seen *before* it tries to
//! lease, so a job enqueued between its empty lease and its wait still wakes it.

use std::collections::HashMap;
use std::sync::Mutex;

use steadfast_core::{QueueName, TenantId};
use tokio::sync::watch;

type QueueKey = (TenantId, QueueName);

#[derive(Debug, Default)]
pub struct Wakeups {
    channels: Mutex<HashMap<QueueKey, watch::Sender<u64>>>,
}

impl Wakeups {
    pub fn subscribe(&self, tenant: TenantId, queue: &QueueName) -> watch::Receiver<u64> {
        let mut channels = self.channels.lock().expect("not poisoned");
        channels
            .entry((tenant, queue.clone()))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn wake(&self, tenant: TenantId, queue: &QueueName) {
        let mut channels = self.channels.lock().expect("not poisoned");
        let key = (tenant, queue.clone());
        if let Some(sender) = channels.get(&key) {
            if sender.receiver_count() == 0 {
                // Nobody waits here any more; forget the queue so the map stays
                // bounded by the queues that workers actually poll.
                channels.remove(&key);
            } else {
                sender.send_modify(|generation| *generation = generation.wrapping_add(1));
            }
        }
    }
}
