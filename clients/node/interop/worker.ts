/**
 * A Node instance for the mixed-language tests of the Strata repository.
 *
 * `node worker.js serve URL NAMESPACE [acknowledged]`: one cache (with `acknowledged`:
 * acknowledged writes); JSON commands on stdin, one per line, each answered by one JSON line on
 * stdout (the same commands as the Python worker's).
 *
 * `node worker.js checker`: one process of the staleness checker
 * (`crates/strata-redis/tests/it/checker.rs`): its parameters in `STRATA_CHECKER_RUN`, its
 * record printed as `CHECKER:<json>`, exactly as the Rust worker does.
 */

import { existsSync } from "node:fs";
import { createInterface } from "node:readline";

import Redis from "ioredis";

import { type EntryOptions, HybridCache, UnavailableError } from "../src";

const WRITE_RATIO = 0.15;
const GIVE_UP = 30_000;

type Command = Record<string, unknown> & { op: string };

const wallUs = (): number => Math.floor(performance.timeOrigin * 1000 + performance.now() * 1000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function handle(cache: HybridCache, cmd: Command): Promise<Record<string, unknown>> {
  const options: EntryOptions = {
    ttl: 600_000,
    tags: (cmd.tags as string[] | undefined) ?? [],
    codec: cmd.codec as EntryOptions["codec"],
  };
  const key = cmd.key as string;
  switch (cmd.op) {
    case "get_or_load": {
      let loaded = 0;
      const value = await cache.getOrLoad(
        key,
        async () => {
          loaded += 1;
          await sleep(Number(cmd.load_ms ?? 0));
          return cmd.value;
        },
        options,
      );
      // The fill may still be on its way (a lone caller is answered first): the test's next
      // step may read Redis, from another language.
      await cache.runPendingTasks();
      return { value, loaded };
    }
    case "get":
      return { value: await cache.get(key) };
    case "set":
      await cache.set(key, cmd.value, options);
      return { ok: true };
    case "invalidate":
      await cache.invalidate(key);
      return { ok: true };
    case "invalidate_tag":
      await cache.invalidateTag(cmd.tag as string);
      return { ok: true };
    case "clear":
      await cache.clear();
      return { ok: true };
    case "stats":
      return { stats: cache.stats() };
    case "stampede": {
      let calls = 0;
      const results = await Promise.allSettled(
        Array.from({ length: Number(cmd.reads) }, () =>
          cache.getOrLoad(
            key,
            async () => {
              calls += 1;
              await sleep(Number(cmd.load_ms));
              return cmd.value;
            },
            options,
          ),
        ),
      );
      await cache.runPendingTasks();
      const errors = results
        .filter((r) => r.status === "rejected")
        .map((r) => String((r as PromiseRejectedResult).reason));
      const distinct = [
        ...new Set(
          results
            .filter((r) => r.status === "fulfilled")
            .map((r) => JSON.stringify((r as PromiseFulfilledResult<unknown>).value)),
        ),
      ];
      return { loader_calls: calls, errors, distinct };
    }
    case "wait_received": {
      const deadline = Date.now() + 10_000;
      // A counter to watch, no event to wait on: polled, bounded.
      while (cache.stats().invalidationsReceived < Number(cmd.n) && Date.now() < deadline) await sleep(5);
      return { received: cache.stats().invalidationsReceived };
    }
    default:
      return { error: `unknown op ${cmd.op}` };
  }
}

async function serve(url: string, namespace: string, acknowledged: boolean): Promise<void> {
  // Acknowledging, it says it is alive for three heartbeats: long enough (6 s) that a test
  // freezing it sees the others' writes held up to their bound (1 s), not let go.
  const cache = await HybridCache.connect(url, namespace, {
    heartbeat: acknowledged ? 2000 : 100,
    acknowledgedWrites: acknowledged,
  });
  console.log(JSON.stringify({ ready: true }));
  for await (const line of createInterface({ input: process.stdin })) {
    let reply: Record<string, unknown>;
    try {
      reply = await handle(cache, JSON.parse(line) as Command);
    } catch (e) {
      reply = { error: `${(e as Error).name}: ${(e as Error).message}` };
    }
    console.log(JSON.stringify(reply));
  }
  await cache.close();
}

interface Run {
  url: string;
  source: string;
  keys: number;
  run_ms: number;
  stop_file?: string | null;
  max_staleness_ms: number;
  log_shards: number;
}

async function checker(): Promise<void> {
  const run = JSON.parse(process.env.STRATA_CHECKER_RUN ?? "") as Run;
  const cache = await HybridCache.connect(run.url, "chk", {
    defaults: { ttl: 600_000 },
    maxStaleness: run.max_staleness_ms,
    logMaxLen: 1000,
    logShards: run.log_shards,
    heartbeat: 100,
    redis: { connectTimeout: 1000, commandTimeout: 1000 },
  });
  const source = new Redis(run.source);
  const commits: [number, number, number][] = [];
  const reads: [number, number, number][] = [];
  const errors = { reads: 0, refused_writes: 0, other_write_errors: 0 };
  const write = async (key: number, version: number) => {
    const giveUp = Date.now() + GIVE_UP;
    for (;;) {
      try {
        await cache.invalidate(`k${key}`);
        commits.push([key, version, wallUs()]);
        return;
      } catch (e) {
        if (e instanceof UnavailableError) errors.refused_writes += 1;
        else errors.other_write_errors += 1;
      }
      if (Date.now() > giveUp) {
        errors.other_write_errors += 1;
        return;
      }
      await sleep(20);
    }
  };
  const pending: Promise<void>[] = [];
  const end = Date.now() + run.run_ms;
  while (Date.now() < end && !(run.stop_file && existsSync(run.stop_file))) {
    const key = Math.floor(Math.random() * run.keys);
    if (Math.random() < WRITE_RATIO) {
      const version = await source.incr(`source:${key}`);
      pending.push(write(key, version));
    } else {
      const began = wallUs();
      try {
        const version = await cache.getOrLoad(`k${key}`, async () => Number((await source.get(`source:${key}`)) ?? 0));
        reads.push([key, version, began]);
      } catch (e) {
        console.error(`checker: read of k${key} failed: ${(e as Error).message}`);
        errors.reads += 1;
      }
    }
    await sleep(2);
  }
  await Promise.all(pending);
  const s = cache.stats();
  console.log(
    "CHECKER:" +
      JSON.stringify({ commits, reads, errors, l1_hits: s.l1Hits, l1_bypassed: s.l1Bypassed, resyncs: s.resyncs }),
  );
  await cache.close();
  source.disconnect();
}

const [mode, ...args] = process.argv.slice(2);
const main =
  mode === "serve" && (args.length === 2 || (args.length === 3 && args[2] === "acknowledged"))
    ? serve(args[0]!, args[1]!, args.length === 3)
    : mode === "checker"
      ? checker()
      : Promise.reject(new Error("usage: worker.js serve URL NAMESPACE [acknowledged] | worker.js checker"));
main.catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
