/**
 * Who waits on another load of which key: the flights here that found a key's lease held,
 * woken together when the end of that load is announced (`#filled`) or when a change applied
 * here deleted the lease record they wait on — every waiter on the key, not only the last to
 * register. (Two flights of one instance wait on one key when a write here overtook the first:
 * W1's hot keys did so ~30 times a run, and the one not woken slept until its 50 ms poll.)
 */

/** One flight's wait for the next announcement on its key. */
export interface Waiter {
  /** Settled at the key's next announcement after the waiter was taken. */
  readonly wake: Promise<void>;
  readonly fire: () => void;
}

export class LoadEnds {
  private readonly waiting = new Map<string, Set<Waiter>>();

  /**
   * A waiter on `key`, in place of the flight's `previous` one: taken before each look at
   * Redis, so that an announcement after the look is not missed.
   */
  wait(key: string, previous: Waiter | null): Waiter {
    if (previous !== null) this.leave(key, previous);
    let fire!: () => void;
    const wake = new Promise<void>((r) => (fire = r));
    const waiter = { wake, fire };
    let waiters = this.waiting.get(key);
    if (waiters === undefined) this.waiting.set(key, (waiters = new Set()));
    waiters.add(waiter);
    return waiter;
  }

  /** The flight is done waiting on `key`. */
  leave(key: string, waiter: Waiter): void {
    const waiters = this.waiting.get(key);
    if (waiters?.delete(waiter) && waiters.size === 0) this.waiting.delete(key);
  }

  /** The load of `key` ended, or its lease record is gone: wake every waiter on it. */
  announce(key: string): void {
    const waiters = this.waiting.get(key);
    if (waiters === undefined) return;
    this.waiting.delete(key);
    for (const w of waiters) w.fire();
  }

  /** Every key's waiters: a change may have ended every load (a tag drop, a clear, a resync). */
  announceAll(): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const waiters of all) for (const w of waiters) w.fire();
  }
}
