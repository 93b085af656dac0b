/** A bound on how long a promise may take. */

/** Raised by {@link withTimeout} when the bound passed first. */
export class TimeoutSignal extends Error {
  override name = "TimeoutSignal";
}

/** `work`, or a {@link TimeoutSignal} once `ms` passed first (`undefined`: no bound). */
export function withTimeout<T>(work: Promise<T>, ms: number | undefined): Promise<T> {
  if (ms === undefined) return work;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutSignal(`no answer in ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
