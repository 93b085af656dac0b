/**
 * `HybridCache`: an in-process L1 in front of Redis, sharing a namespace with Strata instances in
 * any language (protocol v1, `docs/protocol.md`).
 */

import { createHash, randomBytes } from "node:crypto";

import Redis, { Cluster, type RedisOptions } from "ioredis";

import { Acker, before, Looks } from "./acks";
import { type Client, connect, isCluster, isSentinel, keepConnected, ready, writePerTick } from "./connection";
import { LoadEnds, type Waiter } from "./ends";
import { FillBatch } from "./fill-batch";
import * as envelope from "./envelope";
import { type CodecName, DecodeError, type Times } from "./envelope";
import {
  ConfigError,
  KeyTooLongError,
  LoaderError,
  LoaderTimeoutError,
  NotFoundError,
  UnavailableError,
  ValueTooLargeError,
} from "./errors";
import { Follower, type Invalidation, wire } from "./follower";
import { alive, Fence, L1, type L1Entry } from "./l1";
import { Layout, MAX_LOG_SHARDS } from "./layout";
import { type Arg, Multiplexed } from "./multiplex";
import { Routed } from "./routed";
import { type EntryOptions, l1Until, type Resolved, resolve, timesOf } from "./options";
import { Replicated, type Step } from "./replicas";
import scripts from "./scripts.json";
import { newStats, type Stats } from "./stats";
import { TimeoutSignal, withTimeout } from "./timeout";

/** How a cache connects and behaves (durations in milliseconds). */
export interface CacheOptions {
  /** Entry options of calls that give none. */
  defaults?: EntryOptions;
  /** Entries kept in process (default 10,000; 0: no L1). */
  l1Capacity?: number;
  /** How values are written (every instance reads either; default JSON). */
  codec?: CodecName;
  /** Write bare JSON without the envelope (all instances of the namespace must agree). */
  rawValues?: boolean;
  /** Serve L1 only while the log vouched for it within this long (at least two heartbeats). */
  maxStaleness?: number;
  /** How long a load lease lives (default 10,000). */
  leaseTtl?: number;
  /** The log's approximate length bound (default 10,000 entries). */
  logMaxLen?: number;
  /** Parts the namespace's log is split into (all instances agree; default 1). */
  logShards?: number;
  /** How long a log read blocks: the heartbeat (default 1,000). */
  heartbeat?: number;
  /**
   * A write resolves once every other live instance — in any language — has applied it (each
   * keeps a field of `<namespace>#acks`, refreshed as it applies the log and every heartbeat);
   * one that cannot answer holds writes up for at most `maxStaleness` (one second without
   * it), and writes it held up are counted in `writesUnacknowledged`. Every instance of the
   * namespace enables it (default off).
   */
  acknowledgedWrites?: boolean;
  /**
   * On a cluster, how long a write waits (`WAIT 1`) for a replica of its master to have it, so
   * that a failover keeps it — an invalidation lost with its master would leave the old value in
   * Redis; masters without a replica are not waited on (default 50).
   */
  replicaWait?: number;
  /** Longest key in bytes (default 1,024). */
  maxKeyBytes?: number;
  /** Longest encoded value in bytes (default 16 MiB). */
  maxValueBytes?: number;
  /**
   * Passed to ioredis, over the cache's own: `maxRetriesPerRequest: 1` and the offline queue off
   * on a single server. The cache's reads, fills and invalidations go over a connection of its
   * own to the server ioredis found (on a cluster, one to each master), with its options (TLS,
   * credentials, database, `commandTimeout`), all of one turn of the event loop in one write; the
   * rest goes through ioredis, the turn's commands in one write too, without ioredis's
   * auto-pipelining (whose per-batch objects cost collection pauses). `enableAutoPipelining:
   * true` sends everything through ioredis and has it batch instead.
   */
  redis?: RedisOptions;
}

type Source = "l2" | "loaded" | "stale" | "waited" | "soft";
type Fenced = ["L" | "S" | "B" | "N", Buffer] | null;
type Loader<T> = () => Promise<T>;
/** Turns data read from Redis (JSON or MessagePack values) into `T`. */
export type Decode<T> = (data: unknown) => T;
type Scripts = Record<keyof typeof scripts, string>;
const SCRIPTS: Scripts = scripts;
const SHAS = Object.fromEntries(
  Object.entries(SCRIPTS).map(([name, body]) => [name, createHash("sha1").update(body).digest("hex")]),
) as Scripts;
// While another instance holds a key's load lease: first and longest pause between reads of
// Redis (the end of its load is announced on `#filled`, which wakes the waiter first).
const POLL: [number, number] = [50, 200];
// Fills out at once ahead of their replies; past this a miss waits for its own (back-pressure,
// as the Rust crate's).
const MAX_LANDING = 64;
/** The longest `close` waits for those fills to land (a frozen server must not hold it up). */
const LAND_WAIT = 1000;

/** A loaded value on its way to Redis, fenced by what the load found there. */
interface Fill {
  key: string;
  payload: Buffer;
  times: Times;
  tags: string[];
  fence: NonNullable<Fenced>;
  refreshToken: string;
}

/** This instance's load of a key: its outcome, and how many callers joined it. */
class Flight {
  lead!: Promise<[L1Entry, Source]>;
  followers = 0;
  /**
   * Out of the flights, and lets go of the outcome (the callers that joined hold it already): a
   * finished flight still holding its settled value had V8's young-generation GC promote that
   * value with it — with L1 off, three times the bytes and twice the pauses (BENCHMARKS.md,
   * "young-generation GC").
   */
  end(flights: Map<string, Flight>, key: string): void {
    if (flights.get(key) === this) flights.delete(key);
    this.lead = ENDED;
  }
}

/** A finished flight's outcome: never awaited, as no caller finds a flight once it ended. */
const ENDED: Promise<[L1Entry, Source]> = new Promise(() => {});

/** The version of the protocol (`docs/protocol.md`) this client speaks. */
export const PROTOCOL_VERSION = 1;

