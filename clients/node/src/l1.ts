/**
 * L1: the in-process copies, bounded, and the fence that keeps an invalidated value out.
 *
 * A fill of L1 notes the key's fence before it reads Redis and goes in only if no invalidation
 * of the key was applied since: a load that raced an invalidation never puts the old value back.
 */

import type { Times } from "./envelope";

const STRIPES = 4096;

/** An in-process copy; `negative` for "known not to exist". */
export interface L1Entry {
  value: unknown;
  negative: boolean;
  times: Times;
  l1Until: number;
  tags: readonly string[];
  stamp: bigint | null;
  failSafe: boolean;
  /** The value is data read from Redis, not yet through the caller's `decode`. */
  fromL2?: boolean;
}

/** Whether it can still serve: until `l1Until`, or as a fail-safe fallback until `staleUntil`. */
export function alive(e: L1Entry, now: number): boolean {
  return now < Math.max(e.l1Until, e.times.staleUntil);
}

function stripe(key: string): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0;
  return (h >>> 0) % STRIPES;
}

/** Tag drops remembered: far more than happen during one load. */
const DROPS_KEPT = 1024;

/**
 * Counters bumped by invalidations: a key's stripe, and one for the whole namespace (every
 * tag drop and clear), with what each of those dropped.
 */
export class Fence {
  private stripes = new Uint32Array(STRIPES);
  private all = 0;
  /** [the namespace counter after the drop, the tag; null: everything], newest last. */
  private drops: [number, string | null][] = [];
  read(key: string): string {
    return `${this.stripes[stripe(key)]}:${this.all}`;
  }
  bump(key: string): void {
    this.stripes[stripe(key)]! += 1;
  }
  /** A drop of `tag`'s entries, or (`null`) of everything. */
  bumpAll(tag: string | null = null): void {
    this.all += 1;
    this.drops.push([this.all, tag]);
    if (this.drops.length > DROPS_KEPT) this.drops.shift();
  }
  /**
   * Whether a tag drop or clear since `seen` concerns a value tagged `tags`: a load of it must
   * not fill Redis (its key was in no index when the tag's were deleted). A record too short
   * to tell says yes.
   */
  overtakes(seen: string, tags: readonly string[]): boolean {
    const since = Number(seen.slice(seen.indexOf(":") + 1));
    if (this.all === since) return false;
    const first = this.drops[0];
    if (first === undefined || first[0] > since + 1) return true;
    return this.drops.some(([n, tag]) => n > since && (tag === null || tags.includes(tag)));
  }
}

/** An L1 entry in one of the queues, and how often it was read since it came in (capped). */
interface Slot {
  readonly key: string;
  entry: L1Entry;
  reads: number;
  /** False once removed or evicted: a queue skips it when it comes to the front. */
  live: boolean;
  /** In the small queue (else the main one). */
  small: boolean;
}

/** What a dropped slot holds instead of its entry. */
const DROPPED: L1Entry = {
  value: null,
  negative: true,
  times: { created: 0, freshUntil: 0, expires: 0, staleUntil: 0 },
  l1Until: 0,
  tags: [],
  stamp: null,
  failSafe: false,
};

/** Reads an entry counts, at most: how many passes over the main queue it survives unread. */
const MAX_READS = 3;

/**
 * A first-in-first-out queue over a growable ring: taking from the front of a `Map` instead costs
 * more with every key taken (V8 skips the holes they leave until the table is rebuilt).
 */
export class Ring<T> {
  private items: (T | undefined)[] = new Array<T | undefined>(16);
  private head = 0;
  length = 0;
  push(item: T): void {
    if (this.length === this.items.length) {
      this.items = [...this.items.slice(this.head), ...this.items.slice(0, this.head)];
      this.items.length *= 2;
      this.head = 0;
    }
    this.items[(this.head + this.length++) % this.items.length] = item;
  }
  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.length -= 1;
    return item;
  }
  /** The first item, left in place. */
  peek(): T | undefined {
    return this.length === 0 ? undefined : this.items[this.head];
  }
  clear(): void {
    this.items = new Array<T | undefined>(16);
    this.head = this.length = 0;
  }
}

