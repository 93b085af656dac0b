/**
 * The log follower (`docs/protocol.md` §4): applies other instances' invalidations to L1.
 *
 * One loop per part of the namespace's log, each on connections of its own. It starts at the
 * log's tail, applies entries in stream order, and drops the whole L1 (a *resync*) when it cannot
 * know what it missed: a gap in the sequence (entries trimmed while it lagged) or, after a
 * reconnect, a sequence behind its own (a Redis that lost its data). Part 0 also carries the ends
 * of waited-on loads (`#filled`).
 *
 * Entries come *pushed* where the server allows it (`SSUBSCRIBE` to the stream's channel, on which
 * the append script publishes every entry): the stream is read only to catch up — after
 * (re)subscribing, on a gap in the pushed sequence, and when the heartbeat's look at the stream's
 * newest entry finds it ahead (a writer that pushes nothing). A blocking `XREAD` per entry and
 * follower cost the server about twice a push (BENCHMARKS.md, "Invalidations pushed"). On a
 * cluster the subscription goes to the master of the log's slot. A server that refuses sharded
 * pub/sub (before Redis 7.0, or a user without the channel) is followed by reading: a blocking
 * `XREAD`, sent again after each answer.
 */

import type { Cluster, RedisOptions } from "ioredis";

import { type Client, connect, isCluster } from "./connection";
import type { Layout } from "./layout";
import { masterOf } from "./routed";
import { withTimeout } from "./timeout";

const BATCH = 512;

/** A log entry's `d`: who wrote it, and what it drops. */
export interface Invalidation {
  origin: bigint;
  op: "key" | "tag" | "clear";
  arg: string | null;
}

/** As the log carries it: `{"origin":"<16 hex>","op":…,"arg":…}`. */
export function wire(inv: Invalidation): string {
  return JSON.stringify({ origin: inv.origin.toString(16).padStart(16, "0"), op: inv.op, arg: inv.arg });
}

/** The entry in `data`; `null` if it is not one (never applied). */
export function parseInvalidation(data: Buffer): Invalidation | null {
  let d: unknown;
  try {
    d = JSON.parse(data.toString("utf8"));
  } catch {
    return null;
  }
  if (typeof d !== "object" || d === null || Array.isArray(d)) return null;
  const o = d as Record<string, unknown>;
  if (Object.keys(o).some((k) => !["origin", "op", "arg"].includes(k))) return null;
  if (typeof o.origin !== "string" || !/^[0-9a-fA-F]{16}$/.test(o.origin)) return null;
  const origin = BigInt(`0x${o.origin}`);
  if ((o.op === "key" || o.op === "tag") && typeof o.arg === "string") return { origin, op: o.op, arg: o.arg };
  if (o.op === "clear" && (o.arg === null || o.arg === undefined)) return { origin, op: "clear", arg: null };
  return null;
}

/** What the follower does to the cache. */
export interface Handlers {
  apply(inv: Invalidation): void;
  resync(): void;
  filled(key: string): void;
  caughtUp(part: number): void;
  /** The part was applied up to this sequence number (acknowledged writes report it). */
  applied(part: number, seq: bigint): void;
}

type XReadReply = [Buffer, [Buffer, Buffer[]][]][] | null;