const nowMs = (): number => Date.now();
// Lease tokens and stamps, drawn from a pool: one `randomBytes` call per 512 of them rather than
// one each (a call cost ~10 µs, a tenth of a miss's CPU in W1).
const POOL = 512;
let pool = randomBytes(8 * POOL);
let drawn = 0;
const random64 = (): bigint => {
  if (drawn === POOL) {
    pool = randomBytes(8 * POOL);
    drawn = 0;
  }
  return pool.readBigUInt64LE(8 * drawn++);
};

/**
 * The hot path's commands: on the cache's own connection, or through ioredis (a cluster, or
 * auto-pipelining asked for) by their own method, as ioredis's auto-pipelining needs (it drops
 * the name of a command sent through `call`/`callBuffer`), where ioredis's typings lack the form.
 */
interface Raw {
  evalshaBuffer(sha: string, numkeys: number, ...args: Arg[]): Promise<unknown>;
  evalBuffer(script: string, numkeys: number, ...args: Arg[]): Promise<unknown>;
  evalsha(sha: string, numkeys: number, ...args: Arg[]): Promise<unknown>;
  eval(script: string, numkeys: number, ...args: Arg[]): Promise<unknown>;
  setBuffer(key: string, ...args: Arg[]): Promise<Buffer | null>;
  getBuffer(key: string): Promise<Buffer | null>;
}

/** `Raw` on the cache's own connections. */
function overOwn(own: Multiplexed | Routed): Raw {
  return {
    evalshaBuffer: (sha, n, ...args) => own.call(["EVALSHA", sha, n, ...args], false),
    evalBuffer: (script, n, ...args) => own.call(["EVAL", script, n, ...args], false),
    evalsha: (sha, n, ...args) => own.call(["EVALSHA", sha, n, ...args], true),
    eval: (script, n, ...args) => own.call(["EVAL", script, n, ...args], true),
    setBuffer: (key, ...args) => own.call(["SET", key, ...args], false) as Promise<Buffer | null>,
    getBuffer: (key) => own.call(["GET", key], false) as Promise<Buffer | null>,
  };
}

class Missing {}

/**
 * A namespace's cache: an in-process L1 in front of Redis, coherent with every other instance of
 * the namespace — Rust, Python or Node — through its invalidation log.
 *
 * ```ts
 * const cache = await HybridCache.connect("redis://localhost:6379", "catalog");
 * const product = await cache.getOrLoad("product:42", () => db.product(42));
 * ```
 */
export class HybridCache {
  /** This instance's id in the log (it skips its own entries). */
  readonly instanceId = random64();
  /** The entry options of calls that give none. */
  readonly defaults: Resolved;
  private readonly layout: Layout;
  private readonly codec: number;
  private readonly raw: boolean;
  private readonly maxStaleness: number | null;
  private readonly leaseTtl: number;
  private readonly logMaxLen: number;
  private readonly parts: number;
  private readonly maxKeyBytes: number;
  private readonly maxValueBytes: number;
  private readonly l1: L1;
  private readonly fence = new Fence();
  private readonly flights = new Map<string, Flight>();
  /** Fills sent ahead of their reply (a lone caller answered first); see {@link runPendingTasks}. */
  private readonly landing = new Set<Promise<unknown>>();
  /** Through Sentinel: stops connecting again after an end ioredis did not recover from. */
  private stopReconnecting = (): void => {};
  private readonly ends = new LoadEnds();
  private readonly counters: Stats = newStats();
  private readonly caughtUp: number[];
  private followers: Follower[] = [];
  private acker: Acker | null = null;
  private looks: Looks | null = null;
  private readonly ackWithin: number;
  private setNxGet = true;
  /** `SET … IFEQ` (Valkey 8.1, Redis 8.4 on): a miss's fill without the script. */
  private setIfEq = false;
  /** Misses' fills by the small script, sharing their calls on one server. */
  private readonly fills: FillBatch;
  /** On a cluster: its writes, each confirmed by a replica. */
  private readonly replicated: Replicated | null;
  private readonly commands: Raw;
  /** The cache's own connection, or one to each master of a cluster (see `CacheOptions.redis`). */
  private readonly own: Multiplexed | Routed | null;

  private constructor(
    private readonly redis: Client,
    readonly namespace: string,
    o: CacheOptions,
    cluster: boolean,
  ) {
    this.layout = new Layout(namespace, cluster);
    this.defaults = resolve(o.defaults);
    this.codec = envelope.CODECS[o.codec ?? "json"];
    this.raw = o.rawValues ?? false;
    this.maxStaleness = o.maxStaleness ?? null;
    this.leaseTtl = o.leaseTtl ?? 10_000;
    this.logMaxLen = o.logMaxLen ?? 10_000;
    this.parts = o.logShards ?? 1;
    this.maxKeyBytes = o.maxKeyBytes ?? 1024;
    this.maxValueBytes = o.maxValueBytes ?? 16 * 1024 * 1024;
    this.l1 = new L1(o.l1Capacity ?? 10_000);
    this.fills = new FillBatch(
      (keys, args) => this.script("FILL_LEASED", keys, args),
      Math.max(1, this.leaseTtl),
      cluster ? null : this.layout.filled(),
    );
    this.caughtUp = new Array<number>(this.parts).fill(nowMs());
    this.ackWithin = o.maxStaleness ?? 1000;
    this.own =
      o.redis?.enableAutoPipelining === true
        ? null
        : redis instanceof Redis
          ? new Multiplexed(redis)
          : new Routed(redis);
    this.commands = this.own === null ? (redis as unknown as Raw) : overOwn(this.own);
    this.replicated = redis instanceof Cluster ? new Replicated(redis, o.replicaWait ?? 50, SHAS, SCRIPTS) : null;
  }

