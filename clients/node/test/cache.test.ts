/** The cache against a real redis-server: counts of loads, hits, stale reads and errors. */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import Redis from "ioredis";

import {
  HybridCache,
  KeyTooLongError,
  LoaderError,
  LoaderTimeoutError,
  NotFoundError,
  prometheus,
  UnavailableError,
} from "../src";
import { parseAck } from "../src/acks";
import scripts from "../src/scripts.json";
import { type LoadEnds, type Waiter } from "../src/ends";
import { leaseHolder } from "../src/envelope";
import { newStats } from "../src/stats";
import { eventually, onServer, Server } from "./server";

const env = onServer();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A source of truth that counts its loads; a load reads first, then is slow. */
class Source {
  version = 1;
  calls = 0;
  fail = false;
  constructor(private readonly delay = 0) {}
  loader = () => async (): Promise<{ version: number }> => {
    this.calls += 1;
    const version = this.version;
    await sleep(this.delay);
    if (this.fail) throw new Error("the source is down");
    return { version };
  };
}

async function pair(): Promise<[HybridCache, HybridCache]> {
  return [
    await HybridCache.connect(env.server.url, "t", { heartbeat: 100 }),
    await HybridCache.connect(env.server.url, "t", { heartbeat: 100 }),
  ];
}

async function closing<T>(caches: HybridCache[], body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } finally {
    await Promise.all(caches.map((c) => c.close()));
  }
}

test("concurrent misses in two instances load once", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = new Source(50);
    const values = await Promise.all(
      [a, b].flatMap((c) => Array.from({ length: 100 }, () => c.getOrLoad("k", source.loader()))),
    );
    assert.equal(source.calls, 1);
    assert.ok(values.every((v) => v.version === 1));
  });
});

test("an invalidation reaches the other instance's L1", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = new Source();
    assert.deepEqual(await b.getOrLoad("k", source.loader()), { version: 1 });
    source.version = 2;
    await a.invalidate("k");
    await eventually(() => b.stats().invalidationsReceived === 1);
    assert.deepEqual(await b.getOrLoad("k", source.loader()), { version: 2 });
    assert.equal(source.calls, 2);
  });
});

test("tags and clear drop entries everywhere", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = new Source();
    await b.getOrLoad("p1", source.loader(), { tags: ["cat:1"] });
    await b.getOrLoad("p2", source.loader());
    await a.invalidateTag("cat:1");
    await eventually(() => b.stats().invalidationsReceived === 1);
    assert.deepEqual([await env.redis.exists("t:p1"), await env.redis.exists("t:p2")], [0, 1]);
    await b.getOrLoad("p1", source.loader(), { tags: ["cat:1"] });
    await b.getOrLoad("p2", source.loader());
    assert.equal(source.calls, 3);
    await a.clear();
    await eventually(() => b.stats().invalidationsReceived === 2);
    assert.equal(await env.redis.exists("t:p2"), 0);
    await b.getOrLoad("p2", source.loader());
    assert.equal(source.calls, 4);
  });
});

/** `b` invalidates `k` while `a` loads it: `a`'s caller gets what it loaded, nothing keeps it. */
async function overtakenFillDoesNotLand(a: HybridCache, b: HybridCache, client: Redis): Promise<Source> {
  const source = new Source(300);
  const load = a.getOrLoad("k", source.loader());
  await eventually(() => source.calls === 1);
  source.version = 2;
  await b.invalidate("k");
  assert.deepEqual(await load, { version: 1 });
  assert.equal(a.stats().fillsFenced, 1);
  assert.equal(await client.get("t:k"), null);
  return source;
}

test("a read between an invalidation here and Redis keeps no old copy", async () => {
  // A read on the writing instance that reaches Redis after the write dropped its L1 copy but
  // before Redis deleted the value takes the old value (its read began before the write
  // returned) — and must not leave it in L1 once the write has returned.
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = new Source();
    await b.getOrLoad("k", source.loader()); // version 1 in Redis, not in a's L1
    const seam = a as unknown as { script: (name: string, ...rest: unknown[]) => Promise<unknown> };
    const script = seam.script.bind(a);
    seam.script = async (name, ...rest) => {
      if (name === "INVALIDATE") assert.deepEqual(await a.getOrLoad("k", source.loader()), { version: 1 });
      return await script(name, ...rest);
    };
    source.version = 2;
    await a.invalidate("k");
    assert.deepEqual(await a.getOrLoad("k", source.loader()), { version: 2 });
  });
});

