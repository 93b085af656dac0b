/**
 * W1 of the reference workloads for the Node client: `HybridCache` against the hand-written
 * cache-aside it replaces (ioredis: `GET` → miss → load → `SET … EX`; a write `DEL`s), on the
 * operation stream the `strata` CLI writes, so that both — and the Rust bench — ask the same keys
 * in the same order:
 *
 * ```sh
 * strata bench w1 --ops 100000 --stream-out /tmp/w1.ops
 * node clients/node/dist/bench/w1.js /tmp/w1.ops --cache both [--redis URL] [--json]
 * ```
 *
 * W1's record (about 1 KB of JSON), 1 ms loads, 64 operations in flight, L1 of 10,000 entries for
 * 60 s, L2 for an hour. Without `--redis` each cache runs on a `redis-server` of its own, started
 * fresh for it on a free loopback port (as the workloads ask: one that held the other cache's run
 * would answer the second for less); `--redis` takes the cache's URLs (on a cluster,
 * `redis+cluster://…`, the naive cache goes through ioredis's cluster client and the masters'
 * costs are summed), and both run on it, each on a flushed namespace. Each cache runs with a
 * fresh source of truth; the figures are the workloads' (operations/s,
 * read and write latency, hit ratios, loader calls, stale reads) and their cost: this process's
 * CPU and `redis-server`'s over the measured phase, and Redis commands per operation — with
 * `--cache both` as ratios to the naive cache's.
 */

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { Cluster } from "ioredis";

import { HybridCache } from "../src";
import { type Client, connect, ready } from "../src/connection";
import { Server } from "../test/server";
import { LoadTimer } from "./timer";

const N = 100_000;
const VALUE_BYTES = 1024;
const LOAD_MS = 1;
const CONCURRENCY = 64;
const L1_ENTRIES = 10_000;
const L1_TTL_MS = 60_000;
const L2_TTL_S = 3600;
/** Bit 31 of a stream word: a write. */
export const WRITE = 0x8000_0000;

const STRATA_NS = "bench-strata-node";
const NAIVE_NS = "bench-naive-node";

type Ops = Uint32Array;
type Json = Record<string, unknown>;
type Latency = { p50: number; p95: number; p99: number; max: number; count: number };

/** The warm-up and measured operations of a `strata bench w1 --stream-out` file. */
export function readStream(path: string): [Ops, Ops] {
  const bytes = readFileSync(path);
  const words = new Uint32Array(bytes.length >> 2);
  for (let i = 0; i < words.length; i++) words[i] = bytes.readUInt32LE(i * 4);
  const [warmup = 0, measured = 0] = words;
  if (bytes.length % 4 !== 0 || words.length < 2 || words.length !== 2 + warmup + measured) {
    throw new Error(`${path}: not a stream written by \`strata bench w1 --stream-out\``);
  }
  return [words.subarray(2, 2 + warmup), words.subarray(2 + warmup)];
}

/** What times the loads: a worker thread (`./timer`), or the event loop's `setTimeout`. */
export type Timing = "thread" | "loop";

/** A version per key; a load sleeps `LOAD_MS` and returns the record (about `VALUE_BYTES` of JSON). */
class Source {
  readonly versions = new Array<number>(N).fill(0);
  loads = 0;
  /** How long each load's wait took, in µs (`load_sleep_us`). */
  sleeps: number[] = [];
  private readonly bodies = new Map<number, string>();

  constructor(private readonly timer: LoadTimer | null) {}

  record(key: number, version: number): Json {
    const record: Json = {
      id: key,
      version,
      name: `product ${key}`,
      price_cents: 100 + (key % 10_000),
      tags: [`category:${key % 100}`],
      body: "",
    };
    let body = this.bodies.get(key);
    if (body === undefined) {
      body = "x".repeat(Math.max(0, VALUE_BYTES - JSON.stringify({ ...record, version: 0 }).length));
      this.bodies.set(key, body);
    }
    record.body = body;
    return record;
  }

  async load(key: number): Promise<Json> {
    this.loads += 1;
    const start = performance.now();
    if (this.timer !== null) await this.timer.sleep(LOAD_MS);
    else {
      // At least `LOAD_MS` of real time: a timer counts from the event loop's cached clock, which
      // a busy loop lets fall behind, so `setTimeout(…, 1)` alone fires after as little as 0.7 ms
      // under load — a shorter load for the busier cache.
      const end = start + LOAD_MS;
      for (let left = LOAD_MS; left > 0; left = end - performance.now()) {
        await new Promise((r) => setTimeout(r, left));
      }
    }
    this.sleeps.push((performance.now() - start) * 1000);
    return this.record(key, this.versions[key]!);
  }
}