  /**
   * Connects to Redis at `url` (`redis://`, `rediss://` with TLS, a cluster as
   * `redis+cluster://h1:p1,h2:p2`, the master of a Sentinel-managed group as
   * `redis+sentinel://s1:p1,s2:p2/<master>[/<db>]`, followed across a failover; credentials in
   * the URL) and starts following the namespace's log.
   */
  static async connect(url: string, namespace: string, options: CacheOptions = {}): Promise<HybridCache> {
    const parts = options.logShards ?? 1;
    const heartbeat = options.heartbeat ?? 1000;
    if (!Number.isInteger(parts) || parts < 1 || parts > MAX_LOG_SHARDS) {
      throw new ConfigError(`logShards ${parts}: 1 to ${MAX_LOG_SHARDS}`);
    }
    if (options.maxStaleness !== undefined && options.maxStaleness < 2 * heartbeat) {
      throw new ConfigError(
        `maxStaleness ${options.maxStaleness} ms must leave room for two heartbeats (${heartbeat} ms)`,
      );
    }
    // While a server is unreachable its calls fail at once and go to the loader, as the Rust
    // crate's open breaker sends them: queued until a reconnect, each would wait out ioredis's
    // growing back-off (up to seconds) and serve nothing meanwhile. A cluster keeps its queue,
    // which carries its calls across a slot refresh; its node connections never queue.
    const cluster = isCluster(url);
    const redis = connect(url, { maxRetriesPerRequest: 1, enableOfflineQueue: cluster, ...options.redis });
    // The commands of one turn of the event loop go out in one write (unless ioredis batches them).
    if (options.redis?.enableAutoPipelining !== true) writePerTick(redis);
    redis.on("error", () => {}); // failures reach the calls that meet them
    const cache = new HybridCache(redis, namespace, options, cluster);
    if (isSentinel(url) && redis instanceof Redis) cache.stopReconnecting = keepConnected(redis);
    try {
      await ready(redis);
      const info = await redis.info("server");
      const redisVersion = version(/redis_version:([\d.]+)/.exec(info)?.[1]);
      const valkeyVersion = /valkey_version:([\d.]+)/.exec(info)?.[1];
      cache.setNxGet = atLeast(redisVersion, [7, 0]);
      // Valkey reports itself as Redis 7.2 beside its own version.
      cache.setIfEq =
        valkeyVersion !== undefined ? atLeast(version(valkeyVersion), [8, 1]) : atLeast(redisVersion, [8, 4]);
      const agree: [[string, string], [number, number]] = [
        [cache.layout.logShards(), cache.layout.protocol()],
        [parts, PROTOCOL_VERSION],
      ];
      // What the first instance stores, every later one checks: on a cluster, kept through a failover.
      const [stored, protocol] = (
        cache.replicated === null
          ? await cache.script("AGREE", ...agree)
          : (await cache.replicated.write([cache.replicated.script("AGREE", ...agree)], agree[0][0]))[0]
      ) as [string | null, string | null];
      if (protocol !== null && Number(protocol) !== PROTOCOL_VERSION) {
        throw new ConfigError(
          `namespace "${namespace}" is written with protocol version ${protocol}; this client speaks version ${PROTOCOL_VERSION}: upgrade it to join`,
        );
      }
      if (stored !== null && Number(stored) !== parts) {
        throw new ConfigError(
          `namespace "${namespace}": its log is in ${stored} parts, this instance is configured with ${parts}`,
        );
      }
      const handlers = {
        apply: (inv: Invalidation) => cache.applyLog(inv),
        resync: () => cache.resync(),
        filled: (key: string) => cache.ends.announce(key),
        caughtUp: (part: number) => {
          cache.caughtUp[part] = nowMs();
        },
        applied: (part: number, seq: bigint) => cache.acker?.record(part, seq),
      };
      if (options.acknowledgedWrites) {
        const key = cache.layout.acks();
        cache.acker = new Acker(redis, key, cache.instanceId, parts, heartbeat, () => {
          cache.counters.logErrors += 1;
        });
        cache.looks = new Looks(redis, key);
      }
      for (let part = 0; part < parts; part++) {
        const f = new Follower(
          url,
          cache.layout,
          part,
          parts,
          heartbeat,
          SCRIPTS.LOG_TAIL,
          handlers,
          options.redis ?? {},
        );
        await f.start();
        cache.followers.push(f);
      }
      // Counted by the others before it serves a read: no write may miss it.
      await cache.acker?.join();
    } catch (e) {
      await cache.close();
      throw e;
    }
    return cache;
  }

  /**
   * Lands the fills on their way (for a second at most), stops following the log and closes the
   * connections.
   */
  async close(): Promise<void> {
    if (this.landing.size > 0) await before(this.runPendingTasks(), LAND_WAIT);
    await this.acker?.leave();
    await Promise.all(this.followers.map((f) => f.stop()));
    this.stopReconnecting();
    this.own?.close();
    this.redis.disconnect();
  }

  /** A snapshot of the counters (the Rust crate's names, camelCase). */
  stats(): Stats {
    return { ...this.counters };
  }

  // ------------------------------------------------------------------ reads

  /**
   * The value of `key`: from L1, else Redis, else `loader` — called once across every instance
   * of the namespace for concurrent misses (the key's load lease), and stored only if no write
   * or invalidation overtook it (the fenced fill). Throws {@link NotFoundError} for a cached
   * "not found" (see {@link getOrLoadOptional}).
   */
  async getOrLoad<T>(key: string, loader: Loader<T>, options?: EntryOptions, decode?: Decode<T>): Promise<T> {
    const found = this.fetch(key, loader, options);
    const entry = found instanceof Promise ? await found : found;
    if (entry.negative) throw new NotFoundError(key);
    return this.typed(key, entry, decode);
  }

  /** Like {@link getOrLoad} for a loader that may find nothing: `null` is cached too, for `negativeTtl`. */
  async getOrLoadOptional<T>(
    key: string,
    loader: Loader<T | null>,
    options?: EntryOptions,
    decode?: Decode<T>,
  ): Promise<T | null> {
    const found = this.fetch(key, loader, options);
    const entry = found instanceof Promise ? await found : found;
    return entry.negative ? null : this.typed(key, entry, decode);
  }

  /**
   * The entry's value as `T`: data read from Redis (written by any language) goes through
   * `decode` once — a schema's parse, a class's constructor — and L1 keeps the decoded value;
   * values this process loaded are returned as they are.
   */
  private typed<T>(key: string, entry: L1Entry, decode: Decode<T> | undefined): T {
    if (decode === undefined || entry.fromL2 !== true) return entry.value as T;
    const value = decode(entry.value);
    if (this.l1.peek(key) === entry) this.l1.insert(key, { ...entry, value, fromL2: false });
    return value;
  }

