//! Memory budgets of the request pipeline.
//!
//! Requests (Kafka's `queued.max.request.bytes`, `kafka.max_request_memory_bytes`)
//! are counted as their bytes arrive, not when a frame's size is announced,
//! so a client that announces a large frame and trickles it holds only what
//! it sent. The budget is split: three quarters for Produce, a quarter for
//! every other API, so that Produce requests waiting for room in the write
//! buffer (a slow object store) never hold the memory that Fetch, group
//! heartbeats and metadata requests need. A frame that finds its pool
//! exhausted gives back what it holds and queues for its whole size (the
//! semaphore is fair: the first in the queue is served first), so frames
//! that are still arriving never hold each other up for good; a stalled one
//! holds what it sent until its read deadline.
//!
//! Responses (`kafka.max_response_memory_bytes`): a Fetch reserves the most
//! its response may hold before it reads anything, keeps the bytes it
//! needed, and gives them back once the response is written. A connection
//! holds at most a quarter of the budget (or one whole Fetch), so a client
//! that stops reading cannot hold the others' Fetches up.
//!
//! Decompression: produced batches are inflated (to check them) by at most
//! as many threads at once as there are cores, each inflated batch bounded
//! (`protocol::records::MAX_INFLATED_BYTES`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, TryAcquireError};
use tokio::time::Instant;

/// Largest piece of a frame read (and counted) at once.
const CHUNK_BYTES: usize = 1024 * 1024;

pub struct Budgets {
    produce: Semaphore,
    produce_bytes: usize,
    other: Semaphore,
    other_bytes: usize,
    /// Bytes of Fetch responses being built or waiting to be written.
    pub responses: Arc<Semaphore>,
    share_bytes: usize,
    /// Threads inflating compressed batches now.
    pub inflating: Semaphore,
}

fn semaphore(bytes: usize) -> Semaphore {
    Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))
}

impl Budgets {
    pub fn new(request_bytes: usize, response_bytes: usize, fetch_max_bytes: usize) -> Self {
        let other_bytes = (request_bytes / 4).max(256 * 1024);
        let produce_bytes = request_bytes.saturating_sub(other_bytes).max(256 * 1024);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            produce: semaphore(produce_bytes),
            produce_bytes,
            other: semaphore(other_bytes),
            other_bytes,
            responses: Arc::new(semaphore(response_bytes)),
            share_bytes: (response_bytes / 4)
                .max(fetch_max_bytes + 64 * 1024)
                .min(response_bytes),
            inflating: Semaphore::new(cores.max(2)),
        }
    }

    fn pool(&self, api_key: i16) -> (&Semaphore, usize) {
        if api_key == ApiKey::Produce as i16 {
            (&self.produce, self.produce_bytes)
        } else {
            (&self.other, self.other_bytes)
        }
    }

    /// A new connection's share of the response budget: a quarter of it,
    /// or one Fetch of `fetch_max_bytes` if that is more, so that a client
    /// that stops reading holds at most that much until its write timeout.
    pub fn connection_share(&self) -> Arc<Semaphore> {
        Arc::new(semaphore(self.share_bytes))
    }

    /// Reserves room for a Fetch response of at most `max_bytes` (clamped
    /// to the connection's share), from the connection's share and then
    /// from the whole budget, waiting for both.
    pub async fn reserve_response(
        &self,
        share: Arc<Semaphore>,
        max_bytes: usize,
    ) -> Option<ResponseMemory> {
        let want = max_bytes
            .clamp(1, self.share_bytes.min(Semaphore::MAX_PERMITS))
            .min(u32::MAX as usize) as u32;
        let mine = Arc::clone(&share).acquire_many_owned(want).await.ok()?;
        let all = Arc::clone(&self.responses)
            .acquire_many_owned(want)
            .await
            .ok()?;
        Some(ResponseMemory {
            share,
            budget: Arc::clone(&self.responses),
            want,
            mine: Some(mine),
            all: Some(all),
        })
    }
}

