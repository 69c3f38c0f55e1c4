//! Batched clip writes: the rooms' newest-clip writes that arrive within
//! [`BATCH_WINDOW`] of each other share one blocking hop and one SQLite
//! transaction.
//!
//! A busy relay has thousands of rooms, each writing its newest clip as soon
//! as its previous write ended (the publishers' `Ack`s wait for the commit).
//! One `spawn_blocking` hop and one commit
//! per write cost more CPU (and wake more threads) than the fan-out itself,
//! so [`Store::save_clip`] queues the write here and the first write of a
//! batch starts a task that waits [`BATCH_WINDOW`], takes everything queued
//! by then and writes it in one transaction. Each caller learns whether its
//! own write succeeded. The batch task belongs to the store's tracker, and
//! [`Store::flush_batches`] (called when the relay stops) waits until every
//! queued write is committed.

use super::{Db, Store, StoreError};
use axum::body::Bytes;
use clipmesh_proto::{DeviceId, UserId};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long the first write of a batch waits for others (group commit).
/// Every publisher's `Ack` waits up to this long plus the commit.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Most writes in one transaction; more start another batch at once.
pub const BATCH_MAX: usize = 512;

/// Rows written between two yields of the blocking thread.
const YIELD_EVERY: usize = 4;

/// A room's newest clip and its new sequence floor, as one row write.
#[derive(Clone, Debug)]
pub struct ClipWrite {
    /// The room.
    pub user: UserId,
    /// The clip's sequence number.
    pub seq: u64,
    /// Who published it.
    pub from: DeviceId,
    /// The sealed envelope (`None` when clips are not kept).
    pub envelope: Option<Bytes>,
    /// When it was published, Unix seconds.
    pub stored_at: i64,
    /// The room's sequence floor after this write (never lowered).
    pub floor: u64,
}

struct Job {
    write: ClipWrite,
    done: oneshot::Sender<bool>,
}

/// The writes waiting for the next batch.
#[derive(Default)]
pub(super) struct Pending {
    jobs: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A batch task is waiting or writing: new jobs join its queue.
    scheduled: bool,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Pushing to or taking a Vec cannot leave it inconsistent.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store {
    /// Writes a room's newest clip and raises its sequence floor, batched
    /// with other rooms' writes. Resolves to whether the write was stored.
    /// Must be called within a tokio runtime (it may start the batch task).
    pub fn save_clip(&self, write: ClipWrite) -> oneshot::Receiver<bool> {
        let (done, rx) = oneshot::channel();
        let start = {
            let mut q = self.pending.lock();
            q.jobs.push(Job { write, done });
            !std::mem::replace(&mut q.scheduled, true)
        };
        if start {
            self.batches.spawn(self.clone().run_batches());
        }
        rx
    }

    /// Waits until every clip write queued so far is committed (or has
    /// failed and told its caller). The relay calls it when it stops, after
    /// the rooms ended and before the final checkpoint, so that a clip
    /// published just before shutdown is not lost with its batch task.
    pub async fn flush_batches(&self) {
        self.batches.close();
        self.batches.wait().await;
        self.batches.reopen();
    }

    /// Waits the batch window, then writes batches until the queue is empty.
    async fn run_batches(self) {
        tokio::time::sleep(BATCH_WINDOW).await;
        loop {
            let jobs = {
                let mut q = self.pending.lock();
                if q.jobs.is_empty() {
                    q.scheduled = false;
                    return;
                }
                let n = q.jobs.len().min(BATCH_MAX);
                q.jobs.drain(..n).collect::<Vec<_>>()
            };
            let (jobs, ok) = match self
                .call(move |db| {
                    let started = std::time::Instant::now();
                    let ok = db.save_clips(jobs.iter().map(|j| &j.write));
                    tracing::debug!(
                        rows = jobs.len(),
                        us = started.elapsed().as_micros() as u64,
                        "wrote room clips"
                    );
                    Ok((jobs, ok))
                })
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // The jobs went with the failed call; their callers see
                    // a dropped sender, i.e. a failed write.
                    tracing::warn!(error = %e, "saving room state failed");
                    continue;
                }
            };
            for (job, ok) in jobs.into_iter().zip(ok) {
                let _ = job.done.send(ok);
            }
        }
    }
}

