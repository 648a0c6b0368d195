//! The durable queue's in-memory order: higher priority first, then FIFO
//! (task ids are issued in submission order).

use berth_core::TaskId;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone)]
pub struct TaskQueue {
    order: BTreeSet<(Reverse<i32>, TaskId)>,
    priority: HashMap<TaskId, i32>,
}

impl TaskQueue {
    pub fn insert(&mut self, id: TaskId, priority: i32) {
        if self.priority.insert(id, priority).is_none() {
            self.order.insert((Reverse(priority), id));
        }
    }

    pub fn remove(&mut self, id: &TaskId) -> bool {
        match self.priority.remove(id) {
            Some(p) => self.order.remove(&(Reverse(p), *id)),
            None => false,
        }
    }

    pub fn contains(&self, id: &TaskId) -> bool {
        self.priority.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.priority.len()
    }

    /// Queue order.
    pub fn iter(&self) -> impl Iterator<Item = &TaskId> {
        self.order.iter().map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_fifo() {
        let mut q = TaskQueue::default();
        q.insert(TaskId(1), 0);
        q.insert(TaskId(2), 5);
        q.insert(TaskId(3), 0);
        q.insert(TaskId(4), 5);
        assert_eq!(q.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 4, 1, 3]);
        assert!(q.remove(&TaskId(4)));
        assert!(!q.remove(&TaskId(4)));
        assert_eq!(q.len(), 3);
    }
}