  /** The value of `key` if L1 or Redis holds a fresh one (`null` if not); never loads. */
  async get<T = unknown>(key: string, decode?: Decode<T>): Promise<T | null> {
    this.checkKey(key);
    const now = nowMs();
    const e = this.l1.get(key);
    if (e !== undefined && now < Math.min(e.l1Until, e.times.freshUntil) && !e.failSafe) {
      if (this.trusted(now)) {
        this.counters.l1Hits += 1;
        return e.negative ? null : this.typed(key, e, decode);
      }
      this.counters.l1Bypassed += 1;
    }
    const seen = this.fence.read(key);
    let raw: Buffer | null;
    try {
      raw = await this.commands.getBuffer(this.layout.data(key));
    } catch {
      this.counters.l2Errors += 1;
      return null;
    }
    if (raw === null || envelope.leaseHolder(raw) !== null) return null;
    const found = this.decodeEntry(key, raw, now);
    if (found instanceof Missing || now >= found.times.freshUntil) return null;
    this.counters.l2Hits += 1;
    this.insertUnless(key, found, seen);
    return found.negative ? null : this.typed(key, found, decode);
  }

  /**
   * An L1 hit answered in the caller's own turn (a value, not a promise: its `await` would cost a
   * promise and a turn of the microtask queue), else the miss path's promise.
   */
  private fetch(key: string, loader: Loader<unknown>, given?: EntryOptions): L1Entry | Promise<L1Entry> {
    this.checkKey(key);
    const options = given === undefined ? this.defaults : resolve(given, this.defaults);
    const now = nowMs();
    let stale: L1Entry | null = null;
    const e = this.l1.get(key);
    if (e !== undefined) {
      if (now < e.l1Until) {
        if (!this.trusted(now)) {
          this.counters.l1Bypassed += 1;
        } else if (e.failSafe) {
          this.counters.staleServed += 1;
          return e;
        } else if (now < e.times.freshUntil) {
          this.counters.l1Hits += 1;
          return e;
        } else {
          this.counters.staleServed += 1;
          this.refreshBehind(key, loader, options, e);
          return e;
        }
      }
      if (alive(e, now)) stale = e;
    }
    return this.miss(key, loader, options, stale);
  }

  /** Joins the key's flight here, or leads one. */
  private async miss(key: string, loader: Loader<unknown>, options: Resolved, stale: L1Entry | null): Promise<L1Entry> {
    const joined = this.flights.get(key);
    if (joined !== undefined) {
      joined.followers += 1;
      const [entry, source] = await joined.lead;
      if (source === "stale") this.counters.staleServed += 1;
      else this.counters.waited += 1;
      return entry;
    }
    const flight = new Flight();
    flight.lead = this.loadThrough(key, loader, options, stale, flight);
    this.flights.set(key, flight);
    let entry: L1Entry;
    let source: Source;
    try {
      [entry, source] = await flight.lead;
    } finally {
      flight.end(this.flights, key);
    }
    if (source === "soft") {
      // Served from a soft-expired entry in Redis: refresh it behind, once.
      this.refreshBehind(key, loader, options, entry);
      source = "stale";
    }
    if (source === "l2") this.counters.l2Hits += 1;
    else if (source === "loaded") this.counters.misses += 1;
    else if (source === "stale") this.counters.staleServed += 1;
    else this.counters.waited += 1;
    return entry;
  }

  /** The leader of this instance's flight: Redis, then (in turn across instances) the loader. */
  private async loadThrough(
    key: string,
    loader: Loader<unknown>,
    options: Resolved,
    stale: L1Entry | null,
    flight: Flight,
  ): Promise<[L1Entry, Source]> {
    const seen = this.fence.read(key);
    const token = random64();
    const record = envelope.leaseRecord(token);
    const dataKey = this.layout.data(key);
    let fence: Fenced = null;
    let refreshToken = "";
    const deadline = Date.now() + this.leaseTtl;
    let pause = POLL[0];
    let waiting: Waiter | null = null;
    let mark = false; // the next read marks the holder's lease record waited on
    try {
      for (;;) {
        if (waiting !== null) waiting = this.ends.wait(key, waiting); // before the read: no announcement missed
        let raw: Buffer | null;
        try {
          raw = await this.read(dataKey, record, mark);
        } catch {
          this.counters.l2Errors += 1;
          fence = null; // nothing to fence with: the fill leaves Redis alone
          break;
        }
        const marked: boolean = mark;
        mark = false;
        if (raw === null) {
          fence = ["L", record]; // the key was empty: our lease is in it now
          break;
        }
        const holder = envelope.leaseHolder(raw);
        if (holder === token) {
          fence = ["L", record];
          break;
        }
        if (holder === null) {
          const found = this.decodeEntry(key, raw, nowMs());
          if (found instanceof Missing) {
            fence = ["B", raw]; // unreadable: replaced only if still these bytes
            break;
          }
          const now = nowMs();
          if (now < found.times.freshUntil) {
            this.insertUnless(key, found, seen);
            return [found, waiting !== null ? "waited" : "l2"];
          }
          if (stale === null || stale.times.created < found.times.created) stale = found;
          if (now < found.times.expires && stale === found) {
            this.insertUnless(key, found, seen);
            return [found, "soft"];
          }
          fence = ["S", envelope.stampOf(raw)];
          if (await this.takeRefreshLease(key, token)) {
            refreshToken = token.toString();
            break;
          }
        }
        // Another instance loads the key: wait for its fill, bounded by the lease TTL.
        // The fill announces itself once the holder's record is marked waited on (13 bytes):
        // by another waiter, or by this read. Marking takes a script, so only a record found
        // unmarked gets it; other reads are the plain `SET`.
        const unmarked: boolean = holder !== null && !envelope.leaseWaited(raw) && !marked;
        if (waiting === null) {
          waiting = this.ends.wait(key, null);
          this.counters.leaseWaits += 1;
          mark = unmarked;
          continue; // read again at once: an announcement before joining was missed
        }
        if (unmarked) {
          mark = true;
          continue; // a new holder's record: mark it at once
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          fence = null; // waited the lease's whole life: load, leave Redis alone
          break;
        }
        await Promise.race([waiting.wake, new Promise((r) => setTimeout(r, Math.min(pause, left)))]);
        pause = Math.min(pause * 2, POLL[1]);
      }
    } finally {
      if (waiting !== null) this.ends.leave(key, waiting);
    }
    return this.load(key, loader, options, stale, fence, refreshToken, seen, flight);
  }

