//! The keys of one page of a listing, found in a single pass over the matches in no order
//! (bucket by bucket, or in index order): the smallest `skip + take` keys seen so far are kept
//! in a max-heap, and every match is counted. Both backends page this way when they cannot
//! let an index give the key order. Pure: keys enter through [`FirstKeys::offer`] (or a
//! collector that saw other matches, [`FirstKeys::absorb`]: a pass split between threads) and
//! leave as the page's keys, sorted, with the number of matches.

use std::borrow::Borrow;
use std::collections::BinaryHeap;

/// The smallest `skip + take` keys offered, and how many were offered.
pub(crate) struct FirstKeys<K> {
    limit: usize,
    skip: usize,
    heap: BinaryHeap<K>,
    total: u64,
}

impl<K: Ord> FirstKeys<K> {
    pub fn new(skip: usize, take: usize) -> FirstKeys<K> {
        FirstKeys {
            limit: skip.saturating_add(take),
            skip,
            heap: BinaryHeap::new(),
            total: 0,
        }
    }

    /// Counts one match and keeps its key if it is among the smallest seen (copied only then).
    pub fn offer<Q>(&mut self, key: &Q)
    where
        Q: Ord + ToOwned<Owned = K> + ?Sized,
        K: Borrow<Q>,
    {
        self.total += 1;
        if self.heap.len() < self.limit {
            self.heap.push(key.to_owned());
        } else if self.heap.peek().is_some_and(|top| key < top.borrow()) {
            self.heap.pop();
            self.heap.push(key.to_owned());
        }
    }

    /// Takes in what `other` (made with the same `skip` and `take`, offered other matches)
    /// kept and counted: as if its matches had been offered here.
    pub fn absorb(&mut self, other: FirstKeys<K>) {
        self.total += other.total;
        for key in other.heap {
            if self.heap.len() < self.limit {
                self.heap.push(key);
            } else if self.heap.peek().is_some_and(|top| key < *top) {
                self.heap.pop();
                self.heap.push(key);
            }
        }
    }

    /// The number of matches, and the page's keys (those after the first `skip`), sorted.
    pub fn page(self) -> (u64, Vec<K>) {
        let keys = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .skip(self.skip)
            .collect();
        (self.total, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::FirstKeys;

    #[test]
    fn keeps_the_page_of_keys_offered_in_any_order() {
        let mut f: FirstKeys<String> = FirstKeys::new(2, 3);
        for k in ["g", "b", "f", "a", "e", "c", "d", "h"] {
            f.offer(k);
        }
        assert_eq!(f.page(), (8, vec!["c".into(), "d".into(), "e".into()]));
        // Split between two collectors and joined, the same page and count.
        let (mut one, mut two): (FirstKeys<String>, FirstKeys<String>) =
            (FirstKeys::new(2, 3), FirstKeys::new(2, 3));
        for k in ["g", "b", "f", "a"] {
            one.offer(k);
        }
        for k in ["e", "c", "d", "h"] {
            two.offer(k);
        }
        one.absorb(two);
        assert_eq!(one.page(), (8, vec!["c".into(), "d".into(), "e".into()]));
        let mut none: FirstKeys<Vec<u8>> = FirstKeys::new(5, 5);
        none.offer(b"x".as_slice());
        assert_eq!(none.page(), (1, vec![]));
    }
}
