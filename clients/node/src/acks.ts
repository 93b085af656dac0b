/**
 * Acknowledged writes (`docs/protocol.md` §4): each instance keeps a field of `<namespace>#acks`
 * saying how far it applied each part of the log and until when it counts as alive; a write
 * returns once every other live instance's field covers its entry.
 *
 * The same fields, format and rules as the Rust crate's `acknowledged_writes`, so a write in
 * any language waits for the instances of every language.
 */

import type { Client } from "./connection";

/**
 * Looks at `#acks` sent as soon as the last one returns, before looking every {@link POLL} ms:
 * the acknowledgements come a round trip or two after the write.
 */
const QUICK_LOOKS = 8;
const POLL = 1;
/** The longest `close` waits for the goodbye (a frozen server must not hold it up). */
const LEAVE_WAIT = 1000;

const nowMs = (): number => Date.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What `promise` resolves to if it does within `ms`, else `null` (its failure then ignored). */
export async function before<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  promise.catch(() => undefined);
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A field's value: `<alive until, ms>:<applied s of part 0>,<of part 1>,…`. */
export function ackValue(aliveUntil: number, applied: readonly bigint[]): string {
  return `${aliveUntil}:${applied.join(",")}`;
}

/**
 * `[alive until, applied s of part]` of a field's value (a part it does not list: 0); `null` if
 * it is not one.
 */
export function parseAck(value: string, part: number): [number, bigint] | null {
  const colon = value.indexOf(":");
  if (colon < 0) return null;
  const alive = value.slice(0, colon);
  const seq = value.slice(colon + 1).split(",")[part];
  if (!/^\d+$/.test(alive) || (seq !== undefined && !/^\d+$/.test(seq))) return null;
  return [Number(alive), seq === undefined ? 0n : BigInt(seq)];
}

/**
 * This instance's field: written whenever the followers apply more of the log, and at least
 * every heartbeat (a sign of life); removed when the cache closes.
 */
export class Acker {
  private readonly field: string;
  private readonly applied: bigint[];
  private advanced: (() => void) | null = null;
  private dirty = false;
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly redis: Client,
    private readonly key: string,
    instanceId: bigint,
    parts: number,
    private readonly heartbeat: number,
    private readonly onError: () => void,
  ) {
    this.field = instanceId.toString();
    this.applied = new Array<bigint>(parts).fill(0n);
  }

  /** A follower applied its part up to `seq` (a lost log may set it back). */
  record(part: number, seq: bigint): void {
    if (this.applied[part] === seq) return;
    this.applied[part] = seq;
    this.dirty = true;
    this.advanced?.();
  }

  /**
   * The first acknowledgement, before the cache serves a read: no write may miss it. A failure
   * is logged; the acker's next beat tries again.
   */
  async join(): Promise<void> {
    try {
      await this.acknowledge();
    } catch (e) {
      this.onError();
      console.warn(
        `strata: no acknowledgement went out yet (${(e as Error).message}); others' writes may not wait for this instance at first`,
      );
    }
    this.loop = this.run();
  }

  /** Stops acknowledging and removes the field: the others stop waiting for it at once. */
  async leave(): Promise<void> {
    this.stopped = true;
    this.advanced?.();
    // Bounded: a frozen server must not hold the close up. If the goodbye is lost, the field
    // is gone anyway once its life passes: a writer removes it then.
    if (this.loop !== null) await before(this.loop, LEAVE_WAIT);
    await before(
      this.redis.hdel(this.key, this.field).catch(() => 0),
      LEAVE_WAIT,
    );
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (!this.dirty) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          this.advanced = resolve;
          timer = setTimeout(resolve, this.heartbeat);
        });
        clearTimeout(timer);
        this.advanced = null;
        if (this.stopped) return;
      }
      this.dirty = false;
      try {
        await this.acknowledge();
      } catch {
        this.onError();
      }
    }
  }

  private async acknowledge(): Promise<void> {
    const aliveUntil = nowMs() + Math.round(3 * this.heartbeat);
    await this.redis.hset(this.key, this.field, ackValue(aliveUntil, this.applied));
  }
}

/**
 * The looks at `#acks` (`HGETALL`): one at a time, its answer shared by every write waiting
 * meanwhile — without it, a burst of writes, or an instance slow to acknowledge, multiplied them.
 */
export class Looks {
  /** The look in flight or last made: when it began, and what it finds. */
  private last: { began: bigint; acks: Promise<Record<string, string>> } | null = null;

  constructor(
    private readonly redis: Client,
    private readonly key: string,
  ) {}

  /**
   * The fields as a look begun after this call found them (not an older look's: a field it
   * shows past its life may have been refreshed since, and is removed on its word).
   */
  async look(): Promise<Record<string, string>> {
    const asked = process.hrtime.bigint();
    for (;;) {
      const last = this.last;
      if (last !== null && last.began >= asked) return await last.acks;
      if (last !== null) {
        // One look at a time: wait for the one out, then look again unless another did.
        await last.acks.catch(() => undefined);
        if (this.last !== last) continue;
      }
      const acks = this.redis.hgetall(this.key);
      this.last = { began: process.hrtime.bigint(), acks };
      return await acks;
    }
  }

  /**
   * Whether every other live instance acknowledged `seq` of `part` within `within` ms; fields
   * past their life are removed.
   */
  async wait(origin: bigint, part: number, seq: bigint, within: number): Promise<boolean> {
    const mine = origin.toString();
    const deadline = nowMs() + within;
    for (let looks = 0; nowMs() < deadline; looks++) {
      if (looks >= QUICK_LOOKS) await sleep(POLL);
      // Bounded even if the server stalls: the wait's bound is the caller's promise.
      const acks = await before(this.look(), deadline - nowMs());
      if (acks === null) return false;
      const now = nowMs();
      let done = true;
      const gone: string[] = [];
      for (const [field, value] of Object.entries(acks)) {
        if (field === mine) continue;
        const ack = parseAck(value, part);
        if (ack !== null && ack[0] < now) gone.push(field);
        else if (ack === null || ack[1] < seq) done = false;
      }
      if (gone.length > 0) {
        // Instances that stopped saying they are alive: no longer waited for.
        await this.redis.hdel(this.key, ...gone).catch(() => undefined);
      }
      if (done) return true;
    }
    return false;
  }
}
