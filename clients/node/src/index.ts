/**
 * Strata's hybrid cache for Node services.
 *
 * An in-process L1 in front of Redis, sharing a namespace — entries, load leases, fenced fills,
 * tags and the invalidation log — with Strata instances in Rust and Python (protocol v1,
 * `docs/protocol.md` in the Strata repository).
 *
 * ```ts
 * import { HybridCache } from "strata-cache";
 *
 * const cache = await HybridCache.connect("redis://localhost:6379", "catalog", {
 *   defaults: { ttl: 300_000, softTtl: 60_000 },
 * });
 * const product = await cache.getOrLoad("product:42", () => db.product(42));
 * await cache.invalidate("product:42"); // every instance, any language, drops it
 * ```
 */

export { type CacheOptions, type Decode, HybridCache, PROTOCOL_VERSION } from "./cache";
export type { CodecName } from "./envelope";
export {
  ConfigError,
  KeyTooLongError,
  LoaderError,
  LoaderTimeoutError,
  NotFoundError,
  StrataError,
  UnavailableError,
  ValueTooLargeError,
} from "./errors";
export type { EntryOptions } from "./options";
export { prometheus, type Stats } from "./stats";