test("a fill overtaken by an invalidation does not land", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = await overtakenFillDoesNotLand(a, b, env.redis);
    assert.deepEqual(await a.getOrLoad("k", source.loader()), { version: 2 });
  });
});

test("an L1 hit is answered in the caller's turn, not a turn of the microtask queue later", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  await closing([cache], async () => {
    const source = new Source();
    await cache.getOrLoad("k", source.loader());
    let answered = false;
    const hit = cache.getOrLoad("k", source.loader()).then(() => {
      answered = true;
    });
    // One turn: the `then` of a promise settled when `getOrLoad` returned. Through an inner
    // `await` (the miss path's promise) it takes three.
    await null;
    assert.ok(answered);
    await hit;
    assert.equal(cache.stats().l1Hits, 1);
  });
});

test("a flight lets go of its value once it ends (or a young-generation GC promotes it)", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100, l1Capacity: 0 });
  await closing([cache], async () => {
    const source = new Source();
    await cache.getOrLoad("k", source.loader());
    const flights = (cache as unknown as { flights: Map<string, { lead: Promise<unknown> }> }).flights;
    const read = cache.getOrLoad("k", source.loader()); // an L2 hit: L1 is off
    const flight = flights.get("k");
    assert.ok(flight !== undefined, "the read is a flight while it waits on Redis");
    assert.deepEqual(await read, { version: 1 });
    assert.equal(flights.size, 0);
    // Still holding the outcome, the settled promise would answer before the next macrotask.
    const kept = await Promise.race([
      flight.lead.then(() => "kept"),
      new Promise((resolve) => setImmediate(() => resolve("let go"))),
    ]);
    assert.equal(kept, "let go");
  });
});

test("a miss alone on its key is answered before its fill lands; another instance waits for the fill", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = new Source();
    const paused = async () => {
      // The server holds every write (the fill's script too) for a while; reads go on.
      await env.redis.call("CLIENT", "PAUSE", "400", "WRITE");
      return await source.loader()();
    };
    assert.deepEqual(await a.getOrLoad("k", paused), { version: 1 });
    const held = await env.redis.getBuffer("t:k");
    assert.ok(held !== null && leaseHolder(held) !== null, "Redis still holds the lease record");
    assert.deepEqual(await a.getOrLoad("k", source.loader()), { version: 1 });
    assert.equal(a.stats().l1Hits, 1);
    assert.deepEqual(await b.getOrLoad("k", source.loader()), { version: 1 });
    assert.equal(source.calls, 1, "the other instance waited for the fill");
    await a.runPendingTasks();
    assert.equal(a.stats().fillsFenced, 0);
  });
});

test("a fill refused after the answer takes the value out of L1", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  await closing([cache], async () => {
    const source = new Source();
    const lost = async () => {
      await env.redis.unlink("t:k"); // the lease record goes: the fill will find nothing to replace
      return await source.loader()();
    };
    assert.deepEqual(await cache.getOrLoad("k", lost), { version: 1 });
    await cache.runPendingTasks();
    assert.equal(cache.stats().fillsFenced, 1);
    source.version = 2;
    assert.deepEqual(await cache.getOrLoad("k", source.loader()), { version: 2 });
    assert.equal(cache.stats().l1Hits, 0);
  });
});

test("an invalidation here wakes every flight waiting on the key's lease; a clear, every flight", async () => {
  // The change deleted the lease record they wait on: they read again at once, not at their
  // next poll. Two flights of one instance wait on one key when a write here overtook the first.
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  await closing([cache], async () => {
    const ends = (cache as unknown as { ends: LoadEnds }).ends;
    const woken = async (w: Waiter) =>
      await Promise.race([w.wake.then(() => true), new Promise<boolean>((r) => setImmediate(() => r(false)))]);
    const [first, second, other] = [ends.wait("k", null), ends.wait("k", null), ends.wait("other", null)];
    await cache.invalidate("k");
    assert.deepEqual([await woken(first), await woken(second), await woken(other)], [true, true, false]);
    await cache.clear();
    assert.equal(await woken(other), true);
  });
});