/// Response memory held by a response until it is written. A long-polling
/// Fetch gives it back while it waits and takes it again (without waiting)
/// to read, so waiting consumers hold nothing.
pub struct ResponseMemory {
    share: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    want: u32,
    mine: Option<OwnedSemaphorePermit>,
    all: Option<OwnedSemaphorePermit>,
}

impl ResponseMemory {
    /// Keeps `bytes` of the reservation and gives back the rest.
    pub fn keep_only(&mut self, bytes: usize) {
        for permit in [&mut self.mine, &mut self.all].into_iter().flatten() {
            let held = permit.num_permits();
            if held > bytes.max(1) {
                drop(permit.split(held - bytes.max(1)));
            }
        }
    }

    /// Gives the reservation back (while a Fetch waits for data).
    pub fn pause(&mut self) {
        self.mine = None;
        self.all = None;
    }

    /// Takes the reservation again if there is room now; false if not (the
    /// Fetch then answers with what it has).
    pub fn resume(&mut self) -> bool {
        if self.mine.is_some() {
            return true;
        }
        let Ok(mine) = Arc::clone(&self.share).try_acquire_many_owned(self.want) else {
            return false;
        };
        let Ok(all) = Arc::clone(&self.budget).try_acquire_many_owned(self.want) else {
            return false;
        };
        self.mine = Some(mine);
        self.all = Some(all);
        true
    }
}

