//! The wait queue's order: arrival order within a flow, turns between flows.

use super::WaitQueue;

fn drain(q: &mut WaitQueue<&'static str>) -> Vec<&'static str> {
    std::iter::from_fn(|| q.pop().map(|(_, x)| x)).collect()
}

#[test]
fn one_flow_is_first_come_first_served() {
    let mut q = WaitQueue::default();
    for x in ["a", "b", "c", "d"] {
        q.push("", x);
    }
    assert_eq!(q.len(), 4);
    assert_eq!(q.front().map(|(_, x)| *x), Some("a"));
    assert_eq!(drain(&mut q), ["a", "b", "c", "d"]);
    assert!(q.is_empty());
    assert_eq!(q.front(), None);
}

#[test]
fn a_user_with_many_waiting_requests_does_not_hold_back_another_users_one() {
    let mut q = WaitQueue::default();
    for i in 0..20 {
        q.push("alice", if i == 0 { "a0" } else { "a" });
    }
    q.push("bob", "b");
    assert_eq!(q.depths(), [("alice", 20), ("bob", 1)]);
    let order = drain(&mut q);
    let bob = order.iter().position(|x| *x == "b").unwrap();
    assert_eq!(order[0], "a0", "alice's first keeps its place");
    assert_eq!(bob, 1, "bob is let in at the next turn: {order:?}");
}

#[test]
fn flows_take_turns_and_each_keeps_its_own_order() {
    let mut q = WaitQueue::default();
    q.push("a", "a1");
    q.push("a", "a2");
    q.push("a", "a3");
    q.push("b", "b1");
    q.push("c", "c1");
    q.push("b", "b2");
    assert_eq!(drain(&mut q), ["a1", "b1", "c1", "a2", "b2", "a3"]);
}

#[test]
fn a_weight_lets_a_flow_in_that_many_times_per_turn() {
    let mut q = WaitQueue::default();
    for x in ["a1", "a2", "a3", "a4"] {
        q.push_weighted("a", 2, x);
    }
    q.push("b", "b1");
    q.push("b", "b2");
    assert_eq!(drain(&mut q), ["a1", "a2", "b1", "a3", "a4", "b2"]);
}

#[test]
fn an_entry_can_leave_from_anywhere_and_an_emptied_flow_leaves_the_round() {
    let mut q = WaitQueue::default();
    let a1 = q.push("a", "a1");
    let b1 = q.push("b", "b1");
    let a2 = q.push("a", "a2");
    assert_eq!(q.remove(b1), Some("b1"));
    assert_eq!(q.remove(b1), None, "gone already");
    assert_eq!(q.depths(), [("a", 2)]);
    assert_eq!(q.remove(a1), Some("a1"));
    assert_eq!(q.front(), Some((a2, &"a2")));
    q.push("b", "b2");
    assert_eq!(drain(&mut q), ["a2", "b2"]);
    assert_eq!(q.len(), 0);
}

#[test]
fn a_flow_that_comes_back_joins_the_end_of_the_round() {
    let mut q = WaitQueue::default();
    q.push("a", "a1");
    q.push("b", "b1");
    assert_eq!(q.pop().map(|(_, x)| x), Some("a1"));
    q.push("a", "a2");
    q.push("c", "c1");
    assert_eq!(drain(&mut q), ["b1", "a2", "c1"]);
}
