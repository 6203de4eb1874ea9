//! The index without I/O: scheduling, destinations in turn, stale entries, summaries.

use postern_spool::{Envelope, Recipient};
use postern_types::{Address, Destination, ForwardPath, QueueId, ReversePath};

use super::*;

/// A message to `rcpts` (remote), due at `due` (Unix seconds).
fn env(rcpts: &[&str], due: u64) -> Envelope {
    let recipients = rcpts
        .iter()
        .map(|a| {
            let address = Address::parse(a).unwrap();
            let mut r = Recipient::new(ForwardPath::Mailbox(address.clone()), Destination::Remote(address));
            r.next_attempt = due;
            r
        })
        .collect();
    let sender = ReversePath::Mailbox(Address::new("s", "x.test"));
    Envelope::new(QueueId::generate(), [127, 0, 0, 1].into(), "c.test".into(), sender, 10, recipients)
}

#[test]
fn destinations_take_turns() {
    let mut ix = Index::default();
    let big: Vec<Envelope> = (0..5).map(|_| env(&["a@big.test"], 10)).collect();
    let small: Vec<Envelope> = (0..2).map(|_| env(&["b@small.test"], 10)).collect();
    for e in big.iter().chain(&small) {
        ix.put(e, true);
    }
    assert_eq!(ix.promote(9), Some(10));
    assert!(ix.take().is_none());
    assert_eq!(ix.promote(10), None);
    let order: Vec<QueueId> = std::iter::from_fn(|| ix.take().map(|(id, _)| id)).collect();
    let want = [big[0].id, small[0].id, big[1].id, small[1].id, big[2].id, big[3].id, big[4].id];
    assert_eq!(order, want);
    assert_eq!(ix.active(), 7);
    // Back from an attempt: deferred, rescheduled; the active count follows.
    let mut e = big[0].clone();
    e.recipients[0].attempts = 1;
    e.recipients[0].next_attempt = 20;
    ix.put(&e, true);
    assert_eq!(ix.active(), 6);
    assert_eq!(ix.promote(15), Some(20));
    let (_, deferred, _, domains) = ix.summary();
    assert_eq!(deferred, 1);
    assert_eq!(
        domains.iter().map(|d| (d.domain.as_str(), d.messages)).collect::<Vec<_>>(),
        [("big.test", 5), ("small.test", 2)]
    );
}

#[test]
fn stale_entries_holds_flushes_and_removals() {
    let mut ix = Index::default();
    let a = env(&["a@x.test", "b@y.test"], 100);
    ix.put(&a, true);
    // Rescheduled earlier: the entry at 100 is stale.
    let mut earlier = a.clone();
    earlier.recipients[1].next_attempt = 50;
    ix.put(&earlier, true);
    ix.promote(60);
    assert_eq!(ix.take().map(|(id, _)| id), Some(a.id));
    ix.put(&earlier, true);
    ix.promote(200);
    assert_eq!(ix.take().map(|(id, _)| id), Some(a.id), "due again at 50 (reput)");
    ix.put(&a, true);
    // A hold stops it; a flush of a held message does nothing; a released one is forced.
    assert!(ix.hold(a.id));
    assert!(!ix.force(a.id, 300));
    ix.promote(1000);
    assert!(ix.take().is_none());
    ix.put(&a, true);
    assert!(ix.force(a.id, 300));
    ix.promote(300);
    assert_eq!(ix.take(), Some((a.id, true)));
    // Several domains: counted in each.
    let (messages, _, _, domains) = ix.summary();
    assert_eq!(messages, 1);
    assert_eq!(domains.len(), 2);
    assert_eq!(ix.ids_where(|_, d, _| d.contains(&"y.test")), [a.id]);
    ix.remove(a.id);
    assert_eq!((ix.len(), ix.active()), (0, 0));
    assert!(ix.summary().3.is_empty());
}

#[test]
fn queue_only_messages_wait_for_a_flush() {
    let mut ix = Index::default();
    let a = env(&["a@x.test"], 0);
    ix.put(&a, false);
    ix.promote(u32::MAX - 1);
    assert!(ix.take().is_none());
    assert!(ix.force(a.id, 5));
    ix.promote(5);
    assert_eq!(ix.take(), Some((a.id, true)));
}

#[test]
fn eight_bytes_a_message_and_counts_beyond_one_recipient() {
    assert_eq!(std::mem::size_of::<Meta>(), 8);
    let mut ix = Index::default();
    let two = env(&["a@x.test", "b@X.test"], 10);
    let one = env(&["c@x.test"], 10);
    ix.put(&two, true);
    ix.put(&one, true);
    let (messages, _, _, domains) = ix.summary();
    assert_eq!(messages, 2);
    assert_eq!((domains[0].domain.as_str(), domains[0].messages, domains[0].recipients), ("x.test", 2, 3));
    // Nothing pending: indexed, never scheduled, not forceable, in no destination.
    let mut done = one.clone();
    done.recipients[0].state = postern_spool::RcptState::Delivered;
    ix.put(&done, true);
    assert!(!ix.force(one.id, 10));
    assert_eq!(ix.summary().3[0].messages, 1);
    assert_eq!(ix.promote(10), None);
    assert_eq!(ix.take().map(|(id, _)| id), Some(two.id));
    assert!(ix.take().is_none());
}
