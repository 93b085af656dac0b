//! An L1 hit allocates nothing: counted by this test binary's global allocator, which counts
//! the allocations of each thread (so other tests running beside it do not count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use strata::{EntryOptions, HybridCache};
use strata_testkit::source::{Db, Product};

use crate::TTL;

/// The system allocator, counting allocations per thread.
pub(crate) struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches a
// const-initialised thread-local `Cell`, which allocates nothing itself.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// One thread: the hits below run on this test's own, where the count is kept.
#[tokio::test(flavor = "current_thread")]
async fn an_l1_hit_allocates_nothing() {
    let cache = HybridCache::builder("svc")
        .default_entry(EntryOptions::ttl(TTL))
        .build()
        .await
        .unwrap();
    let db = Db::new();
    let first: Arc<Product> = cache.get_or_load("p:1", db.loader(1)).await.unwrap();
    let before = allocations();
    for _ in 0..1_000 {
        let hit: Arc<Product> = cache.get_or_load("p:1", db.loader(1)).await.unwrap();
        assert!(Arc::ptr_eq(&hit, &first));
    }
    let during = allocations() - before;
    assert_eq!(cache.stats().l1_hits, 1_000);
    assert_eq!(during, 0, "{during} allocations in 1,000 L1 hits");
    // The counter counts: a miss allocates (the key, the entry, the load's future).
    let before = allocations();
    let _: Arc<Product> = cache.get_or_load("p:2", db.loader(2)).await.unwrap();
    assert!(allocations() > before);
}