  /** The data key's bytes, taking the load lease if it was empty (one round trip). */
  private async read(dataKey: string, record: Buffer, mark: boolean): Promise<Buffer | null> {
    const ttl = Math.max(1, Math.round(this.leaseTtl));
    const raw =
      !mark && this.setNxGet
        ? await this.commands.setBuffer(dataKey, record, "NX", "GET", "PX", ttl)
        : await this.script("READ", [dataKey], [record, ttl, mark ? "1" : ""], true);
    return Buffer.isBuffer(raw) ? raw : null;
  }

  private async takeRefreshLease(key: string, token: bigint): Promise<boolean> {
    try {
      const held = await this.script(
        "ACQUIRE_LEASE",
        [this.layout.lease(key)],
        [token.toString(), Math.max(1, this.leaseTtl)],
      );
      return held === 1;
    } catch {
      this.counters.l2Errors += 1;
      return true; // the fill is fenced by the entry all the same
    }
  }

  /** Calls the loader and fills Redis (fenced) and L1 (unless overtaken). */
  private async load(
    key: string,
    loader: Loader<unknown>,
    options: Resolved,
    stale: L1Entry | null,
    fence: Fenced,
    refreshToken: string,
    seen: string,
    flight: Flight | null = null,
  ): Promise<[L1Entry, Source]> {
    this.counters.loaderCalls += 1;
    const started = Date.now();
    let value: unknown;
    try {
      value = await withTimeout(loader(), options.hardTimeout);
    } catch (err) {
      const timedOut = err instanceof TimeoutSignal;
      if (timedOut) this.counters.loaderTimeouts += 1;
      else this.counters.loaderErrors += 1;
      await this.release(key, fence, refreshToken);
      const now = nowMs();
      if (stale !== null && now < stale.times.staleUntil) {
        // Fail-safe: the stale value, and no new attempt for a throttle period.
        const entry = { ...stale, failSafe: true, l1Until: now + options.failSafeThrottle };
        this.insertUnless(key, entry, seen);
        return [entry, "stale"];
      }
      if (timedOut) throw new LoaderTimeoutError(`loader of ${JSON.stringify(key)} timed out`);
      throw new LoaderError(`loader of ${JSON.stringify(key)} failed: ${(err as Error)?.message ?? err}`, {
        cause: err,
      });
    }
    const loadMs = Date.now() - started;
    const now = nowMs();
    const negative = value === null || value === undefined;
    const times = timesOf(options, now, negative);
    const tags = [...options.tags];
    const stamp = random64();
    const entry: L1Entry = {
      value: negative ? null : value,
      negative,
      times,
      l1Until: l1Until(options, now, times),
      tags,
      stamp,
      failSafe: false,
    };
    const payload = this.encodeEntry(key, entry.value, negative, times, stamp, loadMs, tags, options);
    if (payload === null) {
      await this.release(key, fence, refreshToken);
      return [entry, "loaded"];
    }
    if (fence !== null && this.fence.overtakes(seen, tags)) {
      // A tag of the value (or everything) was dropped here while it loaded.
      this.counters.fillsFenced += 1;
      await this.release(key, fence, refreshToken);
      return [entry, "loaded"];
    }
    if (fence === null) {
      this.insertUnless(key, entry, seen);
      return [entry, "loaded"];
    }
    const alone = flight !== null && flight.followers === 0;
    if (alone && this.landing.size < MAX_LANDING && nowMs() < entry.l1Until && this.fence.read(key) === seen) {
      // A caller alone on the key is answered once L1 holds the value and its fill is sent
      // (the Rust crate's order): reads here find L1, other instances find the lease record and
      // wait for the fill as for the load. A crowd waits for the fill, so that its wake-up does
      // not hold the fill back from the other instances waiting on it (W2's stampede).
      this.l1.insert(key, entry);
      if (this.l1.peek(key) === entry) {
        const landing = this.land({ key, payload, times, tags, fence, refreshToken }, seen, entry).finally(() =>
          this.landing.delete(landing),
        );
        this.landing.add(landing);
        return [entry, "loaded"];
      }
    }
    if (await this.land({ key, payload, times, tags, fence, refreshToken }, seen, null))
      this.insertUnless(key, entry, seen);
    return [entry, "loaded"];
  }

  /**
   * Fills Redis; `false` if the fill was refused or undone. `early`: the copy already put in L1,
   * taken out again if so (only while it is still the one there).
   */
  private async land(fill: Fill, seen: string, early: L1Entry | null): Promise<boolean> {
    const { key, tags } = fill;
    // A caller waiting on the fill has it sent at once, not after the calls on their way.
    let kept = await this.fill(fill, early === null);
    if (kept && this.fence.overtakes(seen, tags)) {
      // A tag dropped here while the fill was on its way: that drop may have read the tag's
      // index before the fill put the key there (docs/protocol.md, "After the
      // fill"). It was recorded first, so it shows now: undo the fill.
      await this.unfill(key);
      kept = false;
    }
    if (!kept) {
      this.counters.fillsFenced += 1;
      if (early !== null && this.l1.peek(key) === early) this.l1.remove(key);
    }
    return kept;
  }

  /** Waits until every fill sent ahead of its reply has landed (tests, shutdown). */
  async runPendingTasks(): Promise<void> {
    while (this.landing.size > 0) await Promise.all([...this.landing]);
  }

  /** Deletes a fill that a tag drop may have missed. */
  private async unfill(key: string): Promise<void> {
    try {
      await this.redis.unlink(this.layout.data(key));
    } catch {
      this.counters.l2Errors += 1;
    }
  }

