/** How one entry is cached: the same options, and the same times in the envelope, as the Rust crate's `EntryOptions`. */

import type { CodecName, Times } from "./envelope";

/**
 * The life of an entry, from its creation (durations in milliseconds):
 *
 * ```text
 *  created     freshUntil           expires               staleUntil
 *     |── fresh ──|── stale-while-revalidate ──|── fail-safe only ──|
 *               (softTtl)                (ttl)          (ttl + failSafe)
 * ```
 */
export interface EntryOptions {
  /** Hard expiry (default 300,000 ms). */
  ttl?: number;
  /** Adds up to `jitter × ttl` at random, so entries written together do not expire together. */
  jitter?: number;
  /** After it the entry is served at once while one background load refreshes it. */
  softTtl?: number;
  /** Expired entries are kept this much longer, served when the loader fails or times out. */
  failSafe?: number;
  /** While a fail-safe value is served, the loader is retried at most once per this (default 30,000 ms). */
  failSafeThrottle?: number;
  /** How long the in-process copy lives before Redis is asked again. */
  l1Ttl?: number;
  /** Give up on the loader after this long. */
  hardTimeout?: number;
  /** How long "not found" (a loader returning `null`) is cached (default 30,000 ms). */
  negativeTtl?: number;
  /** Tags for {@link HybridCache.invalidateTag}. */
  tags?: readonly string[];
  /** How the value is written in Redis (every instance reads either). */
  codec?: CodecName;
}

/** The options with every default filled in. */
export type Resolved = Required<Omit<EntryOptions, "softTtl" | "failSafe" | "l1Ttl" | "hardTimeout" | "codec">> &
  Pick<EntryOptions, "softTtl" | "failSafe" | "l1Ttl" | "hardTimeout" | "codec">;

export function resolve(options: EntryOptions | undefined, defaults?: Resolved): Resolved {
  const base: Resolved = defaults ?? {
    ttl: 300_000,
    jitter: 0,
    failSafeThrottle: 30_000,
    negativeTtl: 30_000,
    tags: [],
  };
  return { ...base, ...stripUndefined(options ?? {}) };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The times of an entry created at `now` (ms), jitter drawn here. */
export function timesOf(o: Resolved, now: number, negative: boolean): Times {
  if (negative) {
    const expires = now + o.negativeTtl;
    return { created: now, freshUntil: expires, expires, staleUntil: expires };
  }
  let ttl = Math.max(0, Math.round(o.ttl));
  if (o.jitter > 0) ttl += Math.floor(ttl * Math.min(o.jitter, 1) * Math.random());
  const expires = now + ttl;
  const freshUntil = o.softTtl !== undefined && o.softTtl < ttl ? now + Math.round(o.softTtl) : expires;
  return { created: now, freshUntil, expires, staleUntil: expires + (o.failSafe ?? 0) };
}

/** Until when an L1 copy made at `now` may serve without asking Redis. */
export function l1Until(o: Resolved, now: number, times: Times): number {
  return o.l1Ttl === undefined ? times.expires : Math.min(now + o.l1Ttl, times.expires);
}
