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

/** At most `capacity` entries, least recently used out first (0: no L1). */
export class L1 {
  private entries = new Map<string, L1Entry>();
  constructor(readonly capacity: number) {}
  get size(): number {
    return this.entries.size;
  }
  get(key: string): L1Entry | undefined {
    const e = this.entries.get(key);
    if (e !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, e);
    }
    return e;
  }
  insert(key: string, entry: L1Entry): void {
    if (this.capacity <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, entry);
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }
  /** The entry, without counting it as used. */
  peek(key: string): L1Entry | undefined {
    return this.entries.get(key);
  }
  remove(key: string): void {
    this.entries.delete(key);
  }
  removeTag(tag: string): void {
    for (const [k, e] of this.entries) if (e.tags.includes(tag)) this.entries.delete(k);
  }
  clear(): void {
    this.entries.clear();
  }
}
