//! A candidate L1 measured by `benches/l1.rs` (not the one Strata uses: quick_cache tied with
//! it, and a kept crate wins a tie): a sharded hash table evicting by S3-FIFO (Yang et al., "FIFO queues are all
//! you need for cache eviction", SOSP 2023).
//!
//! A read takes its shard's read lock, finds the key and bumps the entry's two-bit frequency
//! counter (a relaxed store): no queue to reorder, no buffer to drain later, no allocation.
//! That is the point of S3-FIFO here — an LRU or W-TinyLFU moves the entry on every read and
//! so needs either a lock per read or a read buffer and a maintenance task (what moka does,
//! and what cost most of an L1 hit). Inserts and removals take the shard's write lock and do
//! their eviction there, a bounded number of queue steps each.
//!
//! Each shard keeps three FIFOs: *small* (a tenth of the capacity) takes new keys; an entry
//! read again while in it moves to *main* when it reaches the front, the others leave and
//! their hashes go to *ghost*; a key found in ghost goes straight to main when it returns.
//! Main is a CLOCK: an entry read since its last turn goes round again with one count less.
//! A key dropped by an invalidation while hot goes to ghost too, so its next fill returns
//! to main instead of starting over in small.
//!
//! Values are taken out only through a closure (`get`), so a caller clones just what it needs.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

/// Frequency counts saturate here (two bits' worth, as in the paper).
const MAX_FREQ: u8 = 3;
/// Reads while in small that earn an entry its place in main.
const PROMOTE_AT: u8 = 1;
/// Each shard's small queue holds this share of its capacity.
const SMALL_SHARE: u64 = 10; // percent

/// A concurrent map from string keys to `V` with a bounded total weight.
pub(crate) struct Map<V, S> {
    shards: Box<[RwLock<Shard<V>>]>,
    mask: usize,
    hasher: S,
}

struct Slot<V> {
    hash: u64,
    key: Box<str>,
    /// `None` once removed: the slot waits in its queue until evicted or compacted away.
    value: Option<V>,
    weight: u32,
    freq: AtomicU8,
    in_main: bool,
}

struct Shard<V> {
    /// Slot numbers by key hash.
    index: HashTable<u32>,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    small: VecDeque<u32>,
    main: VecDeque<u32>,
    ghost: Ghost,
    small_weight: u64,
    main_weight: u64,
    capacity: u64,
    live: usize,
    /// Removed slots still in a queue.
    dead: usize,
}

impl<V, S: BuildHasher> Map<V, S> {
    /// A map of at most about `capacity` in weight over `shards` shards (rounded up to a power
    /// of two; each gets an equal share of the capacity).
    pub(crate) fn with_hasher(capacity: u64, shards: usize, hasher: S) -> Self {
        let shards = shards.max(1).next_power_of_two();
        let per_shard = capacity.div_ceil(shards as u64);
        Map {
            shards: (0..shards)
                .map(|_| RwLock::new(Shard::new(per_shard)))
                .collect(),
            mask: shards - 1,
            hasher,
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // The table uses the low bits and the top seven; the shard takes bits in between.
        #[allow(clippy::cast_possible_truncation)]
        let i = (hash >> 32) as usize & self.mask;
        &self.shards[i]
    }

    /// `f` of the value under `key`, if any; counts as a read of it.
    #[inline]
    pub(crate) fn get<R>(&self, key: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let shard = read(self.shard(hash));
        let slot = shard.find(hash, key)?;
        let freq = slot.freq.load(Ordering::Relaxed);
        if freq < MAX_FREQ {
            // A lost update between two readers only undercounts one read: no RMW needed.
            slot.freq.store(freq + 1, Ordering::Relaxed);
        }
        slot.value.as_ref().map(f)
    }

    /// Puts `value` under `key` (replacing what was there); returns how many other entries
    /// were evicted to make room.
    pub(crate) fn insert(&self, key: &str, value: V, weight: u32) -> usize {
        let hash = self.hasher.hash_one(key);
        write(self.shard(hash)).insert(hash, key, value, weight)
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn remove(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        write(self.shard(hash)).remove(hash, key)
    }

    /// Keeps only the entries for which `keep` is true.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&str, &V) -> bool) {
        for shard in &*self.shards {
            write(shard).retain(&mut keep);
        }
    }

    /// Removes everything.
    pub(crate) fn clear(&self) {
        for shard in &*self.shards {
            let mut s = write(shard);
            *s = Shard::new(s.capacity);
        }
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).live).sum()
    }

    /// Their total weight.
    pub(crate) fn weight(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                let s = read(s);
                s.small_weight + s.main_weight
            })
            .sum()
    }
}