test("a tag dropped while a load is out refuses its fill", async () => {
  // The key is in no index until its fill: only the loading instance's own record of the
  // drop can refuse it (docs/protocol.md §6).
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const tagged = { tags: ["cat:1"] };
    const source = new Source(300);
    let load = a.getOrLoad("k", source.loader(), tagged);
    await eventually(() => source.calls === 1);
    source.version = 2;
    await a.invalidateTag("cat:1");
    assert.deepEqual(await load, { version: 1 });
    assert.equal(a.stats().fillsFenced, 1);
    assert.equal(await env.redis.get("t:k"), null);
    assert.deepEqual(await a.getOrLoad("k", source.loader(), tagged), { version: 2 });
    // Another tag's drop overtakes nothing of this key's: its load fills.
    await a.invalidate("k");
    load = a.getOrLoad("k", source.loader(), tagged);
    await eventually(() => source.calls === 3);
    await a.invalidateTag("cat:2");
    assert.deepEqual(await load, { version: 2 });
    await a.runPendingTasks();
    assert.notEqual(await env.redis.get("t:k"), null);
  });
});

/** What the followers send at their own pace (a subscription, its catching up and heartbeats). */
const FOLLOWING = new Set(["xread", "xrange", "xrevrange", "ssubscribe", "ping", "client|setinfo", "info"]);

/** Calls per command so far (`INFO commandstats`), the followers' left out. */
async function calls(client: Redis): Promise<Map<string, number>> {
  const text = await client.info("commandstats");
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const [, name = "", n = "0"] = m;
    if (!FOLLOWING.has(name)) out.set(name, Number(n));
  }
  return out;
}

// A server with SET … IFEQ (Valkey 8.1: STRATA_IFEQ_SERVER, set by ./scripts/test).
const ifeqServer = process.env.STRATA_IFEQ_SERVER;
if (!ifeqServer && process.env.STRATA_REQUIRE_IFEQ)
  throw new Error("STRATA_IFEQ_SERVER is not set (./scripts/test sets it)");

test("where the server compares, a fill is one SET and still fenced", { skip: !ifeqServer }, async () => {
  const valkey = await Server.start(ifeqServer);
  const client = new Redis(valkey.url);
  const a = await HybridCache.connect(valkey.url, "t", { heartbeat: 100 });
  const b = await HybridCache.connect(valkey.url, "t", { heartbeat: 100 });
  try {
    const source = new Source();
    await a.getOrLoad("warm", source.loader());
    // A miss is answered before its fill lands: each window waits for its own.
    await a.runPendingTasks();
    const before = await calls(client);
    for (let i = 0; i < 20; i++) await a.getOrLoad(`k${i}`, source.loader());
    await a.runPendingTasks();
    const sent = new Map<string, number>();
    for (const [name, n] of await calls(client)) {
      const d = n - (before.get(name) ?? 0);
      if (d > 0) sent.set(name, d);
    }
    // Each miss: SET … NX GET, then SET … IFEQ … GET; no script.
    assert.deepEqual([...sent], [["set", 40]]);
    // Overtaken while loading: refused, as by the script.
    await overtakenFillDoesNotLand(a, b, client);
  } finally {
    await Promise.all([a.close(), b.close()]);
    client.disconnect();
    valkey.stop();
  }
});

test("without IFEQ, a fill is the small script", async () => {
  // Redis 7 cannot compare in SET: a miss's fill is FILL_LEASED (six arguments), never FILL
  // (eleven), and stays fenced.
  const sha = (name: keyof typeof scripts) => createHash("sha1").update(scripts[name]).digest("hex");
  const client = new Redis(env.server.url);
  await client.script("FLUSH");
  const [a, b] = await pair();
  try {
    const source = new Source();
    for (let i = 0; i < 5; i++) await a.getOrLoad(`k${i}`, source.loader());
    const loaded = async (name: keyof typeof scripts) =>
      ((await client.script("EXISTS", sha(name))) as number[])[0] === 1;
    await eventually(() => loaded("FILL_LEASED"));
    assert.equal(await loaded("FILL"), false);
    await overtakenFillDoesNotLand(a, b, client);
  } finally {
    await Promise.all([a.close(), b.close()]);
    client.disconnect();
  }
});