  private async fill({ key, payload, times, tags, fence, refreshToken }: Fill, atOnce: boolean): Promise<boolean> {
    const px = Math.max(1, (this.raw ? times.expires : times.staleUntil) - times.created);
    const args: Arg[] = [
      payload,
      px,
      fence[0],
      fence[1],
      key,
      refreshToken,
      this.setNxGet ? "1" : "",
      Math.max(1, this.leaseTtl),
    ];
    const [data, lease] = [this.layout.data(key), this.layout.lease(key)];
    // A miss's fill that needs no more than its lease record compared: in one step with the fewest
    // arguments where the server allows it (docs/protocol.md, §5).
    const inPlace = fence[0] === "L" && refreshToken === "" && tags.length === 0;
    try {
      if (inPlace && this.setIfEq) {
        // The server compares (docs/protocol.md, "Without a script"): the record → stored; the
        // record waited on → the script stores and announces it; else overtaken, nothing changed.
        // (Tags go through the script, or on a cluster through their indexes first.)
        const record = fence[1];
        const old = await this.commands.setBuffer(data, payload, "IFEQ", record, "GET", "PX", px);
        if (Buffer.isBuffer(old) && old.equals(record)) return true;
        if (!(Buffer.isBuffer(old) && old.equals(Buffer.concat([record, Buffer.from("W")])))) return false;
      } else if (inPlace && this.setNxGet) {
        // Redis 7: the small script with the fewest arguments ("With the small script"). Over a
        // record waited on it stored, and announced the end itself on one server; on a cluster
        // (`2`) the end is announced here. On one server the fills on their way share their
        // calls (`FillBatch`).
        const outcome = await this.fills.fill({ data, payload, px, record: fence[1] }, atOnce);
        if (outcome === 2) await this.announceFilled(key);
        return outcome !== 0;
      }
      if (!this.layout.cluster) {
        const keys = [data, this.layout.filled(), lease, ...tags.map((t) => this.layout.tag(t))];
        return (await this.script("FILL", keys, args)) === 1;
      }
      // On a cluster the script stays in the value's slot: tags first, each in its own slot;
      // the end of a waited-on load is announced after.
      await this.indexTags(data, tags, px);
      const [stored, waited] = (await this.script("FILL_IN_SLOT", [data, lease], args)) as [number, number];
      if (waited === 1) await this.announceFilled(key);
      return stored === 1;
    } catch {
      this.counters.l2Errors += 1;
      return true; // nothing stored, nothing overtaken: L1 may keep the value
    }
  }

  /** On a cluster: adds `data` to each tag's index, apart from the value's slot. */
  private async indexTags(data: string, tags: readonly string[], px: number): Promise<void> {
    for (const tag of tags) await this.script("INDEX_TAG", [this.layout.tag(tag)], [data, px]);
  }

  /** `key`'s load ended, for reading followers on the stream and for pushed ones on its channel: after a
   * fill on a cluster or by `FILL_LEASED` (`FILL` does it itself). */
  private async announceFilled(key: string): Promise<void> {
    const filled = this.layout.filled();
    await Promise.all([
      this.redis.xadd(filled, "MAXLEN", "~", 1000, "*", "k", key),
      // As the scripts' `redis.pcall`: a user not allowed the channel still announces.
      this.redis.spublish(filled, key).catch(() => 0),
    ]);
  }

  /** Gives back what a failed load held, so others load instead of waiting it out. */
  private async release(key: string, fence: Fenced, refreshToken: string): Promise<void> {
    try {
      if (fence !== null && fence[0] === "L" && !this.layout.cluster) {
        await this.script("RELEASE_RECORD", [this.layout.data(key), this.layout.filled()], [fence[1], key]);
      } else if (fence !== null && fence[0] === "L") {
        const released = (await this.script("RELEASE_RECORD_IN_SLOT", [this.layout.data(key)], [fence[1]])) as [
          number,
          number,
        ];
        if (released[1] === 1) await this.announceFilled(key);
      }
      if (refreshToken) await this.script("RELEASE_LEASE", [this.layout.lease(key)], [refreshToken]);
    } catch {
      this.counters.l2Errors += 1; // the lease expires by itself
    }
  }

  /** One background refresh of a soft-expired entry (stale-while-revalidate). */
  private refreshBehind(key: string, loader: Loader<unknown>, options: Resolved, stale: L1Entry): void {
    if (this.flights.has(key)) return;
    this.counters.backgroundRefreshes += 1;
    const refresh = (async (): Promise<[L1Entry, Source]> => {
      try {
        const seen = this.fence.read(key);
        const token = random64();
        if (!(await this.takeRefreshLease(key, token))) return [stale, "stale"];
        const fence: Fenced = stale.stamp !== null ? ["S", envelope.stampBytes(stale.stamp)] : ["N", Buffer.alloc(0)];
        return await this.load(key, loader, options, stale, fence, token.toString(), seen);
      } catch {
        return [stale, "stale"];
      }
    })();
    const flight = new Flight();
    flight.lead = refresh;
    this.flights.set(key, flight);
    void refresh.finally(() => flight.end(this.flights, key));
  }

  // ------------------------------------------------------------------ writes

