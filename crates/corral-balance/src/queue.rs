//! The order in which requests waiting for a model's slots are let in: fair between flows
//! (users), first come first served within each.
//!
//! A deficit round robin (Shreedhar and Varghese) with unit cost: each flow with requests
//! waiting takes its turn, and a turn lets in up to the flow's quantum (its weight, 1 unless
//! given) before the next flow's. A flow that empties leaves the round and its unused
//! quantum is forgotten; one that starts waiting joins the round at its end. So a user with
//! 50 waiting requests does not delay another user's one request by 50: it is let in after
//! at most one turn of every flow ahead of it. With a single flow, the order is exactly
//! arrival order.
//!
//! Entries are identified by the number [`WaitQueue::push`] returns, so one that gives up can
//! leave from anywhere in the queue.

use std::collections::{HashMap, VecDeque};

/// Requests waiting, in the order they will be let in.
#[derive(Debug, Clone)]
pub struct WaitQueue<T> {
    flows: HashMap<String, Flow<T>>,
    /// Flows with requests waiting, the one whose turn it is first.
    round: VecDeque<String>,
    len: usize,
    next_id: u64,
}

#[derive(Debug, Clone)]
struct Flow<T> {
    waiting: VecDeque<(u64, T)>,
    quantum: u32,
    /// Requests let in during the flow's current turn.
    used: u32,
}

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue {
            flows: HashMap::new(),
            round: VecDeque::new(),
            len: 0,
            next_id: 0,
        }
    }
}

impl<T> WaitQueue<T> {
    /// Adds `item` at the end of `flow`'s requests, with one request per turn; returns its id.
    pub fn push(&mut self, flow: &str, item: T) -> u64 {
        self.push_weighted(flow, 1, item)
    }

    /// Adds `item` at the end of `flow`'s requests; the flow may let in `weight` requests
    /// per turn (0 counts as 1; the last push's weight holds). Returns the entry's id.
    pub fn push_weighted(&mut self, flow: &str, weight: u32, item: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let entry = self.flows.entry(flow.to_owned()).or_insert_with(|| Flow {
            waiting: VecDeque::new(),
            quantum: 1,
            used: 0,
        });
        entry.quantum = weight.max(1);
        if entry.waiting.is_empty() {
            entry.used = 0;
            self.round.push_back(flow.to_owned());
        }
        entry.waiting.push_back((id, item));
        self.len += 1;
        id
    }

    /// The entry that will be let in next.
    pub fn front(&self) -> Option<(u64, &T)> {
        let flow = self.flows.get(self.round.front()?)?;
        flow.waiting.front().map(|(id, item)| (*id, item))
    }

    /// Lets in the entry at the front, and moves the round on when its flow's turn is over.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let key = self.round.front()?.clone();
        let flow = self.flows.get_mut(&key)?;
        let entry = flow.waiting.pop_front()?;
        self.len -= 1;
        flow.used += 1;
        if flow.waiting.is_empty() {
            self.flows.remove(&key);
            self.round.pop_front();
        } else if flow.used >= flow.quantum {
            flow.used = 0;
            self.round.rotate_left(1);
        }
        Some(entry)
    }

    /// Takes entry `id` out, wherever it waits; `None` if it is not waiting.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (key, at) = self
            .flows
            .iter()
            .find_map(|(k, f)| f.waiting.iter().position(|(i, _)| *i == id).map(|at| (k.clone(), at)))?;
        let flow = self.flows.get_mut(&key)?;
        let (_, item) = flow.waiting.remove(at)?;
        self.len -= 1;
        if flow.waiting.is_empty() {
            self.flows.remove(&key);
            self.round.retain(|k| *k != key);
        }
        Some(item)
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Requests waiting per flow, in the round's order.
    pub fn depths(&self) -> Vec<(&str, usize)> {
        self.round
            .iter()
            .filter_map(|k| self.flows.get(k).map(|f| (k.as_str(), f.waiting.len())))
            .collect()
    }
}

#[cfg(test)]
mod tests;