test("fills that meet on their way share their script calls, each with its own outcome", async () => {
  // Ten loads end at once: two fills go alone (two calls on their way), the eight that come
  // meanwhile in one call. One key's lease was taken over while it loaded (its fill is refused,
  // the other record put back), one waited on by another instance (stored, its end announced by
  // the script itself: the call carries the filled stream on one server).
  // A connection of its own, started while the server is quiet (ioredis mistakes a command
  // shown before MONITOR's own answer for that answer).
  const monitor = await env.redis.monitor();
  const [a, b] = await pair();
  const told: string[] = [];
  monitor.on("monitor", (_time: string, args: string[], source: string) => {
    if (args[0]?.toUpperCase() === "XADD" && args[1] === "t#filled") told.push(`${source} ${args.at(-1)}`);
  });
  const run = closing([a, b], async () => {
    const keys = Array.from({ length: 10 }, (_, i) => `f${i}`);
    let open = () => {};
    const gate = new Promise<void>((r) => (open = r));
    let loads = 0;
    const loader = async () => {
      loads += 1;
      await gate;
      return { version: 1 };
    };
    await a.getOrLoad("warm", async () => ({ version: 1 })); // the script loaded
    const filled = keys.map((k) => a.getOrLoad(k, loader));
    const leased = async () => (await Promise.all(keys.map((k) => env.redis.strlen(`t:${k}`)))).every((n) => n === 12);
    await eventually(leased);
    const other = Buffer.from("ff534c000000000000000007", "hex"); // another load's lease record
    await env.redis.set("t:f3", other, "PX", 10_000); // overtaken: refused
    const waits = b.stats().leaseWaits;
    const waiting = b.getOrLoad("f7", async () => ({ version: 0 })); // waited on: announced
    await eventually(async () => (await env.redis.strlen("t:f7")) === 13 && b.stats().leaseWaits > waits);
    const before = await calls(env.redis);
    open();
    assert.ok((await Promise.all(filled)).every((v) => v.version === 1));
    await a.runPendingTasks();
    assert.deepEqual(await waiting, { version: 1 }); // told by the announcement
    const sent = new Map<string, number>();
    for (const [name, n] of await calls(env.redis)) sent.set(name, n - (before.get(name) ?? 0));
    // Two calls alone and one of eight (ten calls, one a fill, without the batch).
    assert.equal(sent.get("evalsha"), 3, JSON.stringify([...sent]));
    assert.equal(sent.get("xadd"), 1); // f7's end announced, once
    await eventually(() => told.length > 0);
    assert.deepEqual(told, ["lua f7"]); // by the fill's own script
    assert.deepEqual(await env.redis.getBuffer("t:f3"), other); // put back
    const stored = await Promise.all(keys.map((k) => env.redis.strlen(`t:${k}`)));
    assert.ok(
      stored.every((n, i) => (i === 3 ? n === 12 : n > 13)),
      `stored: ${stored}`,
    );
    assert.equal(a.stats().fillsFenced, 1);
    assert.equal(loads, 10);
  });
  await run.finally(() => monitor.disconnect());
});

test("waiters on another instance mark its load once", async () => {
  // The first waiter marks the holder's lease record (the READ script: GET, APPEND), the next
  // finds the mark and reads plainly; told of the fill, each reads the value with one
  // SET … NX GET. Marking every waiting read sent four scripts of one.
  const [a, b] = await pair();
  const [c, d] = await pair();
  await closing([a, b, c, d], async () => {
    let loads = 0;
    const waitOnA = async (key: string): Promise<Map<string, number>> => {
      let open = () => {};
      const gate = new Promise<void>((r) => (open = r));
      const holder = a.getOrLoad(key, async () => {
        loads += 1;
        await gate;
        return { version: 1 };
      });
      const length = (n: number) => async () => (await env.redis.strlen(`t:${key}`)) === n;
      await eventually(length(12)); // A's lease record
      const before = await calls(env.redis);
      const unused = async () => ({ version: 0 });
      const bReads = b.getOrLoad(key, unused);
      await eventually(length(13)); // marked by B
      const waits = c.stats().leaseWaits;
      const cReads = c.getOrLoad(key, unused);
      await eventually(() => c.stats().leaseWaits > waits);
      open();
      assert.deepEqual(await Promise.all([holder, bReads, cReads]), [{ version: 1 }, { version: 1 }, { version: 1 }]);
      const sent = new Map<string, number>();
      for (const [name, n] of await calls(env.redis)) {
        const diff = n - (before.get(name) ?? 0);
        if (diff > 0) sent.set(name, diff);
      }
      return sent;
    };
    await waitOnA("warm"); // each script loaded once
    const sent = await waitOnA("k");
    const plainReads = sent.get("set") ?? 0;
    sent.delete("set");
    sent.delete("strlen"); // the test's own looks at the mark
    // B's mark and A's fill; the fill announced (waited on).
    assert.deepEqual(Object.fromEntries(sent), { evalsha: 2, get: 1, append: 1, xadd: 1, spublish: 1 });
    // B: its read, its read once told; C: its read, once waiting, once told; A's fill.
    assert.ok(plainReads >= 6, `${plainReads} SETs`);
    assert.equal(loads, 2);
    assert.equal(b.stats().leaseWaits, 2);
    assert.equal(c.stats().leaseWaits, 2);
  });
});