  /**
   * Stores `value` in Redis and L1 (write-through) and tells every other instance to drop its
   * copy, in one round trip. Throws {@link UnavailableError} if Redis cannot be reached.
   */
  async set(key: string, value: unknown, options?: EntryOptions): Promise<void> {
    this.checkKey(key);
    const o = options === undefined ? this.defaults : resolve(options, this.defaults);
    const now = nowMs();
    const times = timesOf(o, now, false);
    const tags = [...o.tags];
    const stamp = random64();
    const payload = this.encodeEntry(key, value, false, times, stamp, 0, tags, o);
    if (payload === null)
      throw new ValueTooLargeError(`the value of ${JSON.stringify(key)} is over ${this.maxValueBytes} bytes`);
    const part = this.layout.partOf(key, this.parts);
    const px = Math.max(1, (this.raw ? times.expires : times.staleUntil) - now);
    this.overtake(key);
    const data = this.layout.data(key);
    let seq: unknown;
    try {
      if (!this.layout.cluster) {
        const keys = [
          data,
          this.layout.log(part, this.parts),
          this.layout.logSeq(part, this.parts),
          ...tags.map((t) => this.layout.tag(t)),
        ];
        seq = await this.script("REPLACE", keys, [payload, px, this.logMaxLen, this.entry("key", key)]);
      } else {
        // The log lives in another slot: the value first, then its entry.
        await this.indexTags(data, tags, px);
        seq = await this.logged([["SET", data, payload, "PX", px]], data, part, "key", key);
      }
    } catch (err) {
      this.l1.remove(key);
      throw new UnavailableError(`set ${JSON.stringify(key)}: ${(err as Error).message}`, { cause: err });
    }
    // Marked again now that Redis has the value: a read here that took the old one from Redis
    // in the meantime must not put it in L1 over this one.
    this.overtake(key);
    this.counters.invalidationsSent += 1;
    this.l1.insert(key, {
      value,
      negative: false,
      times,
      l1Until: l1Until(o, now, times),
      tags,
      stamp,
      failSafe: false,
    });
    await this.acknowledged(part, seq);
  }

  /**
   * Drops `key` from Redis and from every instance's L1; a load in flight for it (here or
   * anywhere) will not store its value. Resolves once Redis has the change.
   */
  async invalidate(key: string): Promise<void> {
    this.checkKey(key);
    const part = this.layout.partOf(key, this.parts);
    const data = this.layout.data(key);
    let seq: unknown;
    try {
      if (!this.layout.cluster) {
        seq = await this.script(
          "INVALIDATE",
          [data, this.layout.log(part, this.parts), this.layout.logSeq(part, this.parts)],
          [this.logMaxLen, this.entry("key", key)],
        );
      } else {
        seq = await this.logged([["UNLINK", data]], data, part, "key", key);
      }
    } catch (err) {
      this.drop(key);
      throw new UnavailableError(`invalidate ${JSON.stringify(key)}: ${(err as Error).message}`, { cause: err });
    }
    // Dropped once Redis has the change, as the Rust crate does: dropped before, a read here in
    // between would take the old value from Redis and put it back in L1.
    this.drop(key);
    this.counters.invalidationsSent += 1;
    await this.acknowledged(part, seq);
  }

  /** Drops every entry tagged `tag`, in Redis and in every instance's L1. */
  async invalidateTag(tag: string): Promise<void> {
    // Marked before the indexes are deleted, so a load of this instance that began earlier
    // stores nothing (docs/protocol.md §6); L1 cleared after, of what reads put there
    // meanwhile too.
    this.overtakeTag(tag);
    const part = this.layout.partOf(tag, this.parts);
    let seq: unknown;
    try {
      const index = this.layout.tag(tag);
      if (!this.layout.cluster) {
        await this.script("DELETE_TAG", [index], []);
      } else {
        // Each member in its own slot, confirmed by a replica of its master; then only those
        // leave the index (members added meanwhile stay).
        const members = await this.redis.smembers(index);
        await this.unlinkReplicated(members);
        if (members.length > 0) await this.redis.srem(index, ...members);
      }
      this.dropTag(tag);
      seq = await this.append(part, "tag", tag);
    } catch (err) {
      throw new UnavailableError(`invalidate tag ${JSON.stringify(tag)}: ${(err as Error).message}`, { cause: err });
    }
    this.counters.invalidationsSent += 1;
    await this.acknowledged(part, seq);
  }

  /** Drops every entry of the namespace, in Redis and in every instance's L1. */
  async clear(): Promise<void> {
    let seq: unknown;
    try {
      const nodes = this.redis instanceof Cluster ? this.redis.nodes("master") : [this.redis];
      for (const node of nodes) {
        for (const pattern of [`${this.namespace}:*`, `${this.namespace}#tag:*`]) {
          let cursor = "0";
          do {
            const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
            if (this.layout.cluster) {
              // One key at a time: a node's keys span many slots.
              for (const k of keys) await node.unlink(k);
            } else if (keys.length > 0) {
              await node.unlink(...keys);
            }
            cursor = next;
          } while (cursor !== "0");
        }
      }
      this.dropAll(); // once Redis has the change, as an invalidation is
      seq = await this.append(0, "clear", null);
    } catch (err) {
      this.dropAll();
      throw new UnavailableError(`clear ${this.namespace}: ${(err as Error).message}`, { cause: err });
    }
    this.counters.invalidationsSent += 1;
    await this.acknowledged(0, seq);
  }

  /**
   * With acknowledged writes: resolves once every other live instance applied entry `seq` of
   * `part` (or the wait's bound passed: counted).
   */
  private async acknowledged(part: number, seq: unknown): Promise<void> {
    if (this.looks === null || (typeof seq !== "number" && typeof seq !== "string")) return;
    let done = false;
    try {
      done = await this.looks.wait(this.instanceId, part, BigInt(seq), this.ackWithin);
    } catch {
      done = false;
    }
    if (!done) this.counters.writesUnacknowledged += 1;
  }

  /** Appends an entry to `part` of the log; resolves to its sequence number. */
  private async append(part: number, op: Invalidation["op"], arg: string | null): Promise<unknown> {
    return await this.logged([], this.layout.log(part, this.parts), part, op, arg);
  }

  /**
   * `steps` (writes to `key`'s slot), then their entry in `part` of the log; resolves to the
   * entry's sequence number. On a cluster each is confirmed by a replica ({@link Replicated}):
   * in one round trip and one `WAIT` where the log is served by the same nodes, else the steps
   * and their `WAIT` first, then the entry and its own — never the entry before the steps are
   * done.
   */
  private async logged(
    steps: Step[],
    key: string,
    part: number,
    op: Invalidation["op"],
    arg: string | null,
  ): Promise<unknown> {
    const keys = [this.layout.log(part, this.parts), this.layout.logSeq(part, this.parts)];
    const args = [this.logMaxLen, this.entry(op, arg)];
    const r = this.replicated;
    if (r === null) return await this.script("APPEND_LOG", keys, args);
    let first = steps;
    if (steps.length > 0 && r.group(key) !== r.group(keys[0]!)) {
      await r.write(steps, key);
      first = [];
    }
    return (await r.write([...first, r.script("APPEND_LOG", keys, args)], keys[0]!)).at(-1);
  }