impl Db {
    /// Writes each clip (see [`Db::save_clip`]) in one transaction. If the
    /// transaction fails, writes them one by one so that one bad row does
    /// not fail the others. Returns, per write, whether it was stored.
    pub fn save_clips<'a>(
        &mut self,
        writes: impl Iterator<Item = &'a ClipWrite> + Clone,
    ) -> Vec<bool> {
        let all = (|| {
            let tx = self.conn.transaction()?;
            for (i, w) in writes.clone().enumerate() {
                if i > 0 && i % YIELD_EVERY == 0 {
                    // Let the runtime's worker run between a few rows: on a
                    // one-core host this thread would otherwise hold the CPU
                    // for the whole batch (under a real-time policy nothing
                    // preempts it), delaying every socket.
                    std::thread::yield_now();
                }
                save_clip(&tx, w)?;
            }
            tx.commit()?;
            Ok::<_, StoreError>(())
        })();
        match all {
            Ok(()) => writes.map(|_| true).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "batched room write failed; writing rows one by one");
                writes
                    .map(|w| match save_clip(&self.conn, w) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "saving room state failed");
                            false
                        }
                    })
                    .collect()
            }
        }
    }

    /// Stores a room's newest clip, replacing the previous one, and raises
    /// its sequence floor to `write.floor` (never lowers it). Ignored if the
    /// user no longer exists.
    pub fn save_clip(&self, write: &ClipWrite) -> Result<(), StoreError> {
        save_clip(&self.conn, write)
    }
}

fn save_clip(conn: &rusqlite::Connection, w: &ClipWrite) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(
        "INSERT INTO room_state (user_id, seq, from_device, envelope, stored_at, seq_floor) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1) \
         ON CONFLICT(user_id) DO UPDATE SET seq = excluded.seq, \
         from_device = excluded.from_device, envelope = excluded.envelope, \
         stored_at = excluded.stored_at, seq_floor = MAX(seq_floor, excluded.seq_floor)",
    )?;
    st.execute(rusqlite::params![
        super::sql_id(w.user.0),
        super::sql_id(w.seq),
        super::sql_id(w.from.0),
        w.envelope.as_deref(),
        w.stored_at,
        super::sql_id(w.floor),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::user;

    fn write(user: UserId, seq: u64, floor: u64) -> ClipWrite {
        ClipWrite {
            user,
            seq,
            from: DeviceId(9),
            envelope: Some(Bytes::from_static(b"sealed")),
            stored_at: 5,
            floor,
        }
    }

    #[tokio::test]
    async fn batched_writes_store_each_room_and_never_lower_the_floor() {
        let mut db = Db::open_in_memory().unwrap();
        let users: Vec<UserId> = (0..3).map(|i| user(&mut db, &format!("u{i}"))).collect();
        let store = Store::new(db);
        let replies: Vec<_> = users
            .iter()
            .map(|&u| store.save_clip(write(u, 7, 1007)))
            .collect();
        // A write for a user that does not exist is ignored, not an error.
        let ghost = store.save_clip(write(UserId(999), 1, 2));
        for r in replies {
            assert!(r.await.unwrap());
        }
        assert!(ghost.await.unwrap());
        // A later write with a lower floor keeps the higher one.
        assert!(store.save_clip(write(users[0], 8, 500)).await.unwrap());
        store
            .call(move |db| {
                let rec = db.load_room(users[0])?.expect("stored");
                assert_eq!((rec.seq, rec.from, rec.stored_at), (8, DeviceId(9), 5));
                assert_eq!(rec.envelope.as_deref(), Some(&b"sealed"[..]));
                assert_eq!(db.seq_floor(users[0])?, 1007);
                assert_eq!(db.seq_floor(users[1])?, 1007);
                assert!(db.load_room(UserId(999))?.is_none());
                Ok(())
            })
            .await
            .unwrap();
    }

    // The test runtime has one thread: the batch task cannot run before
    // the test awaits, so the first reply is still pending when checked.
    #[tokio::test]
    async fn flush_waits_for_a_queued_batch() {
        let mut db = Db::open_in_memory().unwrap();
        let u = user(&mut db, "u");
        let store = Store::new(db);
        let mut reply = store.save_clip(write(u, 3, 1003));
        // Queued: the batch task is still in its window.
        assert!(reply.try_recv().is_err());
        store.flush_batches().await;
        assert_eq!(reply.try_recv(), Ok(true));
        assert!(store.batches.is_empty());
        let floor = store.call(move |db| db.seq_floor(u)).await.unwrap();
        assert_eq!(floor, 1003);
        // The tracker takes new batches after a flush.
        assert!(store.save_clip(write(u, 4, 1004)).await.unwrap());
    }
}
