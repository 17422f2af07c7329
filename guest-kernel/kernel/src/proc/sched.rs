//! Scheduler bookkeeping: run queues by priority and the sleepers' timeline.
//!
//! Strict priority between levels (0 runs before 1), round robin within a
//! level. A simple, predictable policy: a high-priority program that never
//! sleeps starves lower ones, which is what the user asked for by giving it
//! that priority.

use alloc::collections::{BTreeSet, VecDeque};

use ward_abi::syscall::PRIORITY_LOWEST;

/// Number of priority levels.
pub const LEVELS: usize = PRIORITY_LOWEST as usize + 1;

/// Runnable processes, by priority.
#[derive(Debug, Default)]
pub struct RunQueues {
    queues: [VecDeque<u32>; LEVELS],
}

impl RunQueues {
    /// Adds `pid` at the back of its level.
    pub fn push(&mut self, pid: u32, priority: u8) {
        self.queues[usize::from(priority.min(PRIORITY_LOWEST))].push_back(pid);
    }

    /// Takes the first process of the highest non-empty level.
    pub fn pop(&mut self) -> Option<u32> {
        self.queues.iter_mut().find_map(VecDeque::pop_front)
    }

    /// The highest priority with a runnable process.
    pub fn best_priority(&self) -> Option<u8> {
        self.queues.iter().position(|q| !q.is_empty()).and_then(|p| u8::try_from(p).ok())
    }

    /// Removes `pid` wherever it is queued.
    pub fn remove(&mut self, pid: u32) {
        for q in &mut self.queues {
            q.retain(|&p| p != pid);
        }
    }

    /// Whether nothing is runnable.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

/// Processes waiting for a time, earliest first.
#[derive(Debug, Default)]
pub struct Sleepers {
    timeline: BTreeSet<(u64, u32)>,
}

impl Sleepers {
    /// `pid` wakes at `deadline`.
    pub fn insert(&mut self, deadline: u64, pid: u32) {
        self.timeline.insert((deadline, pid));
    }

    /// Forgets `pid`'s deadline (it woke early).
    pub fn remove(&mut self, deadline: u64, pid: u32) {
        self.timeline.remove(&(deadline, pid));
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timeline.first().map(|&(d, _)| d)
    }

    /// Takes the first process due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<u32> {
        match self.timeline.first() {
            Some(&(deadline, pid)) if deadline <= now => {
                self.timeline.pop_first();
                Some(pid)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_runs_first_and_levels_are_round_robin() {
        let mut q = RunQueues::default();
        q.push(1, 4);
        q.push(2, 4);
        q.push(3, 1);
        assert_eq!(q.best_priority(), Some(1));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), Some(1));
        q.push(1, 4);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(1));
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn removed_process_is_not_run() {
        let mut q = RunQueues::default();
        q.push(7, 0);
        q.push(8, 7);
        q.remove(7);
        assert_eq!(q.pop(), Some(8));
    }

    #[test]
    fn out_of_range_priority_is_the_lowest() {
        let mut q = RunQueues::default();
        q.push(1, 200);
        assert_eq!(q.best_priority(), Some(PRIORITY_LOWEST));
    }

    #[test]
    fn sleepers_wake_in_deadline_order() {
        let mut s = Sleepers::default();
        s.insert(300, 1);
        s.insert(100, 2);
        s.insert(200, 3);
        s.remove(200, 3);
        assert_eq!(s.next_deadline(), Some(100));
        assert_eq!(s.pop_due(50), None);
        assert_eq!(s.pop_due(1000), Some(2));
        assert_eq!(s.pop_due(1000), Some(1));
        assert_eq!(s.pop_due(1000), None);
        assert_eq!(s.next_deadline(), None);
    }
}
