//! Write-behind with the in-process queue: queued before acknowledged, flushed in order,
//! undecodable entries dead-lettered, a cache without a queue refusing clearly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::{
    EntryOptions, Error, Flusher, HybridCache, MemoryWriteQueue, QueuedWrite, WriteQueue,
};

use crate::TTL;

#[tokio::test]
async fn writes_are_queued_then_flushed_in_order() {
    let queue = MemoryWriteQueue::new();
    let cache = HybridCache::builder("carts")
        .write_queue(queue.clone())
        .build()
        .await
        .unwrap();
    for n in 0..5u32 {
        cache
            .write_behind("cart:1", vec![n], &EntryOptions::ttl(TTL))
            .await
            .unwrap();
    }
    assert_eq!(queue.len("carts"), 5, "queued before acknowledged");
    let got: Arc<Vec<u32>> = cache.get("cart:1").await.unwrap().unwrap();
    assert_eq!(*got, vec![4], "and cached");

    // Something foreign in the queue is set aside, not retried forever.
    queue
        .append("carts", "cart:2", "not json".into())
        .await
        .unwrap();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let sink = applied.clone();
    let flusher = tokio::spawn(Flusher::new(queue.clone(), "carts").run(
        move |write: QueuedWrite<Vec<u32>>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(write.value[0]);
                Ok::<(), std::io::Error>(())
            }
        },
    ));
    strata_testkit::eventually("the queue to drain", Duration::from_secs(5), || async {
        queue.is_empty("carts")
    })
    .await;
    flusher.abort();
    assert_eq!(*applied.lock().unwrap(), vec![0, 1, 2, 3, 4], "in order");
    let dead = queue.dead_letters("carts");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1.starts_with("undecodable"), "{}", dead[0].1);
}

#[tokio::test]
async fn without_a_queue_write_behind_is_a_configuration_error() {
    let cache = HybridCache::builder("carts").build().await.unwrap();
    let err = cache
        .write_behind("cart:1", 1u32, &EntryOptions::ttl(TTL))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(
        cache.get::<u32>("cart:1").await.unwrap().is_none(),
        "nothing written"
    );
}
