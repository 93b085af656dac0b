/** What can go wrong, as the Rust crate's `strata::Error` names it. */

/** Every error this package throws. */
export class StrataError extends Error {
  override name = "StrataError";
}
/** Bad settings: a namespace, a log split another instance disagrees with, … */
export class ConfigError extends StrataError {
  override name = "ConfigError";
}
/** A key over the cache's limit; nothing was read or written. */
export class KeyTooLongError extends StrataError {
  override name = "KeyTooLongError";
}
/** An encoded value over the cache's limit; nothing was written. */
export class ValueTooLargeError extends StrataError {
  override name = "ValueTooLargeError";
}
/** The loader failed and no fail-safe value was at hand; `cause` is its error. */
export class LoaderError extends StrataError {
  override name = "LoaderError";
}
/** The loader ran past its hard timeout and no fail-safe value was at hand. */
export class LoaderTimeoutError extends LoaderError {
  override name = "LoaderTimeoutError";
}
/** `getOrLoad` met a cached "not found". */
export class NotFoundError extends StrataError {
  override name = "NotFoundError";
}
/** Redis could not be reached for a write: it was not done. */
export class UnavailableError extends StrataError {
  override name = "UnavailableError";
}
