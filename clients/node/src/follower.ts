/**
 * The log follower (`docs/protocol.md` §4): applies other instances' invalidations to L1.
 *
 * One loop per part of the namespace's log, each on a connection of its own (its reads block
 * for a heartbeat). It starts at the log's tail, applies entries in stream order, and drops the
 * whole L1 (a *resync*) when it cannot know what it missed: a gap in the sequence (entries
 * trimmed while it lagged) or, after a reconnect, a sequence behind its own (a Redis that lost
 * its data). Part 0 also carries the ends of waited-on loads (`#filled`).
 */

import type { RedisOptions } from "ioredis";

import { type Client, connect } from "./connection";
import type { Layout } from "./layout";

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
    await this.loop;
    this.conn?.disconnect(); // one a reconnect made meanwhile
  }

  private connect(): Client {
    // Its reads block for a heartbeat; it reconnects itself (below), so the client must not.
    // Its first call waits for the connection (queued), whatever the cache's own client does.
    const conn = connect(this.url, {
      ...this.options,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: true,
    });
    conn.on("error", () => {}); // a failed read says it, and the loop reconnects
    return conn;
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
      let reply: XReadReply;
      try {
        const streams =
          this.filledStream === null
            ? [this.stream, this.id]
            : [this.stream, this.filledStream, this.id, this.filledId];
        reply = (await this.conn!.xreadBuffer(
          "COUNT",
          BATCH,
          "BLOCK",
          Math.max(1, Math.round(this.heartbeat)),
          "STREAMS",
          ...streams,
        )) as XReadReply;
        backoff = 50;
      } catch (e) {
        if (this.stopped) return;
        console.warn(`strata: invalidation log ${this.stream}: read failed (${(e as Error).message}); reconnecting`);
        await this.reconnect(backoff);
        backoff = Math.min(backoff * 2, 2000);
        continue;
      }
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

function field(fields: Buffer[], name: string): Buffer | null {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i]!.toString() === name) return fields[i + 1]!;
  }
  return null;
}
