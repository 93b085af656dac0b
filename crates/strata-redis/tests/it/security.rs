//! TLS, mutual TLS, ACL users, and secrets kept out of `Debug`.

use std::sync::Arc;

use strata::{EntryOptions, HybridCache};
use strata_redis::{RedisConfig, RedisPubSub, RedisStore, RedisWriteQueue};
use strata_testkit::source::{Db, Product};
use strata_testkit::{RedisServer, eventually};

use crate::{TTL, WAIT, instance_with};

/// The ACL line documented in the crate docs, for namespace `svc`.
pub(crate) const ACL: &str = "app on >app-secret ~svc:* ~svc#* &strata:invalidate:svc &svc#* -@all +get +mget +set +unlink +sadd +smembers +pttl +pexpire +incr +scan +publish +subscribe +evalsha +eval +script|load +ping +xadd +xread +xrange +xrevrange +spublish +ssubscribe +client|setname +info";

fn pem(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Exercises every Redis path of a cache: load, L2 read, set, tags, invalidation, clear.
async fn exercise(a: &HybridCache, b: &HybridCache) {
    let db = Db::new();
    let tagged = EntryOptions::ttl(TTL).tags(["t"]);
    let _: Arc<Product> = a
        .get_or_load_with("p", &tagged, db.loader(1))
        .await
        .unwrap();
    a.run_pending_tasks().await; // a's fill has landed in L2
    let _: Arc<Product> = b.get_or_load("p", db.loader(1)).await.unwrap();
    assert_eq!((db.calls(), b.stats().l2_hits), (1, 1));
    a.set(
        "q",
        Product {
            id: 2,
            version: 1,
            name: "q".into(),
        },
        &tagged,
    )
    .await
    .unwrap();
    a.invalidate_tag("t").await.unwrap();
    eventually("b to drop the tagged entry", WAIT, || async {
        b.get::<Product>("p").await.unwrap().is_none()
    })
    .await;
    a.invalidate("p").await.unwrap();
    a.clear().await.unwrap();
    assert_eq!(a.stats().l2_errors + b.stats().l2_errors, 0);
}

/// A user not allowed the log's channels (the documented line before invalidations were
/// pushed): its followers are refused `SSUBSCRIBE`, so they read the log instead — every path
/// still works, and the writes still append (their push is refused inside the script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_the_channels_follows_by_reading_the_log() {
    let without = ACL
        .replace(" &svc#*", "")
        .replace(" +spublish +ssubscribe", "");
    let redis = RedisServer::options().acl_user(without).start();
    let config = RedisConfig::from_url(&redis.url_with_user("app", "app-secret")).unwrap();
    let a = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let b = instance_with(&config, EntryOptions::ttl(TTL)).await;
    exercise(&a, &b).await;
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_xread:"), "{stats}");
}