// The state behind a lock is valid between any two statements that change it, so a panic
// elsewhere (a caller's closure) leaves nothing to repair.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl<V> Shard<V> {
    fn new(capacity: u64) -> Self {
        Shard {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: Ghost::default(),
            small_weight: 0,
            main_weight: 0,
            capacity,
            live: 0,
            dead: 0,
        }
    }

    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<&Slot<V>> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| &*slots[i as usize].key == key)
            .map(|&i| &slots[i as usize])
    }

    fn insert(&mut self, hash: u64, key: &str, value: V, weight: u32) -> usize {
        let slots = &mut self.slots;
        if let Some(&i) = self.index.find(hash, |&i| &*slots[i as usize].key == key) {
            let slot = &mut slots[i as usize];
            let (old, in_main) = (slot.weight, slot.in_main);
            slot.weight = weight;
            slot.value = Some(value);
            *self.queue_weight(in_main) -= u64::from(old);
            *self.queue_weight(in_main) += u64::from(weight);
        } else {
            let in_main = self.ghost.take(hash);
            let slot = Slot {
                hash,
                key: key.into(),
                value: Some(value),
                weight,
                freq: AtomicU8::new(0),
                in_main,
            };
            let i = match self.free.pop() {
                Some(i) => {
                    self.slots[i as usize] = slot;
                    i
                }
                None => {
                    // Slot numbers are u32: a shard of four billion entries is not a cache.
                    let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                    self.slots.push(slot);
                    i
                }
            };
            let slots = &self.slots;
            self.index
                .insert_unique(hash, i, |&j| slots[j as usize].hash);
            if in_main {
                self.main.push_back(i);
            } else {
                self.small.push_back(i);
            }
            *self.queue_weight(in_main) += u64::from(weight);
            self.live += 1;
        }
        self.evict()
    }

    fn queue_weight(&mut self, in_main: bool) -> &mut u64 {
        if in_main {
            &mut self.main_weight
        } else {
            &mut self.small_weight
        }
    }

    /// Evicts until the shard is within its capacity; returns how many entries left.
    fn evict(&mut self) -> usize {
        let mut evicted = 0;
        while self.small_weight + self.main_weight > self.capacity {
            let small_full = self.small_weight * 100 > self.capacity * SMALL_SHARE;
            let step = if self.small_weight > 0 && (small_full || self.main_weight == 0) {
                self.evict_small()
            } else {
                self.evict_main()
            };
            evicted += usize::from(step);
        }
        evicted
    }

    /// One step at the front of small: the entry moves to main (read while in small) or
    /// leaves, remembered in ghost. `true` if an entry left.
    fn evict_small(&mut self) -> bool {
        while let Some(i) = self.small.pop_front() {
            let slot = &mut self.slots[i as usize];
            if slot.value.is_none() {
                self.release(i);
                continue;
            }
            let weight = u64::from(slot.weight);
            if *slot.freq.get_mut() >= PROMOTE_AT {
                *slot.freq.get_mut() = 0;
                slot.in_main = true;
                self.small_weight -= weight;
                self.main_weight += weight;
                self.main.push_back(i);
                return false;
            }
            let hash = slot.hash;
            self.unlink(i);
            self.ghost.push(hash, self.live.max(16));
            return true;
        }
        false
    }

    /// One step at the front of main (a CLOCK hand): an entry read since its last turn goes
    /// round again with one count less; one that was not leaves. `true` if an entry left.
    fn evict_main(&mut self) -> bool {
        while let Some(i) = self.main.pop_front() {
            let slot = &mut self.slots[i as usize];
            if slot.value.is_none() {
                self.release(i);
                continue;
            }
            let freq = slot.freq.get_mut();
            if *freq > 0 {
                *freq -= 1;
                self.main.push_back(i);
                return false;
            }
            self.unlink(i);
            return true;
        }
        false
    }

    /// Takes the live entry in slot `i` (already out of its queue) out of the index and frees
    /// its slot.
    fn unlink(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        let (hash, weight, in_main) = (slot.hash, u64::from(slot.weight), slot.in_main);
        slot.value = None;
        slot.key = Box::default();
        *self.queue_weight(in_main) -= weight;
        self.live -= 1;
        if let Ok(entry) = self.index.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        self.free.push(i);
    }

    /// A removed slot left its queue: it can be reused.
    fn release(&mut self, i: u32) {
        self.dead -= 1;
        self.free.push(i);
    }

    fn remove(&mut self, hash: u64, key: &str) -> bool {
        let slots = &self.slots;
        let Ok(entry) = self
            .index
            .find_entry(hash, |&i| &*slots[i as usize].key == key)
        else {
            return false;
        };
        let (i, _) = entry.remove();
        let hot = self.kill(i);
        if hot {
            self.ghost.push(hash, self.live.max(16));
        }
        self.compact_if_needed();
        true
    }

    /// Empties slot `i` (already out of the index), leaving it in its queue; whether it was
    /// hot (in main, or read since it came in).
    fn kill(&mut self, i: u32) -> bool {
        let slot = &mut self.slots[i as usize];
        let hot = slot.in_main || *slot.freq.get_mut() > 0;
        let (weight, in_main) = (u64::from(slot.weight), slot.in_main);
        slot.value = None;
        slot.key = Box::default();
        *self.queue_weight(in_main) -= weight;
        self.live -= 1;
        self.dead += 1;
        hot
    }

    fn retain(&mut self, keep: &mut impl FnMut(&str, &V) -> bool) {
        let slots = &self.slots;
        let mut dropped = Vec::new();
        self.index.retain(|&mut i| {
            let slot = &slots[i as usize];
            let kept = slot.value.as_ref().is_some_and(|v| keep(&slot.key, v));
            if !kept {
                dropped.push(i);
            }
            kept
        });
        for i in dropped {
            self.kill(i);
        }
        self.compact_if_needed();
    }

    /// Removals leave their slots in the queues; once they outnumber the live entries, the
    /// queues are swept (so a map that is written and invalidated but never full stays small).
    fn compact_if_needed(&mut self) {
        if self.dead <= self.live.max(64) {
            return;
        }
        let slots = &self.slots;
        let free = &mut self.free;
        for queue in [&mut self.small, &mut self.main] {
            queue.retain(|&i| {
                let live = slots[i as usize].value.is_some();
                if !live {
                    free.push(i);
                }
                live
            });
        }
        self.dead = 0;
    }
}

/// Hashes of keys that left recently, oldest first, with a count per hash for membership.
#[derive(Default)]
struct Ghost {
    order: VecDeque<u64>,
    counts: HashTable<(u64, u32)>,
}

impl Ghost {
    fn push(&mut self, hash: u64, bound: usize) {
        self.order.push_back(hash);
        match self.counts.find_mut(hash, |e| e.0 == hash) {
            Some(e) => e.1 += 1,
            None => drop(self.counts.insert_unique(hash, (hash, 1), |e| e.0)),
        }
        while self.order.len() > bound {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Ok(mut e) = self.counts.find_entry(old, |e| e.0 == old) {
                e.get_mut().1 -= 1;
                if e.get().1 == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Whether `hash` left recently; forgets it.
    fn take(&mut self, hash: u64) -> bool {
        match self.counts.find_entry(hash, |e| e.0 == hash) {
            Ok(e) => {
                e.remove();
                true
            }
            Err(_) => false,
        }
    }
}