interface Subject {
  readonly name: string;
  read(key: number): Promise<number>;
  invalidate(key: number): Promise<void>;
  counts(): { l1Hits: number; l2Hits: number; waited: number };
  close(): Promise<void>;
}

async function strata(url: string, source: Source): Promise<Subject> {
  const cache = await HybridCache.connect(url, STRATA_NS, {
    l1Capacity: L1_ENTRIES,
    defaults: { ttl: L2_TTL_S * 1000, l1Ttl: L1_TTL_MS },
  });
  await cache.clear();
  return {
    name: "strata",
    read: async (key) => Number((await cache.getOrLoad(`product:${key}`, () => source.load(key))).version),
    invalidate: (key) => cache.invalidate(`product:${key}`),
    counts: () => {
      const s = cache.stats();
      return { l1Hits: s.l1Hits, l2Hits: s.l2Hits, waited: s.waited };
    },
    close: () => cache.close(),
  };
}

/** The hand-written cache-aside: no L1, no single-flight, values as plain JSON. */
async function naive(url: string, source: Source): Promise<Subject> {
  // One server, Sentinel's master or a cluster (ioredis's cluster client), as the cache takes it.
  const redis = connect(url, {});
  await ready(redis);
  for (const node of servers(redis)) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", `${NAIVE_NS}:*`, "COUNT", 1000);
      for (const key of keys) await redis.unlink(key); // one by one: a cluster's keys span slots
      cursor = next;
    } while (cursor !== "0");
  }
  let hits = 0;
  return {
    name: "naive",
    async read(key) {
      const name = `${NAIVE_NS}:product:${key}`;
      const cached = await redis.get(name);
      if (cached !== null) {
        hits += 1;
        return Number((JSON.parse(cached) as Json).version);
      }
      const record = await source.load(key);
      await redis.set(name, JSON.stringify(record), "EX", L2_TTL_S);
      return Number(record.version);
    },
    invalidate: async (key) => void (await redis.del(`${NAIVE_NS}:product:${key}`)),
    counts: () => ({ l1Hits: 0, l2Hits: hits, waited: 0 }),
    close: async () => redis.disconnect(),
  };
}

interface Tally {
  readUs: number[];
  writeUs: number[];
  stale: number;
  errors: number;
}

/**
 * Runs `ops` in stream order with `CONCURRENCY` in flight; a read is stale when it returns a
 * version older than the newest one whose invalidation had returned before it began.
 */
async function pass(subject: Subject, source: Source, ops: Ops, progress: (done: number) => void): Promise<Tally> {
  const tally: Tally = { readUs: [], writeUs: [], stale: 0, errors: 0 };
  const invalidated = new Array<number>(N).fill(0);
  let next = 0;
  const worker = async () => {
    while (next < ops.length) {
      const i = next++;
      const word = ops[i]!;
      const key = word & ~WRITE;
      const started = performance.now();
      try {
        if (word & WRITE) {
          const version = ++source.versions[key]!;
          await subject.invalidate(key);
          invalidated[key] = Math.max(invalidated[key]!, version);
          tally.writeUs.push((performance.now() - started) * 1000);
        } else {
          const floor = invalidated[key]!;
          const got = await subject.read(key);
          tally.readUs.push((performance.now() - started) * 1000);
          if (got < floor) tally.stale += 1;
        }
      } catch {
        tally.errors += 1;
      }
      if (i % 10_000 === 0) progress(i);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return tally;
}

function percentiles(us: number[]): Latency {
  if (us.length === 0) return { p50: 0, p95: 0, p99: 0, max: 0, count: 0 };
  const s = Float64Array.from(us).sort();
  const at = (q: number) => Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]!);
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: Math.round(s[s.length - 1]!), count: s.length };
}

/** The servers a client speaks to: a cluster's masters, or the one. */
function servers(client: Client) {
  return client instanceof Cluster ? client.nodes("master") : [client];
}

/** The servers' CPU seconds so far and their command counts (a cluster's masters summed). */
async function serverCost(client: Client): Promise<[number, Map<string, number>]> {
  let cpuS = 0;
  const calls = new Map<string, number>();
  for (const node of servers(client)) {
    const cpu = await node.info("cpu");
    const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
    cpuS += field("used_cpu_user") + field("used_cpu_sys");
    for (const m of (await node.info("commandstats")).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      calls.set(m[1]!, (calls.get(m[1]!) ?? 0) + Number(m[2]));
    }
  }
  return [cpuS, calls];
}