/// Acknowledged writes under the documented line and the hash commands it names for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_under_the_documented_acl() {
    let redis = RedisServer::options()
        .acl_user(format!("{ACL} +hset +hgetall +hdel"))
        .start();
    let config = RedisConfig::from_url(&redis.url_with_user("app", "app-secret")).unwrap();
    let (a, b) = (
        crate::acknowledging(&config).await,
        crate::acknowledging(&config).await,
    );
    exercise(&a, &b).await;
    assert_eq!(a.stats().writes_unacknowledged, 0);
    assert_eq!(a.stats().log_errors + b.stats().log_errors, 0);
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(
        !stats.contains("cmdstat_xread:"),
        "pushed, not read: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_an_acl_user() {
    let redis = RedisServer::options().tls().acl_user(ACL).start();
    let tls = redis.tls_files().unwrap();
    let config = RedisConfig::from_url(&redis.url_with_user("app", "app-secret"))
        .unwrap()
        .ca_certificate_pem(pem(&tls.ca));
    let a = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let b = instance_with(&config, EntryOptions::ttl(TTL)).await;
    exercise(&a, &b).await;

    // The server's certificate is verified: without our CA, the system roots reject it.
    let untrusted = RedisConfig::from_url(&redis.url_with_user("app", "app-secret")).unwrap();
    assert!(RedisStore::connect_with(&untrusted).await.is_err());
    // And the password is checked.
    let wrong = RedisConfig::from_url(&redis.url_with_user("app", "nope"))
        .unwrap()
        .ca_certificate_pem(pem(&tls.ca));
    assert!(RedisStore::connect_with(&wrong).await.is_err());
    assert!(RedisPubSub::connect_with(&wrong).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let redis = RedisServer::options()
        .tls()
        .require_client_certificates()
        .start();
    let tls = redis.tls_files().unwrap();
    let server_only = RedisConfig::from_url(&redis.url())
        .unwrap()
        .ca_certificate_pem(pem(&tls.ca));
    assert!(
        RedisStore::connect_with(&server_only).await.is_err(),
        "client certificate required"
    );
    let mutual = server_only.client_certificate_pem(pem(&tls.client_cert), pem(&tls.client_key));
    let a = instance_with(&mutual, EntryOptions::ttl(TTL)).await;
    let b = instance_with(&mutual, EntryOptions::ttl(TTL)).await;
    exercise(&a, &b).await;
}

/// A `RedisPubSub` on `config` follows `svc` and gets what it publishes there.
async fn pubsub_round_trip(config: &RedisConfig) {
    let pubsub = RedisPubSub::connect_with(config).await.unwrap();
    let mut events = strata::InvalidationLog::follow(&pubsub, "svc")
        .await
        .unwrap();
    let invalidation = strata::invalidation::Invalidation {
        origin: 1,
        target: strata::invalidation::Target::Key("k".into()),
    };
    strata::InvalidationLog::publish(&pubsub, "svc", &invalidation)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(crate::WAIT, events.recv())
            .await
            .unwrap(),
        Some(strata::invalidation::LogEvent::Apply(invalidation))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_confines_a_service_to_its_namespace() {
    let redis = RedisServer::options().acl_user(ACL).start();
    let config = RedisConfig::from_url(&redis.url_with_user("app", "app-secret")).unwrap();
    let a = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let b = instance_with(&config, EntryOptions::ttl(TTL)).await;
    exercise(&a, &b).await;
    // The lighter backplane too: its own RESP3 connection, subscribed and probed.
    pubsub_round_trip(&config).await;

    let mut conn = redis::Client::open(redis.url_with_user("app", "app-secret"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis.cli(&["SET", "billing:secret", "x"]);
    let denied: Result<Option<String>, _> = redis::cmd("GET")
        .arg("billing:secret")
        .query_async(&mut conn)
        .await;
    assert!(denied.is_err(), "another namespace's keys are out of reach");
    let other = HybridCache::builder("billing")
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .build()
        .await
        .unwrap();
    let _: Arc<Product> = other
        .get_or_load("secret", Db::new().loader(1))
        .await
        .unwrap();
    assert!(
        other.stats().l2_errors >= 1,
        "reads of a foreign namespace fail (and fall back)"
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let config = RedisConfig::from_url("rediss://app:hunter2@cache.internal:6380/3")
        .unwrap()
        .client_certificate_pem(
            "-----BEGIN CERTIFICATE-----CERTDATA",
            "-----BEGIN PRIVATE KEY-----KEYDATA",
        );
    for text in [
        format!("{config:?}"),
        format!("{config:#?}"),
        config.to_string(),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("KEYDATA"), "{text}");
        assert!(!text.contains("CERTDATA"), "{text}");
        assert!(text.contains("cache.internal:6380"), "{text}");
    }
    assert!(RedisConfig::from_url("http://nope").is_err());
    assert!(RedisConfig::from_url("redis://h:notaport").is_err());

    let sentinel = RedisConfig::from_url("redis+sentinel://app:hunter2@s1:26379,s2/mymaster/2")
        .unwrap()
        .sentinel_credentials(None, "sentinel-secret");
    for text in [format!("{sentinel:?}"), sentinel.to_string()] {
        assert!(
            !text.contains("hunter2") && !text.contains("sentinel-secret"),
            "{text}"
        );
        assert!(
            text.contains("s1:26379") && text.contains("s2:26379"),
            "{text}"
        );
        assert!(text.contains("mymaster"), "{text}");
    }
    for bad in [
        "redis+sentinel://s1:26379",
        "redis+sentinel:///mymaster",
        "redis+sentinel://s1:26379/",
        "redis+sentinel://s1:26379/m/notadb",
    ] {
        assert!(RedisConfig::from_url(bad).is_err(), "{bad}");
    }

    let cluster = RedisConfig::from_url("rediss+cluster://app:hunter2@n1:7000,n2").unwrap();
    assert!(cluster.is_cluster());
    for text in [format!("{cluster:?}"), cluster.to_string()] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert_eq!(cluster.to_string(), "rediss+cluster://n1:7000,n2:6379");
    for bad in [
        "redis+cluster://",
        "redis+cluster://n1:7000/3",
        "redis+cluster://n1:port",
    ] {
        assert!(RedisConfig::from_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reauthentication_heals_once_the_user_is_back() {
    let redis = RedisServer::options().acl_user(ACL).start();
    let config = RedisConfig::from_url(&redis.url_with_user("app", "app-secret")).unwrap();
    let cache = instance_with(&config, EntryOptions::ttl(TTL)).await;
    let db = Db::new();
    let _: Arc<Product> = cache.get_or_load("p0", db.loader(0)).await.unwrap();

    // The user is disabled and its connections dropped: every reconnect's AUTH fails, which
    // the `redis` crate's connection manager never recovers from by itself.
    redis.cli(&["ACL", "SETUSER", "app", "off"]);
    redis.cli(&["CLIENT", "KILL", "USER", "app"]);
    for id in 1..20 {
        let p: Arc<Product> = cache
            .get_or_load(&format!("p{id}"), db.loader(id))
            .await
            .unwrap();
        assert_eq!(p.id, id, "reads go on meanwhile");
    }
    assert!(cache.stats().l2_errors > 0);

    redis.cli(&["ACL", "SETUSER", "app", "on"]);
    let next = std::sync::atomic::AtomicU64::new(100);
    eventually("L2 to be written again", WAIT, || async {
        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _: Arc<Product> = cache
            .get_or_load(&format!("p{id}"), db.loader(id))
            .await
            .unwrap();
        redis.cli(&["EXISTS", &format!("svc:p{id}")]).ends_with('1')
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_with_write_behind_runs_the_queue() {
    let acl = format!("{ACL} +xgroup|create +xreadgroup +xautoclaim +xack +xdel +multi +exec");
    let redis = RedisServer::options().acl_user(acl).start();
    let url = redis.url_with_user("app", "app-secret");
    let config = RedisConfig::from_url(&url).unwrap();
    let cache = HybridCache::builder("svc")
        .l2(RedisStore::connect_with(&config).await.unwrap())
        .write_queue(RedisWriteQueue::connect_with(&config).await.unwrap())
        .build()
        .await
        .unwrap();
    for n in 0..3u32 {
        cache
            .write_behind(&format!("k{n}"), n, &EntryOptions::ttl(TTL))
            .await
            .unwrap();
    }
    let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = applied.clone();
    let queue = RedisWriteQueue::connect_with(&config).await.unwrap();
    let flusher = tokio::spawn(strata::Flusher::new(queue, "svc").max_attempts(1).run(
        move |write: strata::QueuedWrite<u32>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(write.value);
                Ok::<(), std::io::Error>(())
            }
        },
    ));
    eventually("the queue to drain", WAIT, || async {
        applied.lock().unwrap().len() == 3 && redis.cli(&["XLEN", "svc#wb"]) == "0"
    })
    .await;
    flusher.abort();
    assert_eq!(*applied.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_serves_a_service_on_a_cluster() {
    let acl = format!("{ACL} +cluster|nodes +cluster|slots +srem +wait +exists");
    let cluster = strata_testkit::RedisCluster::start_with(&[&acl]);
    let url = cluster
        .url()
        .replace("redis+cluster://", "redis+cluster://app:app-secret@");
    let config = RedisConfig::from_url(&url).unwrap();
    // The durable log, split in parts, and the store.
    let instance = || async {
        let log = strata_redis::RedisStreamLog::connect_with(&config)
            .await
            .unwrap()
            .shards("svc", 3);
        crate::instance_with_log(&config, log).await
    };
    let (a, b) = (instance().await, instance().await);
    exercise(&a, &b).await;
    a.clear().await.unwrap();
    // The sharded pub/sub backplane.
    pubsub_round_trip(&config).await;
}
