//! Fenced fills: a load that an invalidation or a write overtook writes nothing back.

use std::sync::Arc;
use std::time::Duration;

use strata::{
    EntryOptions, HybridCache, L2Store, LogAppend, MemoryStore, Position, Read, WriteMode, Written,
};
use strata_testkit::eventually;
use strata_testkit::source::{Db, Product};

const WAIT: Duration = Duration::from_secs(5);

/// A cache over `l2`, its entries stored with `options`.
async fn cache_over(l2: impl L2Store, options: EntryOptions) -> HybridCache {
    HybridCache::builder("svc")
        .l2(l2)
        .default_entry(options)
        .build()
        .await
        .unwrap()
}

fn a_minute() -> EntryOptions {
    EntryOptions::ttl(Duration::from_secs(60))
}

async fn cache(store: &MemoryStore) -> HybridCache {
    cache_over(store.clone(), a_minute()).await
}

/// A cache whose entries carry the tag `product:1`.
async fn tagged_cache(store: &MemoryStore) -> HybridCache {
    cache_over(store.clone(), a_minute().tags(["product:1"])).await
}

/// A read of `p` whose load has read the source and is held there — the stale-set window —
/// until [`finish`](Self::finish) lets it return.
struct HeldRead {
    read: tokio::task::JoinHandle<Arc<Product>>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl HeldRead {
    /// Starts the read; returns once its load has read the source.
    async fn start(cache: &HybridCache, db: &Db) -> Self {
        let calls = db.calls();
        let (c, d) = (cache.clone(), db.clone());
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let read = tokio::spawn(async move {
            let load = move || async move {
                let record = d.fetch(1).await;
                let _ = held.await;
                record
            };
            c.get_or_load("p", load).await.unwrap()
        });
        eventually("the load to read the source", WAIT, || async {
            db.calls() > calls
        })
        .await;
        HeldRead { read, release }
    }

    /// Lets the load return (its fill comes next) and waits for the read's answer.
    async fn finish(self) -> Arc<Product> {
        let _ = self.release.send(());
        self.read.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_load_fills_neither_level() {
    let (store, db) = (MemoryStore::default(), Db::new());
    let cache = cache(&store).await;
    let read = HeldRead::start(&cache, &db).await;
    db.update();
    cache.invalidate("p").await.unwrap();
    // The read began before the invalidation returned: it may see the old version…
    assert_eq!(read.finish().await.version, 0);
    // …but the old version is written back nowhere.
    assert_eq!(
        store.get("svc", "p").await.unwrap(),
        None,
        "L2 fill refused"
    );
    assert!(
        cache.get::<Product>("p").await.unwrap().is_none(),
        "L1 fill skipped"
    );
    cache.run_pending_tasks().await;
    assert!(cache.stats().fills_fenced >= 1, "{:?}", cache.stats());
    let fresh: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((fresh.version, db.calls()), (1, 2));
}

/// A tag invalidated while a load of a key with that tag is out: the key was not in the tag's
/// index yet (its fill writes it there), so only the flight's poison can refuse the fill — in
/// L2 too, or every later read there would get the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_during_a_load_fills_neither_level() {
    let (store, db) = (MemoryStore::default(), Db::new());
    let cache = tagged_cache(&store).await;
    let read = HeldRead::start(&cache, &db).await;
    db.update();
    cache.invalidate_tag("product:1").await.unwrap();
    assert_eq!(read.finish().await.version, 0);
    assert_eq!(
        store.get("svc", "p").await.unwrap(),
        None,
        "L2 fill refused"
    );
    let fresh: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((fresh.version, db.calls()), (1, 2));
    // Another tag's invalidation overtakes nothing of this key's: its load fills as usual.
    cache.invalidate("p").await.unwrap();
    let read = HeldRead::start(&cache, &db).await;
    cache.invalidate_tag("product:2").await.unwrap();
    assert_eq!(read.finish().await.version, 1);
    assert!(store.get("svc", "p").await.unwrap().is_some(), "L2 filled");
    let calls = db.calls();
    let again: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((again.version, db.calls()), (1, calls), "an L1 hit");
}

/// A miss answers before its fill lands. A tag invalidated in between finds the key in none
/// of its indexes (the fill puts it there), so the fill itself must see the drop: it takes
/// the value back out of L2 and L1, and the next read loads the new version. (On one thread,
/// the fill cannot run before the invalidation: the order is certain.)
#[tokio::test]
async fn a_tag_invalidated_between_the_answer_and_the_fill_leaves_nothing() {
    let (store, db) = (MemoryStore::default(), Db::new());
    let cache = tagged_cache(&store).await;
    let old: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(old.version, 0);
    db.update();
    cache.invalidate_tag("product:1").await.unwrap();
    cache.run_pending_tasks().await;
    assert_eq!(
        store.get("svc", "p").await.unwrap(),
        None,
        "the fill was taken back"
    );
    assert!(cache.stats().fills_fenced >= 1, "{:?}", cache.stats());
    let fresh: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((fresh.version, db.calls()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_wins_over_a_load_that_began_before_it() {
    let (store, db) = (MemoryStore::default(), Db::new());
    let cache = cache(&store).await;
    let read = HeldRead::start(&cache, &db).await;
    let written = Product {
        id: 1,
        version: 9,
        name: "written".into(),
    };
    cache
        .set(
            "p",
            written.clone(),
            &EntryOptions::ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(read.finish().await.version, 0);
    assert_eq!(
        *cache.get::<Product>("p").await.unwrap().unwrap(),
        written,
        "L1 keeps the write"
    );
    let other = self::cache(&store).await;
    assert_eq!(
        *other.get::<Product>("p").await.unwrap().unwrap(),
        written,
        "L2 keeps the write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_the_invalidation_does_not_join_the_old_load() {
    let (store, db) = (MemoryStore::default(), Db::new());
    let cache = cache(&store).await;
    let read = HeldRead::start(&cache, &db).await;
    db.update();
    cache.invalidate("p").await.unwrap();
    // The new read does not join the overtaken flight, nor wait for it: the invalidation
    // took that flight's lease away with the key, so the new read takes a lease of its own
    // and loads at once, while the old load is still held.
    let after: Arc<Product> = cache.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!(after.version, 1, "a new load, not the one in flight");
    assert_eq!(cache.stats().lease_waits, 0);
    assert_eq!(read.finish().await.version, 0);
    assert_eq!(db.calls(), 2);
    // The old load's fill found another lease than its own: refused.
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().fills_fenced, 1, "{:?}", cache.stats());
    assert_eq!(cache.get::<Product>("p").await.unwrap().unwrap().version, 1);
}

/// Where a [`Held`] store holds a call until released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldAt {
    /// Every plain read, between fetching the bytes and returning them (it takes no lease).
    AfterGet,
    /// The first lease-taking read, before it runs in the store.
    BeforeLeaseRead,
    /// A write-through, before it runs in the store (at `write_reached`, until
    /// `write_release`); and every lease-taking read meanwhile, after it ran.
    ReadDuringWrite,
}

/// A real `MemoryStore` whose calls wait at one point until released, to force the
/// interleavings these tests need.
#[derive(Debug, Clone)]
struct Held {
    store: MemoryStore,
    at: HoldAt,
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
    armed: Arc<std::sync::atomic::AtomicBool>,
    write_reached: Arc<tokio::sync::Notify>,
    write_release: Arc<tokio::sync::Notify>,
}

impl Held {
    fn new(store: &MemoryStore, at: HoldAt) -> Self {
        Held {
            store: store.clone(),
            at,
            reached: Arc::default(),
            release: Arc::default(),
            armed: Arc::new(true.into()),
            write_reached: Arc::default(),
            write_release: Arc::default(),
        }
    }

    async fn hold(&self) {
        self.reached.notify_one();
        self.release.notified().await;
    }
}

#[async_trait::async_trait]
impl L2Store for Held {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<bytes::Bytes>, strata::Error> {
        let bytes = self.store.get(ns, key).await;
        if self.at == HoldAt::AfterGet {
            self.hold().await;
        }
        bytes
    }
    async fn get_many(
        &self,
        ns: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<bytes::Bytes>>, strata::Error> {
        self.store.get_many(ns, keys).await
    }
    async fn read(
        &self,
        ns: &str,
        key: &str,
        lease: Option<(u64, Duration)>,
        wait: bool,
    ) -> Result<Read, strata::Error> {
        if self.at == HoldAt::AfterGet {
            // A store without leases, as `L2Store::read`'s default is.
            return Ok(match self.get(ns, key).await? {
                Some(bytes) => Read::Value(bytes),
                None => Read::Absent,
            });
        }
        if self.at == HoldAt::ReadDuringWrite {
            let read = self.store.read(ns, key, lease, wait).await;
            self.hold().await;
            return read;
        }
        if lease.is_some() && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.hold().await;
        }
        self.store.read(ns, key, lease, wait).await
    }
    async fn release(&self, ns: &str, key: &str, token: u64) -> Result<(), strata::Error> {
        self.store.release(ns, key, token).await
    }
    async fn set(
        &self,
        ns: &str,
        key: &str,
        value: bytes::Bytes,
        ttl: Duration,
        tags: &[String],
        mode: WriteMode,
    ) -> Result<Written, strata::Error> {
        if self.at == HoldAt::ReadDuringWrite && matches!(mode, WriteMode::Replace { .. }) {
            self.write_reached.notify_one();
            self.write_release.notified().await;
        }
        self.store.set(ns, key, value, ttl, tags, mode).await
    }
    async fn delete(
        &self,
        ns: &str,
        key: &str,
        log: Option<&LogAppend>,
    ) -> Result<Option<Position>, strata::Error> {
        self.store.delete(ns, key, log).await
    }
    async fn delete_by_tag(&self, ns: &str, tag: &str) -> Result<u64, strata::Error> {
        self.store.delete_by_tag(ns, tag).await
    }
    async fn clear(&self, ns: &str) -> Result<u64, strata::Error> {
        self.store.clear(ns).await
    }
}

/// `p` loaded into a fresh store by one cache; another cache over that store, its calls held
/// at `at`.
async fn loaded_then_held(at: HoldAt) -> (Db, Held, HybridCache) {
    let (store, db) = (MemoryStore::default(), Db::new());
    let _: Arc<Product> = cache(&store)
        .await
        .get_or_load("p", db.loader(1))
        .await
        .unwrap();
    let held = Held::new(&store, at);
    let cache = cache_over(held.clone(), a_minute()).await;
    (db, held, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_overtaken_by_an_invalidation_leaves_nothing_in_l1() {
    let (_, held, reader) = loaded_then_held(HoldAt::AfterGet).await;
    let get = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.get::<Product>("p").await })
    };
    held.reached.notified().await; // the old value is read…
    reader.invalidate("p").await.unwrap(); // …then invalidated…
    held.release.notify_one(); // …then it reaches the L1 fill.
    let old = get.await.unwrap().unwrap().unwrap();
    assert_eq!(old.version, 0, "the get began before the invalidation");
    assert_eq!(reader.stats().fills_fenced, 1, "{:?}", reader.stats());
    // Nothing of it stayed in L1: the next get goes to L2, which no longer has it.
    let next = tokio::spawn({
        let reader = reader.clone();
        async move { reader.get::<Product>("p").await }
    });
    held.reached.notified().await;
    held.release.notify_one();
    assert!(next.await.unwrap().unwrap().is_none());
}

/// An invalidation applied here after a flight began, whose delete ran in L2 before the
/// flight's read took the lease there: the load began after the change and read the new
/// version, and the lease record fences its fill — which lands in L2 (not in this instance's
/// L1, where the flight counts as overtaken). Another instance that found the record waits
/// for that fill and loads nothing; it used to find the record released, unfilled, and load
/// again (W1's hot keys, written while read, paid two loads where one does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_overtaken_here_but_fenced_in_l2_still_fills_l2() {
    let (store, db) = (MemoryStore::default(), Db::new());
    let late = Held::new(&store, HoldAt::BeforeLeaseRead);
    let a = cache_over(late.clone(), a_minute()).await;
    let b = cache(&store).await;
    let (let_load_return, load_held) = tokio::sync::oneshot::channel::<()>();
    let read = {
        let (a, d) = (a.clone(), db.clone());
        tokio::spawn(async move {
            let load = move || async move {
                let record = d.fetch(1).await;
                let _ = load_held.await;
                record
            };
            a.get_or_load::<Product, _, _, _>("p", load).await.unwrap()
        })
    };
    late.reached.notified().await; // a's flight began; its read has not run in L2 yet
    db.update();
    a.invalidate("p").await.unwrap(); // deleted in L2, applied here: the flight is overtaken
    late.release.notify_one(); // the read runs now, after the delete: it takes the lease
    eventually("a's load to read the source", WAIT, || async {
        db.calls() == 1
    })
    .await;
    let from_b = {
        let (b, loader) = (b.clone(), db.loader(1));
        tokio::spawn(async move { b.get_or_load::<Product, _, _, _>("p", loader).await })
    };
    eventually("b to wait on a's lease", WAIT, || async {
        b.stats().lease_waits == 1
    })
    .await;
    let _ = let_load_return.send(());
    assert_eq!(read.await.unwrap().version, 1, "loaded after the change");
    assert_eq!(from_b.await.unwrap().unwrap().version, 1);
    assert_eq!(db.calls(), 1, "b got a's fill instead of loading again");
    assert!(
        store.get("svc", "p").await.unwrap().is_some(),
        "the fill landed"
    );
    a.run_pending_tasks().await;
    assert_eq!(a.stats().fills_fenced, 1, "not in a's L1: {:?}", a.stats());
}

/// A read that begins while a write-through is on its way to L2 — after the write marked the
/// key, before L2 has the new value — takes the old value from L2; it must not put it in L1
/// over the written one, whatever order the two finish in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_during_a_write_through_does_not_put_the_old_value_over_it() {
    let (db, held, writer) = loaded_then_held(HoldAt::ReadDuringWrite).await;
    let newer = Product {
        version: 7,
        ..db.fetch(1).await.unwrap()
    };
    let set = tokio::spawn({
        let (writer, newer) = (writer.clone(), newer.clone());
        async move { writer.set("p", newer, &a_minute()).await }
    });
    held.write_reached.notified().await; // the write has marked the key…
    let read = tokio::spawn({
        let (writer, load) = (writer.clone(), db.loader(1));
        async move { writer.get_or_load::<Product, _, _, _>("p", load).await }
    });
    held.reached.notified().await; // …a read took the old value from L2…
    held.write_release.notify_one();
    set.await.unwrap().unwrap(); // …the write is done, the new value in L1…
    held.release.notify_one(); // …and the read reaches its L1 fill.
    assert_eq!(
        read.await.unwrap().unwrap().version,
        0,
        "it began before the write returned"
    );
    let now: Arc<Product> = writer.get("p").await.unwrap().expect("in L1 or L2");
    assert_eq!(now.version, 7, "the written value, not the read's old one");
}