test("set is write-through and visible to the other", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    const source = new Source();
    await b.getOrLoad("k", source.loader());
    await a.set("k", { version: 5 });
    await eventually(() => b.stats().invalidationsReceived === 1);
    assert.deepEqual(await b.getOrLoad("k", source.loader()), { version: 5 });
    assert.deepEqual(await a.get("k"), { version: 5 });
    assert.equal(source.calls, 1);
  });
});

test("soft TTL serves stale and refreshes once", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", {
    defaults: { ttl: 60_000, softTtl: 50 },
    heartbeat: 100,
  });
  await closing([cache], async () => {
    const source = new Source();
    await cache.getOrLoad("k", source.loader());
    source.version = 2;
    await sleep(100); // past the soft TTL: the schedule under test, not a wait
    const stale = await Promise.all(Array.from({ length: 20 }, () => cache.getOrLoad("k", source.loader())));
    assert.ok(stale.every((v) => v.version === 1));
    await eventually(() => source.calls === 2);
    for (let i = 0; i < 1000 && (await cache.get<{ version: number }>("k"))?.version !== 2; i++) await sleep(5);
    assert.deepEqual(await cache.getOrLoad("k", source.loader()), { version: 2 });
    assert.equal(source.calls, 2);
    assert.equal(cache.stats().backgroundRefreshes, 1);
  });
});

test("fail-safe serves the expired value when the loader fails", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", {
    defaults: { ttl: 50, failSafe: 60_000, failSafeThrottle: 60_000 },
    heartbeat: 100,
  });
  await closing([cache], async () => {
    const source = new Source();
    await cache.getOrLoad("k", source.loader());
    await sleep(100); // past the TTL: the schedule under test
    source.fail = true;
    assert.deepEqual(await cache.getOrLoad("k", source.loader()), { version: 1 });
    assert.deepEqual(await cache.getOrLoad("k", source.loader()), { version: 1 });
    assert.equal(source.calls, 2);
    assert.equal(cache.stats().loaderErrors, 1);
    await assert.rejects(cache.getOrLoad("other", source.loader()), LoaderError);
  });
});

test("the commands of one turn of the event loop go out in one write", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 60_000 });
  await closing([cache], async () => {
    const reads = async () => Number(/total_reads_processed:(\d+)/.exec(await env.redis.info("stats"))?.[1]);
    const before = await reads();
    const got = await Promise.all(Array.from({ length: 100 }, (_, i) => cache.get(`k${i}`)));
    assert.deepEqual(new Set(got), new Set([null]));
    // The server read the hundred GETs at once: this connection's INFO twice, and little else.
    assert.ok((await reads()) - before <= 6, `${(await reads()) - before} reads`);
  });
});

test("hard timeout, negative entries, long keys", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  await closing([cache], async () => {
    await assert.rejects(cache.getOrLoad("slow", new Source(5000).loader(), { hardTimeout: 50 }), LoaderTimeoutError);
    assert.equal(cache.stats().loaderTimeouts, 1);
    assert.equal(await env.redis.get("t:slow"), null); // the lease was given back
    let calls = 0;
    const missing = async () => {
      calls += 1;
      return null;
    };
    assert.equal(await cache.getOrLoadOptional("gone", missing), null);
    assert.equal(await cache.getOrLoadOptional("gone", missing), null);
    assert.equal(calls, 1);
    await assert.rejects(cache.getOrLoad("gone", new Source().loader()), NotFoundError);
    await assert.rejects(cache.getOrLoad("x".repeat(2000), new Source().loader()), KeyTooLongError);
  });
});