  /** On a cluster: unlinks `keys`, one pipeline and one `WAIT` per master. */
  private async unlinkReplicated(keys: string[]): Promise<void> {
    const r = this.replicated!;
    const byGroup = new Map<string, string[]>();
    for (const k of keys) {
      const group = r.group(k);
      const ks = byGroup.get(group);
      if (ks === undefined) byGroup.set(group, [k]);
      else ks.push(k);
    }
    await Promise.all(
      [...byGroup.values()].map((ks) =>
        r.write(
          ks.map((k): Step => ["UNLINK", k]),
          ks[0]!,
        ),
      ),
    );
  }

  /** Runs a protocol script by its SHA1, sending its text only when the server lacks it. */
  private async script(name: keyof Scripts, keys: string[], args: Arg[], buffer = false): Promise<unknown> {
    const c = this.commands;
    const n = keys.length;
    try {
      const sha = SHAS[name];
      return await (buffer ? c.evalshaBuffer(sha, n, ...keys, ...args) : c.evalsha(sha, n, ...keys, ...args));
    } catch (err) {
      if (!String((err as Error).message).startsWith("NOSCRIPT")) throw err;
      const body = SCRIPTS[name];
      return await (buffer ? c.evalBuffer(body, n, ...keys, ...args) : c.eval(body, n, ...keys, ...args));
    }
  }

  private entry(op: Invalidation["op"], arg: string | null): string {
    return wire({ origin: this.instanceId, op, arg });
  }

  // ------------------------------------------------------------------ L1 and the log

  private trusted(now: number): boolean {
    return this.maxStaleness === null || now - Math.min(...this.caughtUp) <= this.maxStaleness;
  }

  /** Puts `entry` in L1 unless an invalidation of the key was applied since `seen`. */
  private insertUnless(key: string, entry: L1Entry, seen: string): void {
    if (this.fence.read(key) !== seen) {
      this.counters.fillsFenced += 1;
      return;
    }
    this.l1.insert(key, entry);
  }

  /** Loads in flight for `key` neither fill L1 nor take in new callers. */
  private overtake(key: string): void {
    this.fence.bump(key);
    this.flights.delete(key);
    // The change deleted or replaced the key in Redis first, and with it any lease record a
    // flight here waits on: that wait is over (the Rust crate's rule).
    this.ends.announce(key);
  }

  private drop(key: string): void {
    this.overtake(key);
    this.l1.remove(key);
  }

  /** Loads in flight check their tags against the drop and take in no new callers. */
  private overtakeTag(tag: string): void {
    this.fence.bumpAll(tag);
    this.flights.clear();
    this.ends.announceAll();
  }

  private dropTag(tag: string): void {
    this.overtakeTag(tag);
    this.l1.removeTag(tag);
  }

  private dropAll(): void {
    this.fence.bumpAll();
    this.flights.clear();
    this.ends.announceAll();
    this.l1.clear();
  }

  private applyLog(inv: Invalidation): void {
    if (inv.origin === this.instanceId) return;
    this.counters.invalidationsReceived += 1;
    if (inv.op === "key" && inv.arg !== null) this.drop(inv.arg);
    else if (inv.op === "tag" && inv.arg !== null) this.dropTag(inv.arg);
    else this.dropAll();
  }

  private resync(): void {
    this.counters.resyncs += 1;
    this.counters.invalidationsReceived += 1;
    this.dropAll();
  }

  // ------------------------------------------------------------------ bytes

  private checkKey(key: string): void {
    const n = Buffer.byteLength(key);
    if (n > this.maxKeyBytes) throw new KeyTooLongError(`key of ${n} bytes, over ${this.maxKeyBytes}`);
  }

  /** The bytes to store, or `null` when over the size limit (counted, not cached). */
  private encodeEntry(
    key: string,
    value: unknown,
    negative: boolean,
    times: Times,
    stamp: bigint,
    loadMs: number,
    tags: string[],
    o: Resolved,
  ): Buffer | null {
    const payload = this.raw
      ? envelope.encodeValue(negative ? null : value, envelope.JSON_CODEC)
      : envelope.encode(value, {
          negative,
          times,
          stamp,
          loadMs,
          tags,
          codec: o.codec ? envelope.CODECS[o.codec] : this.codec,
        });
    if (payload.length > this.maxValueBytes) {
      this.counters.oversized += 1;
      console.warn(`strata: value of ${key} is ${payload.length} bytes: not cached`);
      return null;
    }
    return payload;
  }

  /** The entry in `raw`; unreadable bytes are counted and read as a miss. */
  private decodeEntry(key: string, raw: Buffer, now: number): L1Entry | Missing {
    try {
      if (this.raw && !envelope.isEnvelope(raw)) {
        const value = envelope.decodeValue(raw, envelope.JSON_CODEC);
        const times = timesOf(this.defaults, now, false);
        return {
          value,
          negative: value === null,
          times,
          l1Until: l1Until(this.defaults, now, times),
          tags: [],
          stamp: null,
          failSafe: false,
          fromL2: true,
        };
      }
      const env = envelope.decode(raw);
      return {
        value: env.value,
        negative: env.negative,
        times: env.times,
        l1Until: l1Until(this.defaults, now, env.times),
        tags: env.tags,
        stamp: env.stamp,
        failSafe: false,
        fromL2: true,
      };
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      this.counters.decodeErrors += 1;
      console.warn(`strata: undecodable L2 entry ${key} treated as a miss: ${err.message}`);
      return new Missing();
    }
  }
}

/** `major.minor` of a version in `INFO server`; `[0, 0]` if unreadable. */
function version(text: string | undefined): [number, number] {
  const [major = NaN, minor = 0] = (text ?? "").split(".").map(Number);
  return Number.isInteger(major) ? [major, Number.isInteger(minor) ? minor : 0] : [0, 0];
}

function atLeast([major, minor]: [number, number], [wantMajor, wantMinor]: [number, number]): boolean {
  return major > wantMajor || (major === wantMajor && minor >= wantMinor);
}
