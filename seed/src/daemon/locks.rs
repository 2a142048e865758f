//! The daemon's locks, each with its rank in the one order they may be taken in (see
//! [`super::Daemon`]'s documentation for what each guards).
//!
//! A thread may take a lock only while every lock it already holds has a lower [`Rank`]. Debug
//! builds check this on every acquisition (a per-thread list of held ranks) and panic, naming
//! both locks, before an out-of-order acquisition could deadlock; release builds only lock.
//! The guards are `!Send` like std's, so a lock is never held across an `.await` and the
//! per-thread record is exact.
//!
//! A poisoned lock is taken anyway: the data are plain maps and sets that a panic elsewhere
//! leaves valid.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Where a lock stands in the order: lower ranks are taken first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    /// `Daemon::lifecycle`: read-step-commit of node records.
    Lifecycle = 1,
    /// `Daemon::drivers`: the power driver of each node.
    Drivers,
    /// `Daemon::boot`: the boot table (and the nodes awaiting a boot).
    Boot,
    /// `Daemon::commands`: each agent's next command.
    Commands,
    /// `DeployState::progress`: each agent's last progress report.
    Progress,
    /// `Daemon::workers`: the per-node worker queues.
    Workers,
}

/// A mutex with a [`Rank`].
#[derive(Debug)]
pub(crate) struct Ranked<T> {
    rank: Rank,
    inner: Mutex<T>,
}

impl<T> Ranked<T> {
    pub(crate) const fn new(rank: Rank, value: T) -> Self {
        Ranked {
            rank,
            inner: Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> Guard<MutexGuard<'_, T>> {
        let held = held::enter(self.rank);
        Guard {
            inner: self.inner.lock().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }
}

/// A reader-writer lock with a [`Rank`] (readers count as holding it too).
#[derive(Debug)]
pub(crate) struct RankedRw<T> {
    rank: Rank,
    inner: RwLock<T>,
}

impl<T> RankedRw<T> {
    pub(crate) const fn new(rank: Rank, value: T) -> Self {
        RankedRw {
            rank,
            inner: RwLock::new(value),
        }
    }

    pub(crate) fn read(&self) -> Guard<RwLockReadGuard<'_, T>> {
        let held = held::enter(self.rank);
        Guard {
            inner: self.inner.read().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }

    pub(crate) fn write(&self) -> Guard<RwLockWriteGuard<'_, T>> {
        let held = held::enter(self.rank);
        Guard {
            inner: self.inner.write().unwrap_or_else(|p| p.into_inner()),
            _held: held,
        }
    }
}

/// A held lock: std's guard, and the rank it holds (fields drop in order: unlock, then forget).
pub(crate) struct Guard<G> {
    inner: G,
    _held: held::Held,
}

impl<G: Deref> Deref for Guard<G> {
    type Target = G::Target;
    fn deref(&self) -> &G::Target {
        &self.inner
    }
}

impl<G: DerefMut> DerefMut for Guard<G> {
    fn deref_mut(&mut self) -> &mut G::Target {
        &mut self.inner
    }
}

#[cfg(debug_assertions)]
mod held {
    use super::Rank;
    use std::cell::RefCell;

    thread_local! {
        static HELD: RefCell<Vec<Rank>> = const { RefCell::new(Vec::new()) };
    }

    /// One rank held by this thread; forgotten on drop.
    pub(crate) struct Held(Rank);

    /// Record that this thread takes `rank`; panics if it holds `rank` or a higher one.
    pub(crate) fn enter(rank: Rank) -> Held {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(top) = h.iter().copied().max().filter(|top| *top >= rank) {
                drop(h);
                panic!(
                    "lock order: {rank:?} taken while {top:?} is held (see Daemon's documentation)"
                );
            }
            h.push(rank);
        });
        Held(rank)
    }

    impl Drop for Held {
        fn drop(&mut self) {
            let _ = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().rposition(|r| *r == self.0) {
                    h.remove(i);
                }
            });
        }
    }
}

#[cfg(not(debug_assertions))]
mod held {
    use super::Rank;

    pub(crate) struct Held;

    pub(crate) fn enter(_: Rank) -> Held {
        Held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_fine_and_released_ranks_are_forgotten() {
        let lifecycle = Ranked::new(Rank::Lifecycle, ());
        let boot = RankedRw::new(Rank::Boot, 0);
        let commands = Ranked::new(Rank::Commands, 0);
        {
            let _l = lifecycle.lock();
            *boot.write() += 1;
            let _b = boot.read();
            *commands.lock() += 1;
        }
        // Everything was released: any order again.
        let _c = commands.lock();
        drop(_c);
        let _l = lifecycle.lock();
        assert_eq!(*boot.read(), 1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order: Lifecycle taken while Commands is held")]
    fn out_of_order_panics_in_debug_builds() {
        let lifecycle = Ranked::new(Rank::Lifecycle, ());
        let commands = Ranked::new(Rank::Commands, ());
        let _c = commands.lock();
        let _l = lifecycle.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order: Boot taken while Boot is held")]
    fn the_same_lock_twice_panics_in_debug_builds() {
        let boot = RankedRw::new(Rank::Boot, ());
        let _r = boot.read();
        let _w = boot.write();
    }
}
