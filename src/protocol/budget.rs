//! The budget of large client messages buffered at once over all sessions
//! (`limits.max_buffered_bytes`). Each session may buffer a message up to
//! `limits.max_message_bytes`; without a shared bound, many sessions doing so at once would
//! pass the process's memory limit and end every session with it.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::codec::STREAM_THRESHOLD;

/// Bytes reserved now by messages being received.
#[derive(Debug, Default)]
pub struct BufferBudget {
    used: AtomicUsize,
}

/// A message's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a BufferBudget,
    len: usize,
}

impl BufferBudget {
    /// Whether a message of `len` bytes must reserve its size: small ones never do (they are
    /// bounded by the read buffers), nor the large ones relayed in pieces.
    pub fn counts(len: usize) -> bool {
        len > STREAM_THRESHOLD
    }

    /// Reserves `len` bytes if that keeps the total within `limit`.
    pub fn try_reserve(&self, len: usize, limit: usize) -> Option<Reservation<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|total| *total <= limit)
            })
            .ok()
            .map(|_| Reservation { budget: self, len })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.len, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_are_given_back() {
        let budget = BufferBudget::default();
        let a = budget.try_reserve(600, 1000);
        assert!(a.is_some());
        assert!(budget.try_reserve(600, 1000).is_none());
        let b = budget.try_reserve(400, 1000);
        assert!(b.is_some());
        assert_eq!(budget.used(), 1000);
        drop(a);
        assert_eq!(budget.used(), 400);
        assert!(budget.try_reserve(600, 1000).is_some());
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