/// Reads the body of a frame of `size` bytes (the size prefix already
/// read), counting its bytes in the request budget of its API as they
/// arrive. Reading must progress: the frame is given `deadline` to arrive,
/// not counting the time spent waiting for memory.
pub async fn read_frame<'a, R: AsyncRead + Unpin>(
    budgets: &'a Budgets,
    reader: &mut R,
    size: usize,
    deadline: Duration,
) -> Result<(Bytes, Option<SemaphorePermit<'a>>), String> {
    let mut until = Instant::now() + deadline;
    let late = |got: usize| {
        format!("frame of {size} bytes not received within {deadline:?} ({got} arrived)")
    };
    let mut buf = BytesMut::with_capacity(size.min(64 * 1024));
    // The API key (the first two bytes) says which pool counts the rest.
    let head = size.min(2);
    buf.resize(head, 0);
    match tokio::time::timeout_at(until, reader.read_exact(&mut buf[..head])).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("read failed: {e}")),
        Err(_) => return Err(late(0)),
    }
    let api_key = if head == 2 {
        i16::from_be_bytes([buf[0], buf[1]])
    } else {
        -1
    };
    let (pool, pool_bytes) = budgets.pool(api_key);
    // A frame larger than its pool is counted as the whole pool.
    let counted_at_most = size.min(pool_bytes);
    let mut held: Option<SemaphorePermit<'a>> = None;
    while buf.len() < size {
        let want = (size - buf.len()).min(CHUNK_BYTES);
        buf.reserve(want);
        let mut piece = (&mut *reader).take(want as u64);
        let arrived = match tokio::time::timeout_at(until, piece.read_buf(&mut buf)).await {
            Ok(Ok(0)) => {
                return Err(format!("frame truncated at {} of {size} bytes", buf.len()));
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Err(_) => return Err(late(buf.len())),
        };
        // Count what arrived.
        let counted = held.as_ref().map_or(0, SemaphorePermit::num_permits);
        let more = arrived.min(counted_at_most.saturating_sub(counted));
        if more == 0 {
            continue;
        }
        match pool.try_acquire_many(more as u32) {
            Ok(permit) => match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            },
            Err(TryAcquireError::NoPermits) => {
                // Give back what this frame holds, then wait for all of
                // it: nobody waits while holding part of the pool.
                drop(held.take());
                let waiting = Instant::now();
                let permit = pool
                    .acquire_many(counted_at_most as u32)
                    .await
                    .map_err(|_| "shutting down".to_string())?;
                held = Some(permit);
                until += waiting.elapsed();
            }
            Err(TryAcquireError::Closed) => return Err("shutting down".into()),
        }
    }
    Ok((buf.freeze(), held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_counted_as_their_bytes_arrive() {
        use tokio::io::AsyncWriteExt;
        // Produce has 3 MiB, the other APIs 1 MiB.
        let budgets = Arc::new(Budgets::new(4 * 1024 * 1024, 1024 * 1024, 1024));
        let read = |server: tokio::io::DuplexStream, size: usize| {
            let budgets = Arc::clone(&budgets);
            let mut server = server;
            tokio::spawn(async move {
                let (frame, held) = read_frame(&budgets, &mut server, size, Duration::from_secs(5))
                    .await
                    .expect("frame");
                (frame.len(), held.map(|h| h.num_permits()))
            })
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let whole = read(server, 10);
        client
            .write_all(&[0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .expect("write");
        assert_eq!(whole.await.expect("task"), (10, Some(8)));
        // A trickled Metadata frame of 2 MiB holds only what arrived.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let trickled = read(server, 2 * 1024 * 1024);
        client.write_all(&[0, 3]).await.expect("write");
        client.write_all(&[9; 100]).await.expect("write");
        // Counted once read: wait for that, not for a guessed time.
        tokio::time::timeout(Duration::from_secs(10), async {
            while budgets.other.available_permits() != 1024 * 1024 - 100 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the 100 bytes counted");
        assert_eq!(budgets.produce.available_permits(), 3 * 1024 * 1024);
        // A Produce frame past its pool is read whole, counted as the pool;
        // the trickler's 100 bytes are no obstacle to the other pool.
        let (mut producer, server) = tokio::io::duplex(64 * 1024);
        let big = read(server, 4 * 1024 * 1024);
        producer
            .write_all(&vec![0u8; 4 * 1024 * 1024])
            .await
            .expect("write");
        assert_eq!(
            big.await.expect("task"),
            (4 * 1024 * 1024, Some(3 * 1024 * 1024))
        );
        // Two Metadata frames that need more than the pool together: the
        // second waits for all of it, holding nothing, until the first is
        // read and dropped (the trickler finishes its frame).
        let (mut second_client, server) = tokio::io::duplex(64 * 1024);
        let second = read(server, 1024 * 1024);
        second_client.write_all(&[0, 3]).await.expect("write");
        second_client
            .write_all(&vec![5u8; 1024 * 1024 - 2])
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "waits for the pool");
        client
            .write_all(&vec![9u8; 2 * 1024 * 1024 - 102])
            .await
            .expect("write");
        assert_eq!(
            trickled.await.expect("task"),
            (2 * 1024 * 1024, Some(1024 * 1024))
        );
        assert_eq!(
            second.await.expect("task"),
            (1024 * 1024, Some(1024 * 1024))
        );
    }

    #[test]
    fn responses_keep_what_they_use() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let budgets = Budgets::new(4 * 1024 * 1024, 4_000_000, 100_000);
        let share = budgets.connection_share();
        let mut memory = runtime
            .block_on(budgets.reserve_response(Arc::clone(&share), 5_000_000))
            .expect("memory");
        assert_eq!(share.available_permits(), 0, "clamped to the share");
        assert_eq!(budgets.responses.available_permits(), 3_000_000);
        memory.keep_only(300);
        assert_eq!(share.available_permits(), 1_000_000 - 300);
        assert_eq!(budgets.responses.available_permits(), 4_000_000 - 300);
        memory.pause();
        assert_eq!(budgets.responses.available_permits(), 4_000_000);
        assert_eq!(share.available_permits(), 1_000_000);
        assert!(memory.resume());
        assert_eq!(share.available_permits(), 0);
        memory.pause();
        let _other = budgets.responses.try_acquire_many(3_500_000).expect("room");
        assert!(!memory.resume(), "no room: answers with what it has");
        assert_eq!(share.available_permits(), 1_000_000);
    }
}
