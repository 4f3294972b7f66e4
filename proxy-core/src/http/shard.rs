//! Which serving shard the current thread is.
//!
//! On a work-stealing runtime every thread is shard 0 and shares everything. In the
//! per-core model each thread runs a single-threaded runtime of its own, with its own
//! listeners (the kernel spreads connections over them), and is a shard of its own. A
//! socket is driven by the reactor of the runtime it was registered with, so what holds
//! sockets between requests (pooled pod connections, parked client connections) is kept
//! per shard: a shard's requests then never wait on another thread's reactor.

use std::cell::Cell;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as serving shard `shard` (numbered from 0, densely).
pub fn enter(shard: usize) {
    SHARD.with(|s| s.set(shard));
}

/// The calling thread's shard.
pub(crate) fn current() -> usize {
    SHARD.with(Cell::get)
}

/// `slots[shard]`, grown with defaults as shards first ask for theirs.
pub(crate) fn slot<T: Default>(slots: &mut Vec<T>, shard: usize) -> &mut T {
    if slots.len() <= shard {
        slots.resize_with(shard + 1, T::default);
    }
    &mut slots[shard]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_start_as_shard_zero_and_keep_their_own() {
        assert_eq!(current(), 0);
        enter(3);
        let other = std::thread::spawn(current).join().expect("thread");
        assert_eq!(other, 0);
        assert_eq!(current(), 3);
        enter(0);
    }

    #[test]
    fn slots_grow_to_the_shard_asked_for() {
        let mut slots: Vec<Vec<u8>> = Vec::new();
        slot(&mut slots, 2).push(7);
        assert_eq!(slots, vec![vec![], vec![], vec![7]]);
        slot(&mut slots, 0).push(1);
        assert_eq!(slots[0], vec![1]);
    }
}
