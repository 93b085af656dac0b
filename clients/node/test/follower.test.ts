/** The log follower on a real server: entries pushed on the stream's channel, the stream read
 * only to catch up, and reading where the server refuses the channel (`docs/protocol.md` §4). */

import assert from "node:assert/strict";
import { test } from "node:test";

import { HybridCache } from "../src";
import { eventually, onServer } from "./server";

const env = onServer();

async function calls(command: string): Promise<number> {
  const stats = await env.redis.info("commandstats");
  const m = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(stats);
  return m === null ? 0 : Number(m[1]);
}

function entry(seq: number, key: string): string[] {
  return ["s", String(seq), "d", JSON.stringify({ origin: "0000000000000001", op: "key", arg: key })];
}

test("followers are pushed every entry and read the stream only to catch up", async () => {
  // A log kept to about 100 entries: a follower that fell 1,000 behind would have lost its
  // place (a resync); pushed, it never falls behind.
  const a = await HybridCache.connect(env.server.url, "t", { heartbeat: 200, logMaxLen: 100 });
  const b = await HybridCache.connect(env.server.url, "t", { heartbeat: 200, logMaxLen: 100 });
  try {
    const reads = await calls("xread");
    for (let i = 0; i < 1000; i++) await a.invalidate(`k${i}`);
    await eventually(() => b.stats().invalidationsReceived === 1000);
    assert.equal(b.stats().resyncs, 0);
    assert.equal(await calls("xread"), reads); // no blocking read: every entry pushed
    assert.ok((await calls("ssubscribe")) >= 2);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test("entries a writer did not push are found by the heartbeat or the next push", async () => {
  const a = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  const b = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  try {
    await a.invalidate("first"); // pushed: seq 1
    await eventually(() => b.stats().invalidationsReceived === 1);
    // A writer that pushes nothing (the entry as the protocol writes it, without the
    // `SPUBLISH`): the heartbeat's look at the stream finds it.
    await env.redis.xadd("t#log", "*", ...entry(await env.redis.incr("t#log:seq"), "unpushed"));
    await eventually(() => b.stats().invalidationsReceived === 2);
    // One more unpushed, then a pushed one whose sequence skips it: read from the stream at
    // once, in order, no resync.
    await env.redis.xadd("t#log", "*", ...entry(await env.redis.incr("t#log:seq"), "unpushed2"));
    await a.invalidate("last");
    await eventually(() => b.stats().invalidationsReceived === 4);
    assert.equal(b.stats().resyncs, 0);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test("a user without the channel follows by reading the log", async () => {
  // The key patterns of the namespace but no channel: `SSUBSCRIBE` is refused (NOPERM).
  await env.redis.call("ACL", "SETUSER", "nochan", "on", ">pw", "~t:*", "~t#*", "resetchannels", "+@all");
  const admin = await HybridCache.connect(env.server.url, "t", { heartbeat: 100 });
  const b = await HybridCache.connect(env.server.url.replace("redis://", "redis://nochan:pw@"), "t", {
    heartbeat: 100,
  });
  try {
    const reads = await calls("xread");
    await admin.invalidate("k");
    await eventually(() => b.stats().invalidationsReceived === 1);
    assert.ok((await calls("xread")) > reads);
    assert.equal(b.stats().resyncs, 0);
  } finally {
    await Promise.all([admin.close(), b.close()]);
    await env.redis.call("ACL", "DELUSER", "nochan");
  }
});
