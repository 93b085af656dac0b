/**
 * The loads' timer of the W1 bench: a worker thread that ends each load's wait at its deadline,
 * as a database that answers in `LOAD_MS` would.
 *
 * Why not `setTimeout`: libuv's timers count whole milliseconds from the loop's cached clock, so
 * a 1 ms wait took 1.6 ms at the median under naive cache-aside and 1.8 ms under Strata (p95
 * 2.6 and 2.8 ms): the loop that sits idler while its loads wait fires them later, and the
 * harness, not the cache, made the difference (the Rust bench's `--load-timer` says the same of
 * Tokio's timer). Here the main thread writes each deadline into a ring in shared memory and
 * `Atomics.notify`s the worker; the worker sleeps in `Atomics.wait` until the earliest deadline
 * (the kernel's high-resolution timer) and posts the ids that are due, which wakes the main loop
 * at once. Both caches pay the same for it.
 */

import { Worker } from "node:worker_threads";

/** Deadlines in flight at most: W1 keeps 64 operations in flight. */
const RING = 4096;

// The worker's whole program. Loads of one duration arrive in deadline order, so a FIFO is its
// queue; `head` (control[0]) is how many deadlines the main thread has written, `done`
// (control[1]) how many the worker has posted, both modulo 2^31.
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const { control, deadlines, size } = workerData;
const MASK = 0x7fffffff;
const now = () => performance.timeOrigin + performance.now();
let done = 0;
for (;;) {
  const head = Atomics.load(control, 0);
  if (done === head) { Atomics.wait(control, 0, head); continue; }
  const wait = deadlines[done % size] - now();
  if (wait > 0) { Atomics.wait(control, 0, head, wait); continue; }
  const due = [];
  const t = now();
  while (done !== Atomics.load(control, 0) && deadlines[done % size] <= t) {
    due.push(done);
    done = (done + 1) & MASK;
  }
  Atomics.store(control, 1, done);
  parentPort.postMessage(due);
}
`;

/** Waits of one duration, each ended by the worker thread at its deadline. */
export class LoadTimer {
  private readonly control = new Int32Array(new SharedArrayBuffer(8));
  private readonly deadlines = new Float64Array(new SharedArrayBuffer(8 * RING));
  private readonly waiting = new Map<number, () => void>();
  private next = 0;
  private readonly worker: Worker;

  constructor() {
    this.worker = new Worker(WORKER, {
      eval: true,
      workerData: { control: this.control, deadlines: this.deadlines, size: RING },
    });
    this.worker.on("message", (ids: number[]) => {
      for (const id of ids) {
        this.waiting.get(id)?.();
        this.waiting.delete(id);
      }
    });
    // Nothing waiting, nothing keeps the process alive.
    this.worker.unref();
  }

  /** Resolves `ms` milliseconds from now, never sooner. */
  sleep(ms: number): Promise<void> {
    if (this.waiting.size >= RING) throw new Error(`more than ${RING} waits at once`);
    const id = this.next;
    // Counts wrap as the shared 32-bit words do (the ring is a power of two: ids stay in step).
    this.next = (id + 1) & 0x7fff_ffff;
    const done = new Promise<void>((resolve) => this.waiting.set(id, resolve));
    this.deadlines[id % RING] = performance.timeOrigin + performance.now() + ms;
    // A worker with an earlier deadline still to post wakes for it and finds this one then:
    // only an idle worker needs waking. The count is published before the look, never after:
    // the worker posts its count before it reads ours, and waits only while ours is unchanged,
    // so either this look sees it idle (and wakes it) or it sees our count and does not wait.
    // Looked at first, a worker that posted and went idle between the look and the store slept
    // through this wait and every one after it (the bench hung on such a lost wake-up).
    Atomics.store(this.control, 0, this.next);
    if (Atomics.load(this.control, 1) === id) Atomics.notify(this.control, 0);
    return done;
  }

  /** Stops the worker thread. */
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
