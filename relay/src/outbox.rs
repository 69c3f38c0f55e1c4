//! A connection's outbound queue: what the room wants written to one socket,
//! plus the room's request to close it.
//!
//! One small allocation per connection (a mutex-guarded `VecDeque` that is
//! empty, and shrunk, while the device idles, and a `Notify`), instead of a
//! channel with preallocated slots: idle sockets must be cheap. The room
//! pushes without ever blocking (its `Port::try_send` fails when `cap` frames are
//! queued, and the room then drops the device with 4005). The connection task
//! pops frames in order, and sees a close request before any queued frame.
//! The mutex is only held for a queue operation, never across an `.await`.

use crate::metrics::Metrics;
use axum::body::Bytes;
use clipmesh_proto::CloseCode;
use clipmesh_room::{Port, PortFull};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Capacity kept by an emptied queue; anything above is released.
const KEEP_CAPACITY: usize = 4;

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Bytes>,
    cap: u32,
    /// Bytes queued now, and the most allowed (one frame always fits).
    bytes: usize,
    max_bytes: usize,
    close: Option<CloseCode>,
    /// The connection ended; pushes are discarded.
    detached: bool,
}

/// What [`Outbox::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The room asked to close the socket with this code.
    Close(CloseCode),
    /// The next frame to write.
    Frame(Bytes),
    /// Nothing queued.
    Empty,
}

/// The outbound queue of one connection.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// An empty outbox holding at most `cap` frames and `max_bytes` bytes
    /// (a single frame is always accepted into an empty queue).
    pub fn new(cap: usize, max_bytes: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                cap: u32::try_from(cap.max(1)).unwrap_or(u32::MAX),
                bytes: 0,
                max_bytes,
                close: None,
                detached: false,
            }),
            notify: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Queue operations cannot leave the queue inconsistent, so a
        // poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next thing for the socket. A close request comes first.
    pub fn pop(&self) -> Next {
        let mut g = self.lock();
        if let Some(c) = g.close {
            return Next::Close(c);
        }
        match g.queue.pop_front() {
            Some(b) => {
                g.bytes -= b.len();
                self.account(-(b.len() as i64));
                Next::Frame(b)
            }
            None => {
                if g.queue.capacity() > KEEP_CAPACITY {
                    g.queue.shrink_to(KEEP_CAPACITY);
                }
                Next::Empty
            }
        }
    }

    /// Waits until something may have been pushed or a close requested.
    /// Wake-ups are never lost: a push before the wait makes it return at
    /// once.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// The connection ended: later pushes are dropped and the queue freed.
    pub fn detach(&self) {
        let mut g = self.lock();
        g.detached = true;
        g.queue = VecDeque::new();
        self.account(-(g.bytes as i64));
        g.bytes = 0;
    }

    fn account(&self, delta: i64) {
        self.metrics
            .outbound_queued_bytes
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Port for Outbox {
    fn try_send(&self, frame: Bytes) -> Result<(), PortFull> {
        {
            let mut g = self.lock();
            if g.detached || g.close.is_some() {
                // The socket is going away; its Leave will reach the room.
                return Ok(());
            }
            let over_bytes = !g.queue.is_empty() && g.bytes + frame.len() > g.max_bytes;
            if g.queue.len() >= g.cap as usize || over_bytes {
                return Err(PortFull);
            }
            g.bytes += frame.len();
            self.account(frame.len() as i64);
            g.queue.push_back(frame);
        }
        self.notify.notify_one();
        Ok(())
    }

    fn close(&self, code: CloseCode) {
        if code == CloseCode::SlowConsumer {
            Metrics::add(&self.metrics.slow_consumers, 1);
        }
        {
            let mut g = self.lock();
            g.close.get_or_insert(code);
            // Nothing queued is written after a close request: free it now,
            // not when the (possibly stalled) socket finally ends.
            g.queue = VecDeque::new();
            self.account(-(g.bytes as i64));
            g.bytes = 0;
        }
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ordered_and_close_first() {
        let o = Outbox::new(2, 1 << 20, Arc::new(Metrics::default()));
        assert_eq!(o.try_send(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(o.try_send(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(o.try_send(Bytes::from_static(b"c")), Err(PortFull));
        assert_eq!(o.pop(), Next::Frame(Bytes::from_static(b"a")));
        o.close(CloseCode::Replaced);
        o.close(CloseCode::SlowConsumer);
        assert_eq!(o.pop(), Next::Close(CloseCode::Replaced));
        // Pushes after a close are dropped quietly.
        assert_eq!(o.try_send(Bytes::from_static(b"d")), Ok(()));
    }

    #[test]
    fn byte_bound_but_one_frame_always_fits() {
        let o = Outbox::new(100, 10, Arc::new(Metrics::default()));
        assert_eq!(o.try_send(Bytes::from(vec![0; 50])), Ok(()));
        assert_eq!(o.try_send(Bytes::from(vec![0; 1])), Err(PortFull));
        assert!(matches!(o.pop(), Next::Frame(_)));
        assert_eq!(o.try_send(Bytes::from(vec![0; 6])), Ok(()));
        assert_eq!(o.try_send(Bytes::from(vec![0; 4])), Ok(()));
        assert_eq!(o.try_send(Bytes::from(vec![0; 1])), Err(PortFull));
    }

    #[test]
    fn detached_drops_and_empty_shrinks() {
        let m = Arc::new(Metrics::default());
        let o = Outbox::new(100, 1 << 20, m.clone());
        for _ in 0..50 {
            o.try_send(Bytes::from_static(b"x")).unwrap();
        }
        assert_eq!(
            m.outbound_queued_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            50
        );
        o.pop();
        o.detach();
        assert_eq!(
            m.outbound_queued_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let o = Outbox::new(100, 1 << 20, m.clone());
        for _ in 0..50 {
            o.try_send(Bytes::from_static(b"x")).unwrap();
        }
        while o.pop() != Next::Empty {}
        assert!(o.lock().queue.capacity() <= KEEP_CAPACITY);
        assert_eq!(
            m.outbound_queued_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        o.detach();
        assert_eq!(o.try_send(Bytes::from_static(b"y")), Ok(()));
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn push_before_wait_is_not_lost() {
        let o = Outbox::new(4, 1 << 20, Arc::new(Metrics::default()));
        o.try_send(Bytes::from_static(b"x")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), o.changed())
            .await
            .unwrap();
        assert_eq!(o.pop(), Next::Frame(Bytes::from_static(b"x")));
    }
}
