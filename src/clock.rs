//! Time and randomness, passed in rather than read from the system.
//!
//! Every service takes an [`Arc<dyn Clock>`] and an [`Arc<dyn Random>`] so tests control time
//! (timeouts, schedules) and can make runs repeatable. `clippy.toml` forbids reading the system
//! clock anywhere else.

use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::{SignedDuration, Timestamp};
use ring::rand::SecureRandom;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current time, UTC.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to; for tests and benchmarks.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = now.saturating_add(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The random source could not produce bytes (the OS source failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomError;

/// A source of random bytes for keys, nonces, ids and tokens.
pub trait Random: Send + Sync + Debug {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's cryptographic random source.
#[derive(Debug)]
pub struct SystemRandom {
    inner: ring::rand::SystemRandom,
}

impl SystemRandom {
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: ring::rand::SystemRandom::new(),
        }
    }
}

impl Default for SystemRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl Random for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        self.inner.fill(dest).map_err(|_| RandomError)
    }
}

/// A repeatable source for tests: SHA-256 of a seed and a counter. Never use it for real keys.
#[derive(Debug)]
pub struct SeededRandom {
    seed: u64,
    counter: AtomicU64,
}

impl SeededRandom {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            counter: AtomicU64::new(0),
        }
    }
}

impl Random for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        for chunk in dest.chunks_mut(32) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut input = [0u8; 16];
            input[..8].copy_from_slice(&self.seed.to_be_bytes());
            input[8..].copy_from_slice(&n.to_be_bytes());
            let digest = ring::digest::digest(&ring::digest::SHA256, &input);
            chunk.copy_from_slice(&digest.as_ref()[..chunk.len()]);
        }
        Ok(())
    }
}

/// Reads its source in 4 KiB blocks and hands them out in small pieces: one system call per
/// few hundred nonces instead of one per nonce. The bytes are the source's own; nothing is
/// stretched or reused.
#[derive(Debug)]
pub struct BufferedRandom {
    source: std::sync::Arc<dyn Random>,
    buffer: Mutex<(Vec<u8>, usize)>,
}

const BUFFER_BYTES: usize = 4096;

impl BufferedRandom {
    #[must_use]
    pub fn new(source: std::sync::Arc<dyn Random>) -> Self {
        Self {
            source,
            buffer: Mutex::new((vec![0; BUFFER_BYTES], BUFFER_BYTES)),
        }
    }
}

impl Random for BufferedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        if dest.len() > BUFFER_BYTES / 4 {
            return self.source.fill(dest);
        }
        let mut guard = self
            .buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (buffer, used) = &mut *guard;
        if *used + dest.len() > buffer.len() {
            self.source.fill(buffer)?;
            *used = 0;
        }
        let piece = &mut buffer[*used..*used + dest.len()];
        dest.copy_from_slice(piece);
        // Handed-out bytes are wiped so a later memory read cannot recover a nonce's source.
        piece.fill(0);
        *used += dest.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_random_hands_out_the_source_bytes_once() {
        let direct = SeededRandom::new(7);
        let mut expected = vec![0u8; BUFFER_BYTES];
        direct.fill(&mut expected).unwrap();

        let buffered = BufferedRandom::new(std::sync::Arc::new(SeededRandom::new(7)));
        let mut got = Vec::new();
        for _ in 0..(BUFFER_BYTES / 12) {
            let mut nonce = [0u8; 12];
            buffered.fill(&mut nonce).unwrap();
            got.extend_from_slice(&nonce);
        }
        assert_eq!(got, expected[..got.len()]);
        let mut next = [0u8; 12];
        buffered.fill(&mut next).unwrap();
        assert_ne!(&next[..], &expected[..12], "a refill draws new bytes");
    }
}
