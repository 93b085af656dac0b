/** `bench/w1.ts`: W1's stream for the Node client, against hand-written cache-aside, on a real
 * `redis-server` (a short stream: the figures are the bench's, not the test's). */

import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { LoadTimer } from "../bench/timer";
import { readStream, run, WRITE } from "../bench/w1";
import { withTimeout } from "../src/timeout";
import { Server } from "./server";

let server: Server;
const dir = mkdtempSync(join(tmpdir(), "w1-"));

before(async () => {
  server = await Server.start();
});
after(() => server.stop());

/** A skewed stream over 500 keys, in the file format `strata bench w1 --stream-out` writes. */
function stream(path: string, warmup: number, measured: number): void {
  let seed = 7;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const words = new Uint32Array(2 + warmup + measured);
  words[0] = warmup;
  words[1] = measured;
  for (let i = 2; i < words.length; i++) {
    const key = Math.min(Math.floor(1 / (1 - random())) - 1, 499);
    words[i] = (key | (random() < 0.02 ? WRITE : 0)) >>> 0;
  }
  writeFileSync(path, Buffer.from(words.buffer));
}

test("the bench runs both caches on one stream and counts what W1 asks", async () => {
  const path = join(dir, "w1.ops");
  stream(path, 300, 3_000);
  const [strata, naive] = (await run(server.url, path, "both", true)) as Record<string, any>[];
  for (const r of [strata!, naive!]) {
    assert.equal(r.reads + r.writes, 3_000);
    assert.equal(r.errors, 0);
    assert.ok(r.loader_calls > 0 && r.cpu.bench_s > 0 && r.redis_commands_per_op.total > 0, JSON.stringify(r));
    // The loads waited on the timer thread, each its whole millisecond.
    assert.equal(r.params.load_timer, "thread");
    assert.equal(r.load_sleep_us.count, r.loader_calls, JSON.stringify(r));
    assert.ok(r.load_sleep_us.min >= 1000, JSON.stringify(r.load_sleep_us));
  }
  assert.equal(strata!.stale_reads, 0);
  // Skewed reads over 500 keys: L1 answers most of Strata's; naive asks Redis for each.
  assert.ok(strata!.l1_hits > strata!.l2_hits && naive!.l1_hits === 0);
  assert.ok(strata!.redis_commands_per_op.total < naive!.redis_commands_per_op.total);
  assert.deepEqual(Object.keys(strata!.vs_naive).sort(), ["cpu", "ops", "read_p99", "redis_commands", "redis_cpu"]);
  // A server given by URL is only emptied between the runs: the same process measured both.
  assert.equal(strata!.l2_server.run_id, naive!.l2_server.run_id);
});

test("without a URL each cache runs on a server started for it", async () => {
  const path = join(dir, "w1-fresh.ops");
  stream(path, 100, 500);
  const [strata, naive] = (await run(null, path, "both", true)) as Record<string, any>[];
  const ids = [strata!.l2_server.run_id, naive!.l2_server.run_id] as string[];
  assert.ok(ids.every((id) => id.length === 40) && ids[0] !== ids[1], JSON.stringify(ids));
  assert.equal(strata!.errors + naive!.errors, 0);
});

test("a file that is not a stream is refused", () => {
  const path = join(dir, "bad.ops");
  writeFileSync(path, Buffer.from(new Uint32Array([5, 5, 1]).buffer));
  assert.throws(() => readStream(path), /not a stream/);
});

test("a wait begun while the timer thread posts the one before is not lost", async () => {
  const timer = new LoadTimer();
  const store = Atomics.store;
  try {
    // The interleaving that lost a wake-up: the second wait's count reaches the shared word
    // only after the thread has posted the first wait (due at once) and gone idle. Its post is
    // seen in its count (`control[1]`), waited for here, bounded; its next step, from the
    // post into `Atomics.wait`, cannot be seen from outside and takes microseconds, so a few
    // milliseconds more are held for it.
    const control = timer["control"];
    let hold = false;
    Atomics.store = ((array: Int32Array, index: number, value: number) => {
      if (hold && array === control && index === 0) {
        hold = false;
        const posted = performance.now() + 2_000;
        while (Atomics.load(control, 1) !== 1 && performance.now() < posted);
        const idle = performance.now() + 5;
        while (performance.now() < idle);
      }
      return store(array, index, value);
    }) as typeof Atomics.store;
    const first = timer.sleep(0);
    hold = true;
    const second = timer.sleep(0);
    Atomics.store = store;
    await assert.doesNotReject(withTimeout(first, 2_000), "the first wait never ended");
    await assert.doesNotReject(withTimeout(second, 2_000), "the second wait was lost: the thread slept through it");
  } finally {
    Atomics.store = store;
    await timer.close();
  }
});

test("the loads' timer thread ends each wait at its deadline, never before, in order", async () => {
  const timer = new LoadTimer();
  try {
    const ended: number[] = [];
    // Waits of one duration, as the loads' are, begun apart and at once.
    const waits = [];
    for (let i = 0; i < 20; i++) {
      const begun = performance.now();
      waits.push(
        timer.sleep(2).then(() => {
          ended.push(i);
          return performance.now() - begun;
        }),
      );
      if (i % 5 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    const took = await Promise.all(waits);
    assert.deepEqual(ended, [...Array(20).keys()]);
    for (const ms of took) assert.ok(ms >= 2, `a 2 ms wait ended after ${ms} ms`);
  } finally {
    await timer.close();
  }
});