/** The server process's `run_id` (new each time it starts); `undefined` on a cluster. */
async function runId(client: Client): Promise<string | undefined> {
  if (client instanceof Cluster) return undefined;
  return /^run_id:(\w+)/m.exec(await client.info("server"))?.[1];
}

async function measure(
  make: (url: string, source: Source) => Promise<Subject>,
  url: string,
  warmup: Ops,
  measured: Ops,
  quiet: boolean,
  timer: LoadTimer | null,
): Promise<Json> {
  const source = new Source(timer);
  const subject = await make(url, source);
  const probe = connect(url, {});
  await ready(probe);
  const total = warmup.length + measured.length;
  const progress = (base: number) => (done: number) => {
    if (!quiet)
      process.stderr.write(`\r${subject.name.padStart(8)} W1 ${String(base + done).padStart(9)}/${total} ops`);
  };
  let tally: Tally, elapsed: number, cpuS: number, redisS: number;
  let before, after, loads: number, calls: Map<string, number>, callsAfter: Map<string, number>;
  let server: string | undefined;
  try {
    await pass(subject, source, warmup, progress(0));
    [before, loads] = [subject.counts(), source.loads];
    source.sleeps = [];
    let redisCpu: number;
    [redisCpu, calls] = await serverCost(probe);
    const cpu = process.cpuUsage();
    const started = performance.now();
    tally = await pass(subject, source, measured, progress(warmup.length));
    elapsed = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    cpuS = (used.user + used.system) / 1e6;
    let redisAfter: number;
    [redisAfter, callsAfter] = await serverCost(probe);
    redisS = redisAfter - redisCpu;
    after = subject.counts();
    server = await runId(probe);
  } finally {
    if (!quiet) process.stderr.write("\n");
    await subject.close();
    probe.disconnect();
  }
  const ops = measured.length;
  const reads = tally.readUs.length;
  const hits = {
    l1: after.l1Hits - before.l1Hits,
    l2: after.l2Hits - before.l2Hits,
    waited: after.waited - before.waited,
  };
  const byCommand: Record<string, number> = {};
  for (const [name, n] of [...callsAfter].sort()) {
    const was = calls.get(name) ?? 0;
    if (n > was && name !== "info") byCommand[name] = Math.round(((n - was) / ops) * 1e4) / 1e4;
  }
  const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
  return {
    workload: "W1",
    cache: subject.name,
    lang: "node",
    params: {
      n: N,
      value_bytes: VALUE_BYTES,
      load_ms: LOAD_MS,
      load_timer: timer === null ? "loop" : "thread",
      concurrency: CONCURRENCY,
      ops,
      warmup_ops: warmup.length,
      l1_entries: L1_ENTRIES,
      l1_ttl_s: L1_TTL_MS / 1000,
      l2_ttl_s: L2_TTL_S,
    },
    ops,
    reads,
    writes: tally.writeUs.length,
    elapsed_s: round(elapsed, 3),
    ops_per_s: round(ops / elapsed, 1),
    read_us: percentiles(tally.readUs),
    // What the loads' 1 ms waits took under this cache (the timer's lateness, for both alike).
    load_sleep_us: {
      ...percentiles(source.sleeps),
      // Not `Math.min(...sleeps)`: ~100k loads spread into one call's arguments can overflow the stack.
      min: Math.round(source.sleeps.length === 0 ? 0 : source.sleeps.reduce((a, b) => Math.min(a, b))),
      mean: Math.round(source.sleeps.reduce((a, b) => a + b, 0) / Math.max(1, source.sleeps.length)),
    },
    write_us: percentiles(tally.writeUs),
    l1_hits: hits.l1,
    l2_hits: hits.l2,
    waited: hits.waited,
    hit_ratio: {
      l1: round(hits.l1 / Math.max(reads, 1), 4),
      l2: round(hits.l2 / Math.max(reads, 1), 4),
      overall: round((hits.l1 + hits.l2) / Math.max(reads, 1), 4),
    },
    loader_calls: source.loads - loads,
    stale_reads: tally.stale,
    errors: tally.errors,
    cpu: { bench_s: round(cpuS, 3), redis_s: round(redisS, 3), us_per_op: round(((cpuS + redisS) / ops) * 1e6, 2) },
    redis_commands_per_op: {
      total: round(
        Object.values(byCommand).reduce((a, b) => a + b, 0),
        4,
      ),
      by_command: byCommand,
    },
    // Which server process measured it: one, or (on a cluster) not named.
    ...(server === undefined ? {} : { l2_server: { run_id: server } }),
  };
}

