/**
 * Misses' fills where the server cannot compare in `SET` (Redis 7), sent together when they meet
 * on their way: one `FILL_LEASED` call stores several (docs/protocol.md §5, "Several fills at
 * once"). Entering a script is about a third of what a lone fill costs the server, so fills that
 * share a call cost it ~20–25 % less each (BENCHMARKS.md, "Fills that meet on their way").
 *
 * The rule is the Rust crate's: a fill that finds fewer than {@link LEADERS} calls of fills on
 * their way goes at once; fills that come meanwhile wait, and go together as the next call when
 * one is answered — or at once, when {@link MOST_FILLS} of them or {@link MOST_BYTES} of values
 * wait. No timer: a fill waits at most for an answer already on its way. Why not one call at a
 * time: a fill held back keeps its lease record in Redis longer, where other instances' reads
 * find it and wait; two calls on their way keep that small. And a fill its callers wait on (a
 * crowd on one key is answered once its fill has landed) goes at once, alone: held back, it would
 * hold them back too.
 *
 * On one server each call carries the namespace's `#filled` stream after its data keys, and the
 * script announces the end of a load another instance waited on in the same step — a hop sooner
 * than its caller could, which would wait for the answer first. On a cluster each fill goes alone
 * (one call's keys would have to share a slot, and the stream lives in another): the same call,
 * one key, and its caller announces.
 */

/** What a fill came to: `0` overtaken (nothing of it stays), `1` stored, `2` stored over a lease
 * record another instance waited on, its end still to be announced by the caller (a cluster). */
export type Outcome = 0 | 1 | 2;

/** A miss's fill fenced by its lease record alone. */
export interface LeasedFill {
  /** The data key. */
  data: string;
  payload: Buffer;
  /** The value's TTL, ms. */
  px: number;
  /** The lease record the load took. */
  record: Buffer;
}

/** Sends one `FILL_LEASED` call (the data keys and on one server the filled stream, then each
 * key's value, TTL and record, then the lease TTL). */
export type SendFills = (keys: string[], args: (Buffer | number)[]) => Promise<unknown>;

/** Calls of fills on their way before the next fills wait for one of them. */
export const LEADERS = 2;
/** The most fills a call carries: its answer holds two bits a fill, exact up to 52 bits. */
export const MOST_FILLS = 26;
/** Waiting values past this many bytes go at once. */
export const MOST_BYTES = 128 * 1024;

interface Waiting {
  fill: LeasedFill;
  resolve: (outcome: Outcome) => void;
  reject: (err: unknown) => void;
}

/** One cache's fills, taking turns on one server; alone on a cluster. */
export class FillBatch {
  private onTheirWay = 0;
  private waiting: Waiting[] = [];
  private waitingBytes = 0;

  /** `leaseTtl`: the lease TTL (ms) sent with every call (a cache has one); `filled`: on one
   * server the namespace's filled stream, where fills share calls and the script announces; `null`
   * on a cluster, where each goes alone. */
  constructor(
    private readonly send: SendFills,
    private readonly leaseTtl: number,
    private readonly filled: string | null,
  ) {}

  /**
   * Stores `fill` if its data key still holds its lease record; rejects as the call did. `atOnce`:
   * sent now, alone, whatever is on its way (callers wait on it: a crowd on a hot key).
   */
  fill(fill: LeasedFill, atOnce = false): Promise<Outcome> {
    return new Promise<Outcome>((resolve, reject) => {
      const waiting = { fill, resolve, reject };
      if (atOnce || this.filled === null) {
        this.go([waiting]);
        return;
      }
      this.waiting.push(waiting);
      this.waitingBytes += fill.payload.length;
      const full = this.waiting.length >= MOST_FILLS || this.waitingBytes >= MOST_BYTES;
      if (this.onTheirWay < LEADERS || full) this.go(this.take());
    });
  }

  /** Every waiting fill, out of the queue. */
  private take(): Waiting[] {
    const batch = this.waiting;
    this.waiting = [];
    this.waitingBytes = 0;
    return batch;
  }

  /** Sends `batch` as one call; when it is answered, the fills waiting by then. */
  private go(batch: Waiting[]): void {
    this.onTheirWay += 1;
    const keys = batch.map((w) => w.fill.data);
    if (this.filled !== null) keys.push(this.filled);
    const args: (Buffer | number)[] = batch.flatMap(({ fill }) => [fill.payload, fill.px, fill.record]);
    args.push(this.leaseTtl);
    this.send(keys, args)
      .then(
        (answer) => batch.forEach((w, i) => w.resolve(outcomeOf(Number(answer), i))),
        (err: unknown) => batch.forEach((w) => w.reject(err)),
      )
      .finally(() => {
        this.onTheirWay -= 1;
        if (this.waiting.length > 0) this.go(this.take());
      });
  }
}

/** The `i`th fill's two bits of a call's answer (`4^i` each; exact: the answer stays below 2^52). */
export function outcomeOf(answer: number, i: number): Outcome {
  const bits = Math.floor(answer / 4 ** i) % 4;
  return bits === 1 || bits === 2 ? bits : 0;
}
