//! A room's inbox: a bounded multi-producer queue of [`RoomMsg`] that costs
//! little while the room idles.
//!
//! tokio's `mpsc` preallocates a block of 32 message slots per channel and
//! pads its shared state to cache lines (about 0.9 KiB per room with
//! 16-byte messages, even when empty). Rooms are per user and most of them
//! idle, so this queue is a `VecDeque` under a mutex that is empty and shrunk
//! while idle, a [`Semaphore`] of free places (senders wait when the inbox is
//! full, which pushes back on the connections feeding it), and a [`Notify`]
//! that wakes the room. The mutex is held only for a queue operation, never
//! across an `.await`.
//!
//! Semantics match what the room and the registry need from a channel: FIFO
//! per sender, `close` makes every later or waiting send give its message
//! back while what was queued can still be drained with `try_recv`, and
//! `recv` ends (`None`) once the inbox is closed, or every sender is gone,
//! and nothing is left.

use super::RoomMsg;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, Semaphore};

/// Capacity an emptied queue keeps; anything above is released.
const KEEP_CAPACITY: usize = 4;

struct Queue {
    msgs: VecDeque<RoomMsg>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Free places; closed with the inbox.
    places: Semaphore,
    /// Wakes the receiver (a push, a close, the last sender leaving).
    ready: Notify,
    senders: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Queue operations cannot leave it inconsistent.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `msg` after a place was taken for it.
    fn push(&self, msg: RoomMsg) -> Result<(), RoomMsg> {
        {
            let mut q = self.lock();
            if q.closed {
                return Err(msg);
            }
            q.msgs.push_back(msg);
        }
        self.ready.notify_one();
        Ok(())
    }
}

/// The sending side. Cloning it adds a sender.
pub struct Sender {
    shared: Arc<Shared>,
}

/// The room's receiving side.
pub struct Receiver {
    shared: Arc<Shared>,
}

/// A new inbox holding at most `depth` messages.
pub fn inbox(depth: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            msgs: VecDeque::new(),
            closed: false,
        }),
        places: Semaphore::new(depth.max(1)),
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Queues `msg`, waiting while the inbox is full. Gives it back if the
    /// inbox is closed.
    pub async fn send(&self, msg: RoomMsg) -> Result<(), RoomMsg> {
        match self.shared.places.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return Err(msg),
        }
        self.shared.push(msg)
    }

    /// Queues `msg` if there is a free place now. Gives it back if the
    /// inbox is full or closed.
    pub fn try_send(&self, msg: RoomMsg) -> Result<(), RoomMsg> {
        match self.shared.places.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => return Err(msg),
        }
        self.shared.push(msg)
    }

    /// Whether the receiver closed the inbox.
    pub fn is_closed(&self) -> bool {
        self.shared.places.is_closed()
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.notify_one();
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Receiver {
    /// The next message; `None` once the inbox is closed or every sender is
    /// gone, and it is empty.
    pub async fn recv(&mut self) -> Option<RoomMsg> {
        loop {
            if let Some(m) = self.try_recv() {
                return Some(m);
            }
            if self.shared.lock().closed || self.shared.senders.load(Ordering::Acquire) == 0 {
                // A message pushed between the two checks is still there.
                return self.try_recv();
            }
            // `notify_one` stores a wake-up when nobody waits, so a push
            // after the checks above is not missed.
            self.shared.ready.notified().await;
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<RoomMsg> {
        let m = {
            let mut q = self.shared.lock();
            let m = q.msgs.pop_front();
            if m.is_none() && q.msgs.capacity() > KEEP_CAPACITY {
                q.msgs.shrink_to(KEEP_CAPACITY);
            }
            m
        };
        if m.is_some() {
            self.shared.places.add_permits(1);
        }
        m
    }

    /// Refuses every later send (and wakes waiting senders with their
    /// message). Queued messages stay for [`Receiver::try_recv`].
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.places.close();
    }
}

impl Drop for Receiver {
    /// Closes the inbox and drops what is still queued (like a channel
    /// whose receiver is gone).
    fn drop(&mut self) {
        self.close();
        let left = std::mem::take(&mut self.shared.lock().msgs);
        drop(left);
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::ConnId;
    use std::time::Duration;

    fn leave(n: u64) -> RoomMsg {
        RoomMsg::Leave { conn: ConnId(n) }
    }

    fn conn(m: Option<RoomMsg>) -> u64 {
        match m {
            Some(RoomMsg::Leave { conn }) => conn.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn fifo_bounded_and_the_full_sender_waits() {
        let (tx, mut rx) = inbox(2);
        tx.send(leave(1)).await.unwrap();
        tx.try_send(leave(2)).unwrap();
        assert!(tx.try_send(leave(3)).is_err(), "full");
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(leave(3)).await.is_ok() });
        assert_eq!(conn(rx.recv().await), 1);
        assert!(tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap()
            .unwrap());
        assert_eq!(conn(rx.recv().await), 2);
        assert_eq!(conn(rx.recv().await), 3);
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn close_gives_messages_back_and_keeps_what_was_queued() {
        let (tx, mut rx) = inbox(1);
        tx.send(leave(1)).await.unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(leave(2)).await.is_err() });
        // Let the second send start waiting for a place.
        tokio::task::yield_now().await;
        rx.close();
        assert!(tx.is_closed());
        assert!(tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap()
            .unwrap());
        assert!(tx.send(leave(3)).await.is_err());
        assert!(tx.try_send(leave(4)).is_err());
        assert_eq!(conn(rx.try_recv()), 1);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = inbox(4);
        let tx2 = tx.clone();
        tx2.send(leave(7)).await.unwrap();
        drop(tx);
        let ended = tokio::spawn(async move { (conn(rx.recv().await), rx.recv().await.is_none()) });
        tokio::task::yield_now().await;
        drop(tx2);
        let (first, ended) = tokio::time::timeout(Duration::from_secs(30), ended)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, 7);
        assert!(ended);
    }

    #[test]
    fn an_idle_inbox_releases_its_queue() {
        let (tx, mut rx) = inbox(256);
        for i in 0..100 {
            tx.try_send(leave(i)).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.shared.lock().msgs.capacity() <= KEEP_CAPACITY);
    }
}
