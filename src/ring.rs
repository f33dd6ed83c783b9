//! Lock-free ring hand-off between pipeline threads.
//!
//! A [`ringbuf`] SPSC ring plus two atomics: `closed` (the producer has finished) and the consumer's
//! thread handle for a wake-up. Every producer of a ring that [`pop_wait`] consumes wakes its consumer
//! after pushing ([`push_all_blocking`], the microphone relay), so a consumer sleeps until there is
//! work; its `park_timeout` is only a safety net (a producer that died without closing). The audio
//! callback, which makes no syscalls, pushes into a ring of its own that the microphone thread polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Shared end-of-stream flag and wake-up handle for one ring.
#[derive(Debug, Default)]
pub struct RingSignal {
    closed: AtomicBool,
    consumer: OnceLock<Thread>,
}

impl RingSignal {
    /// Marks the stream finished and wakes the consumer.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }
    /// Whether the producer has finished.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    /// Registers the calling thread as the consumer to wake.
    pub fn register_consumer(&self) {
        let _ = self.consumer.set(std::thread::current());
    }
    /// Wakes the consumer (a futex wake; not for the audio callback).
    pub fn wake(&self) {
        if let Some(t) = self.consumer.get() {
            t.unpark();
        }
    }
}

/// Longest a consumer sleeps on an empty ring without a wake-up. Producers wake their consumer on every
/// push, so this bounds only how late a consumer notices a producer that died without closing; a short
/// poll here (it was 3 ms) costs a context switch per thread every few milliseconds for nothing.
pub const POLL: Duration = Duration::from_millis(50);

/// Creates a ring of `capacity` items with its signal.
pub fn ring<T>(capacity: usize) -> (HeapProd<T>, HeapCons<T>, Arc<RingSignal>) {
    let (p, c) = HeapRb::<T>::new(capacity.max(1)).split();
    (p, c, Arc::new(RingSignal::default()))
}

/// Pushes all of `items` into `prod`, waiting while the ring is full (for sources that must not
/// drop: files and stdin). Returns `false` if `stop` was raised while waiting, or if the consumer
/// is gone (dropped, e.g. its thread ended or panicked): nobody would ever make room.
pub fn push_all_blocking<T: Copy>(
    prod: &mut HeapProd<T>,
    mut items: &[T],
    signal: &RingSignal,
    stop: &AtomicBool,
) -> bool {
    while !items.is_empty() {
        let n = prod.push_slice(items);
        items = &items[n..];
        if n > 0 {
            signal.wake();
        }
        if !items.is_empty() {
            if stop.load(Ordering::Relaxed) || !prod.read_is_held() {
                return false;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    true
}

/// Pops up to `buf.len()` items, waiting (polling) while the ring is empty. Returns `None` when the
/// ring is closed and drained, or drained and its producer is gone (dropped without closing, e.g. its
/// thread panicked), so a dead upstream stage never leaves the consumer waiting forever.
pub fn pop_wait<T: Copy>(
    cons: &mut HeapCons<T>,
    buf: &mut [T],
    signal: &RingSignal,
) -> Option<usize> {
    loop {
        let n = cons.pop_slice(buf);
        if n > 0 {
            return Some(n);
        }
        if signal.is_closed() || !cons.write_is_held() {
            // Re-check after observing `closed` so nothing pushed before closing is lost.
            let n = cons.pop_slice(buf);
            return if n > 0 { Some(n) } else { None };
        }
        std::thread::park_timeout(POLL);
    }
}

/// Number of items waiting in a consumer's ring.
pub fn backlog<T>(cons: &HeapCons<T>) -> usize {
    cons.occupied_len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_off_preserves_order_and_end() {
        let (mut p, mut c, sig) = ring::<u32>(64);
        let sig2 = sig.clone();
        let stop = AtomicBool::new(false);
        let h = std::thread::spawn(move || {
            sig2.register_consumer();
            let mut got = Vec::new();
            let mut buf = [0u32; 7];
            while let Some(n) = pop_wait(&mut c, &mut buf, &sig2) {
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let data: Vec<u32> = (0..10_000).collect();
        for chunk in data.chunks(100) {
            assert!(push_all_blocking(&mut p, chunk, &sig, &stop));
        }
        sig.close();
        let got = h.join().unwrap();
        assert_eq!(got, data);
    }
}
