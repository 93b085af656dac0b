/**
 * The cache's commands on a Redis Cluster: each master's on a pipelined connection of its own,
 * what ioredis's slot map sent astray through its cluster client (which mends the map), a
 * failover followed; the log's entries pushed from its master.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import calculateSlot from "cluster-key-slot";
import type Redis from "ioredis";
import { Cluster } from "ioredis";

import { HybridCache } from "../src";
import { connect, ready } from "../src/connection";
import { Layout } from "../src/layout";
import { masterOf, Routed } from "../src/routed";
import { eventually, RedisCluster } from "./server";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function client(url: string): Promise<Cluster> {
  const c = connect(url, {});
  assert.ok(c instanceof Cluster);
  c.on("error", () => {});
  await ready(c);
  return c;
}

/** A number from `INFO all`: `field:N`, or a command's `cmdstat_<name>:calls=N`. */
const stat = async (node: Redis, field: string): Promise<number> =>
  Number(new RegExp(`${field}[:=](\\d+)`).exec(await node.info("all"))?.[1] ?? 0);

// Each on a cluster of its own (started in ~2 s); bounded, so a hang fails rather than stalls.
const OPTIONS = { timeout: 60_000 };

/** `body` with a cluster of its own, a cluster client on it and a `Routed` over that client. */
async function onCluster(body: (c: Cluster, routed: Routed) => Promise<void>): Promise<void> {
  const cluster = await RedisCluster.start();
  const c = await client(cluster.url);
  const routed = new Routed(c);
  try {
    await body(c, routed);
  } finally {
    routed.close();
    c.disconnect();
    cluster.stop();
  }
}

test("each master carries its keys, a turn's commands in one write", OPTIONS, () =>
  onCluster(async (c, routed) => {
    const keys = Array.from({ length: 300 }, (_, i) => `k${i}`);
    await Promise.all(keys.map((k) => routed.call(["SET", k, k], true))); // connected
    const masters = c.nodes("master");
    const before = await Promise.all(masters.map((m) => stat(m, "total_reads_processed")));
    const replies = await Promise.all(keys.map((k) => routed.call(["GET", k], true)));
    const after = await Promise.all(masters.map((m) => stat(m, "total_reads_processed")));
    assert.deepEqual(replies, keys);
    // The INFO itself, and the turn's GETs for this master (two reads if the kernel split
    // them): ~100 a master through a command each.
    for (const [i, n] of after.entries()) assert.ok(n - before[i]! <= 3, `master ${i}: ${n - before[i]!} reads`);
    const sets = await Promise.all(masters.map((m) => stat(m, "cmdstat_set:calls")));
    assert.equal(
      sets.reduce((a, b) => a + b),
      300,
    );
    assert.ok(
      sets.every((n) => n > 0),
      String(sets),
    );
  }),
);

test("a command the slot map sent astray goes through the cluster client, which mends the map", OPTIONS, () =>
  onCluster(async (c, routed) => {
    const key = "astray";
    const slot = calculateSlot(key);
    const right = c.slots[slot]![0]!;
    const wrong = c.nodes("master").find((n) => `${n.options.host}:${n.options.port}` !== right)!;
    // ioredis's map, wrong about the key's slot (as after a resharding it has not seen).
    c.slots[slot] = [`${wrong.options.host}:${wrong.options.port}`];
    assert.equal(await routed.call(["SET", key, "v"], true), "OK"); // MOVED, then ioredis
    assert.equal(await c.get(key), "v");
    assert.equal(c.slots[slot]![0], right, "ioredis mended its map");
    assert.equal(await routed.call(["GET", key], true), "v");
  }),
);

test("a cache follows a failover of its key's master", OPTIONS, async () => {
  const cluster = await RedisCluster.start();
  const admin = await client(cluster.url);
  const cache = await HybridCache.connect(cluster.url, "f", { l1Capacity: 0 });
  try {
    let loads = 0;
    const load = async () => {
      loads += 1;
      return { v: 1 };
    };
    assert.deepEqual(await cache.getOrLoad("k", load), { v: 1 });
    await cache.runPendingTasks();
    assert.deepEqual(await cache.getOrLoad("k", load), { v: 1 });
    assert.deepEqual([loads, cache.stats().l2Hits], [1, 1]);
    const nodeKey = admin.slots[calculateSlot(new Layout("f", true).data("k"))]![0]!;
    const master = admin.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === nodeKey)!;
    // The replica has the value before its master dies.
    await master.call("WAIT", 1, 2000);
    process.kill(cluster.pid(Number(master.options.port)), "SIGKILL");

    const deadline = Date.now() + 20_000;
    const hits = cache.stats().l2Hits;
    while (cache.stats().l2Hits === hits) {
      assert.ok(Date.now() < deadline, "L2 never served again after the failover");
      assert.deepEqual(await cache.getOrLoad("k", load), { v: 1 }); // a load while it fails
      await sleep(50);
    }
    // Served by the promoted replica, which had the value: from then on, from L2.
    const loadsThen = loads;
    assert.deepEqual(await cache.getOrLoad("k", load), { v: 1 });
    assert.equal(loads, loadsThen);
  } finally {
    try {
      await cache.close();
      admin.disconnect();
    } finally {
      cluster.stop();
    }
  }
});

test("a follower is pushed its entries by the log's master, and again after its failover", OPTIONS, async () => {
  const cluster = await RedisCluster.start();
  const admin = await client(cluster.url);
  const a = await HybridCache.connect(cluster.url, "t", { heartbeat: 100 });
  const b = await HybridCache.connect(cluster.url, "t", { heartbeat: 100 });
  const xreads = async () =>
    (await Promise.all(admin.nodes().map((n) => stat(n, "cmdstat_xread:calls")))).reduce((x, y) => x + y);
  try {
    await a.invalidate("before");
    await eventually(() => b.stats().invalidationsReceived === 1);
    assert.equal(await xreads(), 0); // pushed, from the master of the log's slot
    const master = masterOf(admin, new Layout("t", true).log(0, 1))!;
    // The replica has the log before its master dies.
    await master.call("WAIT", 1, 2000);
    process.kill(cluster.pid(Number(master.options.port)), "SIGKILL");
    // Writes fail until the replica is promoted; then one reaches `b`, pushed again.
    const deadline = Date.now() + 20_000;
    for (;;) {
      assert.ok(Date.now() < deadline, "no invalidation went through after the failover");
      try {
        await a.invalidate("after");
        break;
      } catch {
        await sleep(100);
      }
    }
    await eventually(() => b.stats().invalidationsReceived >= 2, 20_000);
    assert.equal(await xreads(), 0);
  } finally {
    try {
      await Promise.all([a.close(), b.close()]);
      admin.disconnect();
    } finally {
      cluster.stop();
    }
  }
});