/**
 * At most `capacity` entries (0: no L1), evicted by S3-FIFO (Yang et al., SOSP 2023) as the Rust
 * crate's L1 (quick_cache) is: a new key enters a small queue (a tenth of the room); one read
 * while there moves it to the main queue when it reaches the front, an unread one leaves and is
 * remembered in a ghost queue (keys only), and a key coming back from the ghost goes straight to
 * the main queue, where each read buys an entry one more pass. A read only bumps a counter — no
 * reordering — which costs less than a least-recently-used list and keeps more of W1's hot set
 * (its stream: 0.757 of reads against 0.712 for least-recently-used).
 */
export class L1 {
  private index = new Map<string, Slot>();
  private small = new Ring<Slot>();
  private main = new Ring<Slot>();
  private smallLive = 0;
  /** Keys evicted unread, each with the number of its latest turn in `ghostOrder`. */
  private ghost = new Map<string, number>();
  private ghostOrder = new Ring<[string, number]>();
  private ghostTurn = 0;
  private readonly smallRoom: number;
  constructor(readonly capacity: number) {
    this.smallRoom = Math.max(1, Math.floor(capacity / 10));
  }
  get size(): number {
    return this.index.size;
  }
  get(key: string): L1Entry | undefined {
    const slot = this.index.get(key);
    if (slot === undefined) return undefined;
    if (slot.reads < MAX_READS) slot.reads += 1;
    return slot.entry;
  }
  insert(key: string, entry: L1Entry): void {
    if (this.capacity <= 0) return;
    const slot = this.index.get(key);
    if (slot !== undefined) {
      slot.entry = entry;
      return;
    }
    const small = !this.ghost.delete(key);
    const fresh: Slot = { key, entry, reads: 0, live: true, small };
    this.index.set(key, fresh);
    if (small) {
      this.small.push(fresh);
      this.smallLive += 1;
    } else {
      this.main.push(fresh);
    }
    while (this.index.size > this.capacity) this.evict();
  }
  /** The entry, without counting it as read. */
  peek(key: string): L1Entry | undefined {
    return this.index.get(key)?.entry;
  }
  remove(key: string): void {
    const slot = this.index.get(key);
    if (slot !== undefined) this.drop(slot);
  }
  removeTag(tag: string): void {
    for (const slot of this.index.values()) if (slot.entry.tags.includes(tag)) this.drop(slot);
  }
  clear(): void {
    for (const slot of this.index.values()) slot.live = false;
    this.index.clear();
    this.small.clear();
    this.main.clear();
    this.smallLive = 0;
    this.ghost.clear();
    this.ghostOrder.clear();
  }

  /** Takes `slot` out; its place in a queue is skipped when it comes to the front. */
  private drop(slot: Slot): void {
    slot.live = false;
    // Let go of the value now: the slot may wait in its queue for a while, and a value held
    // there was promoted by V8's young-generation GC (BENCHMARKS.md, "young-generation GC").
    slot.entry = DROPPED;
    this.index.delete(slot.key);
    if (slot.small) this.smallLive -= 1;
  }

  private evict(): void {
    for (;;) {
      if (this.smallLive >= this.smallRoom || this.main.length === 0) {
        const slot = this.small.shift();
        if (slot === undefined) return;
        if (!slot.live) continue;
        this.smallLive -= 1;
        slot.small = false;
        if (slot.reads > 0) {
          slot.reads = 0;
          this.main.push(slot);
          continue;
        }
        this.drop(slot); // `small` is false here: no count to mend
        this.ghost.set(slot.key, ++this.ghostTurn);
        this.ghostOrder.push([slot.key, this.ghostTurn]);
        while (this.ghost.size > this.capacity) {
          const [key, turn] = this.ghostOrder.shift()!;
          if (this.ghost.get(key) === turn) this.ghost.delete(key);
        }
        return;
      }
      const slot = this.main.shift()!;
      if (!slot.live) continue;
      if (slot.reads === 0) {
        this.drop(slot);
        return;
      }
      slot.reads -= 1;
      this.main.push(slot);
    }
  }
}