test("foreign or corrupt bytes are a counted miss", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  await closing([cache], async () => {
    const junk = [
      Buffer.from("not json"),
      Buffer.from("\xffST\x09garbage", "latin1"),
      Buffer.concat([Buffer.from("\xffST\x01", "latin1"), Buffer.alloc(60)]),
    ];
    for (const [i, bytes] of junk.entries()) {
      await env.redis.set(`t:j${i}`, bytes);
      const source = new Source();
      assert.deepEqual(await cache.getOrLoad(`j${i}`, source.loader()), { version: 1 });
      assert.equal(source.calls, 1);
    }
    assert.equal(cache.stats().decodeErrors, 3);
    assert.equal(cache.stats().fillsFenced, 0);
  });
});

test("a follower whose position was trimmed drops its L1", async () => {
  const cache = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  await closing([cache], async () => {
    const source = new Source();
    await cache.getOrLoad("k", source.loader());
    await cache.runPendingTasks(); // the fill landed (a lone caller is answered first)
    await env.redis.incrby("t#log:seq", 100);
    await env.redis.xadd("t#log", "*", "s", "101", "d", '{"origin":"0000000000000001","op":"key","arg":"x"}');
    await eventually(() => cache.stats().resyncs === 1);
    await cache.getOrLoad("k", source.loader());
    assert.deepEqual([cache.stats().l1Hits, cache.stats().l2Hits], [0, 1]);
  });
});

test("while Redis is down reads go to the loader and writes throw; the cache heals when it is back", async () => {
  let own = await Server.start();
  const cache = await HybridCache.connect(own.url, "t", { heartbeat: 100 });
  try {
    // The cache's own client, to count its reconnect attempts.
    const client = (cache as unknown as { redis: Redis }).redis;
    let attempts = 0;
    client.on("reconnecting", () => (attempts += 1));
    own.stop();
    const source = new Source();
    // Read after read fails over to the loader, never queued for a reconnect: a queued call
    // is failed only by a failed reconnect attempt, so 20 reads would take 20 attempts.
    for (let i = 0; i < 20; i++) {
      assert.deepEqual(await cache.getOrLoad(`down${i}`, source.loader()), { version: 1 });
    }
    assert.equal(source.calls, 20);
    assert.ok(attempts < 10, `the reads waited on ${attempts} reconnect attempts`);
    assert.ok(cache.stats().l2Errors >= 20);
    await assert.rejects(cache.set("k", 1), UnavailableError);
    await assert.rejects(HybridCache.connect(own.url, "t"), /ECONNREFUSED/);

    own = await Server.start("redis-server", own.port);
    // Bounded: ioredis reconnects on its back-off.
    const deadline = Date.now() + 10_000;
    while (
      !(await cache.set("k", { version: 7 }).then(
        () => true,
        () => false,
      ))
    ) {
      assert.ok(Date.now() < deadline, "the cache did not reconnect");
      await sleep(20);
    }
    const other = await HybridCache.connect(own.url, "t", { heartbeat: 100 });
    const again = new Source();
    await closing([other], async () => {
      assert.deepEqual(await other.getOrLoad("k", again.loader()), { version: 7 });
    });
    assert.equal(again.calls, 0, "read from the restarted Redis");
  } finally {
    await cache.close();
    own.stop();
  }
});

test("stats export under the Rust names", () => {
  const text = prometheus({ ...newStats(), l1Hits: 3, misses: 1 }, "catalog");
  assert.match(text, /strata_hits_total\{namespace="catalog",level="l1"\} 3/);
  assert.match(text, /strata_misses_total\{namespace="catalog"\} 1/);
});

test("a namespace of a newer protocol is refused", async () => {
  await env.redis.set("t#protocol", "2");
  await assert.rejects(HybridCache.connect(env.server.url, "t"), /protocol version 2/);
  await env.redis.set("t#protocol", "1");
  await env.redis.set("t#log:shards", "3");
  await assert.rejects(HybridCache.connect(env.server.url, "t"), /3 parts/);
});