/** Strata's figures as ratios to naive's. */
function compare(s: Json, n: Json): Json {
  const ratio = (a: number, b: number) => (b ? Math.round((a / b) * 1000) / 1000 : 0);
  const get = (r: Json, ...path: string[]) => path.reduce<unknown>((v, k) => (v as Json)[k], r) as number;
  return {
    ops: ratio(get(s, "ops_per_s"), get(n, "ops_per_s")),
    read_p99: ratio(get(s, "read_us", "p99"), get(n, "read_us", "p99")),
    cpu: ratio(get(s, "cpu", "us_per_op"), get(n, "cpu", "us_per_op")),
    redis_cpu: ratio(get(s, "cpu", "redis_s"), get(n, "cpu", "redis_s")),
    redis_commands: ratio(get(s, "redis_commands_per_op", "total"), get(n, "redis_commands_per_op", "total")),
  };
}

/**
 * Both caches (or one) on the stream in `path`, against the Redis at `url` — or, with `null`,
 * each cache on a `redis-server` started fresh for it.
 */
export async function run(
  url: string | null,
  path: string,
  cache: "strata" | "naive" | "both",
  quiet: boolean,
  timing: Timing = "thread",
): Promise<Json[]> {
  const [warmup, measured] = readStream(path);
  const makers = { strata, naive };
  const names = cache === "both" ? (["strata", "naive"] as const) : ([cache] as const);
  const reports: Json[] = [];
  const timer = timing === "thread" ? new LoadTimer() : null;
  try {
    for (const name of names) {
      const server = url === null ? await Server.start() : null;
      try {
        reports.push(await measure(makers[name], url ?? server!.url, warmup, measured, quiet, timer));
      } finally {
        server?.stop();
      }
    }
  } finally {
    await timer?.close();
  }
  if (reports.length === 2) reports[0]!.vs_naive = compare(reports[0]!, reports[1]!);
  return reports;
}

function table(reports: Json[]): string {
  const r = (x: Json) => x as Record<string, Record<string, number>> & Json;
  const rows: [string, (x: Json) => string][] = [
    ["ops/s", (x) => Math.round(x.ops_per_s as number).toLocaleString("en")],
    ["read p50 / p99 µs", (x) => `${r(x).read_us!.p50} / ${r(x).read_us!.p99}`],
    ["write p50 µs", (x) => `${r(x).write_us!.p50}`],
    ["hit ratio L1 / overall", (x) => `${r(x).hit_ratio!.l1} / ${r(x).hit_ratio!.overall}`],
    ["waited", (x) => `${x.waited}`],
    ["loader calls", (x) => `${x.loader_calls}`],
    ["load sleep p50 / p95 µs", (x) => `${r(x).load_sleep_us!.p50} / ${r(x).load_sleep_us!.p95}`],
    ["stale reads", (x) => `${x.stale_reads}`],
    ["errors", (x) => `${x.errors}`],
    ["CPU µs/op (bench + redis)", (x) => `${r(x).cpu!.us_per_op}`],
    ["redis CPU s", (x) => `${r(x).cpu!.redis_s}`],
    ["redis commands/op", (x) => `${r(x).redis_commands_per_op!.total}`],
  ];
  const lines = [
    `W1 (Node), ${reports[0]!.ops} operations`,
    "".padEnd(28) + reports.map((x) => String(x.cache).padStart(18)).join(""),
  ];
  for (const [name, cell] of rows) lines.push(name.padEnd(28) + reports.map((x) => cell(x).padStart(18)).join(""));
  return lines.join("\n") + "\n";
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      cache: { type: "string", default: "both" },
      redis: { type: "string" },
      json: { type: "boolean", default: false },
      "load-timer": { type: "string", default: "thread" },
    },
  });
  const cache = values.cache;
  const timing = values["load-timer"];
  if (
    positionals.length !== 1 ||
    (cache !== "strata" && cache !== "naive" && cache !== "both") ||
    (timing !== "thread" && timing !== "loop")
  ) {
    console.error(
      "usage: node dist/bench/w1.js STREAM [--cache strata|naive|both] [--redis URL] [--json] [--load-timer thread|loop]",
    );
    process.exit(2);
  }
  const reports = await run(values.redis ?? null, positionals[0]!, cache, values.json!, timing);
  if (values.json) for (const x of reports) console.log(JSON.stringify(x));
  else {
    process.stdout.write(table(reports));
    if (reports[0]!.vs_naive !== undefined) console.log("strata / naive:", JSON.stringify(reports[0]!.vs_naive));
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