/** Follows one part of a namespace's log until {@link stop}. */
export class Follower {
  private readonly stream: string;
  private readonly seqKey: string;
  private readonly filledStream: string | null;
  private id = "0-0";
  private seq = 0n;
  private filledId = "0-0";
  private conn: Client | null = null;
  private stopped = false;
  private loop: Promise<void> | null = null;
  /** The subscription, while entries come pushed; `pushed` false once the server refused. */
  private sub: Client | null = null;
  private pushed: boolean | null = null;
  /** Pushes not yet taken: `[channel, message]`, in the order they came. */
  private pushes: [Buffer, Buffer][] = [];
  private lost = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly url: string,
    layout: Layout,
    private readonly part: number,
    parts: number,
    private readonly heartbeat: number,
    private readonly logTail: string,
    private readonly on: Handlers,
    private readonly options: RedisOptions,
  ) {
    this.stream = layout.log(part, parts);
    this.seqKey = layout.logSeq(part, parts);
    this.filledStream = part === 0 ? layout.filled() : null;
  }

  /** Connects and reads where the log stands now; follows from there. */
  async start(): Promise<void> {
    this.conn = this.connect();
    await this.tail(this.conn);
    this.on.caughtUp(this.part);
    this.on.applied(this.part, this.seq);
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.conn?.disconnect();
    this.sub?.disconnect();
    this.wake?.();
    await this.loop;
    this.conn?.disconnect(); // one a reconnect made meanwhile
    this.sub?.disconnect();
  }

  private connect(): Client {
    return quiet(connect(this.url, { ...this.options, ...OWN_RECONNECTS }));
  }

  private async tail(conn: Client): Promise<void> {
    const [newest, seq] = (await conn.eval(this.logTail, 2, this.stream, this.seqKey)) as [
      [string, string[]][],
      string | null,
    ];
    this.id = newest[0]?.[0] ?? "0-0";
    this.seq = seq === null ? 0n : BigInt(seq);
    if (this.filledStream !== null) {
      const last = await conn.xrevrange(this.filledStream, "+", "-", "COUNT", 1);
      this.filledId = last[0]?.[0] ?? "0-0";
    }
  }

  private async run(): Promise<void> {
    let backoff = 50;
    while (!this.stopped) {
      try {
        if (this.pushed !== false && (await this.subscribe())) {
          await this.followPushed(() => (backoff = 50));
        } else {
          await this.read();
          backoff = 50;
        }
      } catch (e) {
        this.unsubscribe();
        if (this.stopped) return;
        console.warn(`strata: invalidation log ${this.stream}: read failed (${(e as Error).message}); reconnecting`);
        await this.reconnect(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  /** One blocking read of the log (and `#filled`) after our position, up to a heartbeat long. */
  private async read(): Promise<void> {
    const streams =
      this.filledStream === null ? [this.stream, this.id] : [this.stream, this.filledStream, this.id, this.filledId];
    const reply = (await this.conn!.xreadBuffer(
      "COUNT",
      BATCH,
      "BLOCK",
      Math.max(1, Math.round(this.heartbeat)),
      "STREAMS",
      ...streams,
    )) as XReadReply;
    let read = 0;
    for (const [name, entries] of reply ?? []) {
      const isLog = name.toString() === this.stream;
      for (const [id, fields] of entries) {
        if (isLog) {
          read += 1;
          this.apply(id.toString(), fields);
        } else {
          this.filledId = id.toString();
          const key = field(fields, "k");
          if (key !== null) this.on.filled(key.toString("utf8"));
        }
      }
    }
    if (read > 0) this.on.applied(this.part, this.seq);
    if (read < BATCH) this.on.caughtUp(this.part);
  }

  // ------------------------------------------------------------------ pushed

  /**
   * A connection subscribed to the part's channel (and part 0's `#filled`); false where the
   * server refuses (entries are read instead).
   */
  private async subscribe(): Promise<boolean> {
    const sub = isCluster(this.url) ? this.connectMaster() : this.connect();
    this.lost = false;
    // (A subscription given up closes later: it no longer speaks for the follower.)
    sub.on("smessageBuffer", (channel: Buffer, message: Buffer) => {
      if (this.sub !== sub) return;
      this.pushes.push([channel, message]);
      this.wake?.();
    });
    // Closed, or an error: a server that ends the subscription itself (on a cluster, the slot
    // moved) leaves ioredis a reply it did not ask for, which it reports as an error.
    const lost = (): void => {
      if (this.sub !== sub) return;
      this.lost = true;
      this.wake?.();
    };
    sub.on("close", lost);
    sub.on("error", lost);
    this.sub = sub;
    const channels = this.filledStream === null ? [this.stream] : [this.stream, this.filledStream];
    try {
      await this.bounded(sub.ssubscribe(...channels));
    } catch (e) {
      if ((e as Error).name !== "ReplyError") throw e;
      this.unsubscribe();
      console.warn(
        `strata: invalidation log ${this.stream}: the server pushes no entries (${(e as Error).message}; sharded ` +
          "pub/sub needs Redis 7.0 and the channel in the user's ACL); reading the stream instead",
      );
      this.pushed = false;
      return false;
    }
    this.pushed = true;
    return true;
  }

  /** On a cluster: a client of the log's master, where its channel lives, as the follower's own. */
  private connectMaster(): Client {
    const master = masterOf(this.conn as Cluster, this.stream);
    if (master === undefined) throw new Error(`no master serves ${this.stream}'s slot`);
    return quiet(master.duplicate(OWN_RECONNECTS));
  }

  private unsubscribe(): void {
    this.sub?.disconnect();
    this.sub = null;
    this.pushes = [];
  }

  /** Reads what was appended since the position, then takes pushes until an error; every
   * heartbeat it looks at the stream's newest entry. */
  private async followPushed(following: () => void): Promise<void> {
    await this.catchUp();
    this.on.applied(this.part, this.seq);
    this.on.caughtUp(this.part);
    following();
    let beat = Date.now() + this.heartbeat;
    while (!this.stopped) {
      if (this.pushes.length === 0 && !this.lost) await this.next(beat - Date.now());
      if (this.lost) throw new Error("the subscription's connection closed");
      if (this.pushes.length > 0) {
        const seq = this.seq;
        await this.takePushes();
        this.report(seq);
      }
      if (Date.now() >= beat) {
        await this.beat();
        beat = Date.now() + this.heartbeat;
      }
    }
  }

  /** Until a push comes, the subscription is lost, or `ms` pass. */
  private next(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.wake = done;
    });
  }

  /**
   * The heartbeat: the stream's newest entry, then a `PING` on the subscription — whose answer
   * comes after every push sent before the look — and the stream read if the newest entry is
   * still past the position.
   */
  private async beat(): Promise<void> {
    const newest = await this.bounded(this.conn!.xrevrange(this.stream, "+", "-", "COUNT", 1));
    const seq = this.seq;
    await this.bounded(this.sub!.ping());
    await this.takePushes();
    if (newest[0] !== undefined && newer(newest[0][0], this.id)) await this.catchUp();
    this.report(seq);
  }

  /** Tells the cache the new position, if it moved past `since`, and that this part is caught up. */
  private report(since: bigint): void {
    if (this.seq !== since) this.on.applied(this.part, this.seq);
    this.on.caughtUp(this.part);
  }

  private async takePushes(): Promise<void> {
    for (let push = this.pushes.shift(); push !== undefined; push = this.pushes.shift()) {
      await this.takePush(push[0], push[1]);
    }
  }

  /** A log entry pushed as `<s>:<id>:<entry>` (applied in order; a gap in the sequence is read
   * from the stream), or a waited-on load's end. */
  private async takePush(channel: Buffer, message: Buffer): Promise<void> {
    if (channel.toString() !== this.stream) {
      this.on.filled(message.toString("utf8"));
      return;
    }
    const first = message.indexOf(COLON);
    const second = first < 0 ? -1 : message.indexOf(COLON, first + 1);
    const seq = message.subarray(0, Math.max(first, 0)).toString();
    if (second < 0 || !/^[0-9]+$/.test(seq)) {
      console.warn(`strata: invalidation log ${this.stream}: ignoring a foreign message`);
      return;
    }
    const id = message.subarray(first + 1, second).toString();
    if (!newer(id, this.id)) return; // read already, while catching up
    if (BigInt(seq) !== this.seq + 1n) {
      // Entries were not pushed (a writer that pushes nothing), or the log started over: the
      // stream tells which, as it tells a reading follower.
      await this.catchUp();
      return;
    }
    this.apply(id, [S, message.subarray(0, first), D, message.subarray(second + 1)]);
  }

  /** Applies what the stream holds after the position, in batches. */
  private async catchUp(): Promise<void> {
    for (;;) {
      const entries = await this.bounded(this.conn!.xrangeBuffer(this.stream, `(${this.id}`, "+", "COUNT", BATCH));
      for (const [id, fields] of entries) this.apply(id.toString(), fields);
      if (entries.length < BATCH) return;
    }
  }

  /** `work`, bounded by the connection's timeout (5 s by default): a frozen server must not
   * hold the follower. */
  private bounded<T>(work: Promise<T>): Promise<T> {
    return withTimeout(work, this.options.commandTimeout ?? 5000);
  }

  private apply(id: string, fields: Buffer[]): void {
    this.id = id;
    const seqRaw = field(fields, "s");
    const data = field(fields, "d");
    if (seqRaw === null || data === null) return; // foreign: skipped
    let seq: bigint;
    try {
      seq = BigInt(seqRaw.toString());
    } catch {
      return;
    }
    // Entries we never read were trimmed away: whatever they dropped may be in L1.
    if (seq !== this.seq + 1n) this.on.resync();
    this.seq = seq;
    const inv = parseInvalidation(data);
    if (inv !== null) this.on.apply(inv);
  }

  /** A new connection; resumes after our position unless the log lost entries. */
  private async reconnect(pause: number): Promise<void> {
    while (!this.stopped) {
      await new Promise((r) => setTimeout(r, pause));
      if (this.stopped) return;
      this.conn?.disconnect();
      this.conn = this.connect();
      try {
        const raw = await this.conn.get(this.seqKey);
        const exists = await this.conn.exists(this.stream);
        const seq = raw === null ? 0n : BigInt(raw);
        if (seq < this.seq || (this.seq > 0n && exists === 0)) {
          // Redis lost the log (a restart without persistence, a failover to a replica that
          // lagged): what we had not read is gone with it.
          console.warn(`strata: invalidation log ${this.stream} was lost: dropping L1`);
          this.on.resync();
          await this.tail(this.conn);
          this.on.applied(this.part, this.seq);
        }
        return;
      } catch {
        pause = Math.min(pause * 2, 2000);
      }
    }
  }
}

/**
 * A follower's connections: its reads block for a heartbeat and it reconnects itself (`run`), so
 * the client must not; a first command waits for the connection (queued), whatever the cache's
 * own client does.
 */
const OWN_RECONNECTS = { maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: true };

/** `client`, its errors left to the commands that fail (the loop reconnects). */
function quiet(client: Client): Client {
  client.on("error", () => {});
  return client;
}

const COLON = 0x3a;
const S = Buffer.from("s");
const D = Buffer.from("d");

/** Whether stream entry id `a` (`<ms>-<n>`) comes after `b`; a foreign id reads as `0-0`. */
function newer(a: string, b: string): boolean {
  const parse = (id: string): [bigint, bigint] => {
    const m = /^([0-9]+)-([0-9]+)$/.exec(id);
    return m === null ? [0n, 0n] : [BigInt(m[1]!), BigInt(m[2]!)];
  };
  const [x, y] = [parse(a), parse(b)];
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
}

function field(fields: Buffer[], name: string): Buffer | null {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i]!.toString() === name) return fields[i + 1]!;
  }
  return null;
}
