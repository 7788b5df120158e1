//! Pure batch planning: which mapped events travel together.
//!
//! A batch holds events of one source (one destination credential), in
//! arrival order, at most `max_events` of them and at most `max_bytes` of
//! JSON array once serialised. An event larger than `max_bytes` on its own
//! still gets a batch of one: the destination decides (413 → failed with
//! the reason), so nothing is silently dropped here.

/// Groups items into batches. `items` are `(key, serialised bytes, alone)`
/// in arrival order, where items may share a batch only with the same key
/// (source and lane) and an `alone` item always gets a batch of its own.
/// The result holds item indexes, each batch in order, batches ordered by
/// their first item. Empty input → no batches.
pub fn plan<K: PartialEq>(
    items: &[(K, usize, bool)],
    max_events: usize,
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    let max_events = max_events.max(1);
    // (key, indexes, array bytes so far) of the batch still open per key.
    let mut open: Vec<(&K, Vec<usize>, usize)> = Vec::new();
    let mut closed: Vec<Vec<usize>> = Vec::new();
    for (index, (key, bytes, alone)) in items.iter().enumerate() {
        if *alone {
            closed.push(vec![index]);
            continue;
        }
        let slot = match open.iter().position(|(open_key, _, _)| *open_key == key) {
            Some(slot) => slot,
            None => {
                open.push((key, Vec::new(), 2));
                open.len() - 1
            }
        };
        let (_, members, size) = &mut open[slot];
        // A comma separates every element after the first.
        let added = bytes + usize::from(!members.is_empty());
        if !members.is_empty() && (members.len() >= max_events || *size + added > max_bytes) {
            closed.push(std::mem::take(members));
            *size = 2;
        }
        *size += bytes + usize::from(!members.is_empty());
        members.push(index);
    }
    closed.extend(
        open.into_iter()
            .map(|(_, members, _)| members)
            .filter(|m| !m.is_empty()),
    );
    closed.sort_by_key(|batch| batch[0]);
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_items_no_batches() {
        assert!(plan::<&str>(&[], 10, 1000).is_empty());
    }

    #[test]
    fn batches_never_mix_sources_and_keep_order() {
        let items = [
            ("a", 10, false),
            ("b", 10, false),
            ("a", 10, false),
            ("b", 10, false),
        ];
        assert_eq!(plan(&items, 10, 1000), vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn max_events_cuts_batches() {
        let items = [("a", 1, false); 5];
        assert_eq!(plan(&items, 2, 1000), vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn max_bytes_counts_brackets_and_commas() {
        // [x,y] with 4-byte elements = 2 + 4 + 1 + 4 = 11 bytes.
        let items = [("a", 4, false), ("a", 4, false), ("a", 4, false)];
        assert_eq!(plan(&items, 10, 11), vec![vec![0, 1], vec![2]]);
        assert_eq!(plan(&items, 10, 10), vec![vec![0], vec![1], vec![2]]);
        let sizes: Vec<usize> = vec![crate::deliver::json_array(["abcd", "abcd"]).len()];
        assert_eq!(sizes, vec![11]);
    }

    #[test]
    fn an_oversized_event_travels_alone() {
        let items = [("a", 5, false), ("a", 50, false), ("a", 5, false)];
        assert_eq!(plan(&items, 10, 20), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn alone_items_get_a_batch_each_between_the_others() {
        let items = [
            ("a", 1, false),
            ("a", 1, true),
            ("a", 1, false),
            ("a", 1, true),
        ];
        assert_eq!(plan(&items, 10, 1000), vec![vec![0, 2], vec![1], vec![3]]);
    }
}