test("decode turns data another instance stored into the caller's type, once", async () => {
  const [a, b] = await pair();
  await closing([a, b], async () => {
    class Product {
      constructor(readonly version: number) {}
    }
    let decoded = 0;
    const decode = (data: unknown) => {
      decoded += 1;
      return new Product((data as { version: number }).version);
    };
    await a.getOrLoad("k", new Source().loader());
    const first = await b.getOrLoad("k", new Source().loader(), undefined, decode);
    const again = await b.getOrLoad("k", new Source().loader(), undefined, decode);
    assert.ok(first instanceof Product && again === first);
    assert.equal(decoded, 1);
  });
});

test("acknowledged writes resolve once every other instance applied them", async () => {
  const a = await HybridCache.connect(env.server.url, "ack", { heartbeat: 100, acknowledgedWrites: true });
  const b = await HybridCache.connect(env.server.url, "ack", { heartbeat: 100, acknowledgedWrites: true });
  await closing([a, b], async () => {
    // Each counts before it serves: its field is there when `connect` resolves.
    const fields = await env.redis.hgetall("ack#acks");
    assert.deepEqual(Object.keys(fields).sort(), [a.instanceId.toString(), b.instanceId.toString()].sort());
    const source = new Source();
    for (let i = 1; i <= 20; i++) {
      await b.getOrLoad("k", source.loader());
      assert.equal(source.calls, i);
      await a.invalidate("k");
      // Resolved: b applied it already (no wait here), and its copy is gone.
      assert.equal(b.stats().invalidationsReceived, i);
      const seq = BigInt((await env.redis.get("ack#log:seq")) ?? "0");
      const ack = parseAck((await env.redis.hget("ack#acks", b.instanceId.toString())) ?? "", 0);
      assert.ok(ack !== null && ack[1] >= seq && ack[0] > Date.now());
    }
    await a.set("k", { version: 9 });
    assert.equal(b.stats().invalidationsReceived, 21);
    await b.invalidateTag("t");
    await b.clear();
    assert.equal(a.stats().invalidationsReceived, 2);
    assert.equal(a.stats().writesUnacknowledged + b.stats().writesUnacknowledged, 0);
  });
  assert.deepEqual(await env.redis.hgetall("ack#acks"), {});
});

test("a frozen instance holds writes up to the bound, a gone one not at all", async () => {
  const a = await HybridCache.connect(env.server.url, "ack", {
    heartbeat: 100,
    maxStaleness: 300,
    acknowledgedWrites: true,
  });
  await closing([a], async () => {
    // An instance that says it is alive but applies nothing (frozen, cut off).
    await env.redis.hset("ack#acks", "7", `${Date.now() + 60_000}:0`);
    await a.invalidate("k");
    assert.equal(a.stats().writesUnacknowledged, 1);
    // Past its life: the writer removes it and does not wait.
    await env.redis.hset("ack#acks", "7", `${Date.now() - 1}:0`);
    await a.invalidate("k");
    assert.equal(a.stats().writesUnacknowledged, 1);
    assert.equal(await env.redis.hexists("ack#acks", "7"), 0);
    // A field that is not an acknowledgement is waited for, as Rust does.
    await env.redis.hset("ack#acks", "8", "garbage");
    await a.invalidate("k");
    assert.equal(a.stats().writesUnacknowledged, 2);
  });
  assert.deepEqual(await env.redis.hgetall("ack#acks"), { "8": "garbage" });
});

test("closing an acknowledging instance does not wait on a frozen server", async () => {
  const frozen = await Server.start();
  const a = await HybridCache.connect(frozen.url, "ack", { heartbeat: 100, acknowledgedWrites: true });
  try {
    // Answered before its fill, which the frozen server never takes.
    const load = async () => {
      frozen.freeze();
      return { version: 1 };
    };
    assert.deepEqual(await a.getOrLoad("k", load), { version: 1 });
    const closed = await Promise.race([a.close().then(() => true), sleep(10_000).then(() => false)]);
    assert.ok(closed, "close returned");
  } finally {
    frozen.thaw();
    frozen.stop();
  }
});
