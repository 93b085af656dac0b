/**
 * Writes a Redis Cluster keeps through a failover (`docs/protocol.md` §4): a write step is
 * followed, on the connection that sent it, by `WAIT 1 <replicaWait>` on its master when that
 * master has a connected replica. Replication is asynchronous otherwise, and a master killed
 * right after answering takes the write with it — an invalidation lost, and the promoted replica
 * serves the old value to every instance. `WAIT` counts only the writes of its own connection, so
 * it goes in the same pipeline as the step (ioredis sends a pipeline to one node, on the
 * connection its commands to that node use). Waiting is bounded, as in the Rust crate: a replica
 * that does not answer in time delays the write, it does not fail it.
 *
 * Which masters have a replica is read from `CLUSTER NODES` at most every {@link TOPOLOGY_FOR},
 * and again after a `WAIT` no replica answered, as the Rust crate does: ioredis's slot map lists
 * a replica only once the cluster has gossiped its replication offset, so a client started beside
 * a new cluster could wait on none.
 */

import type { Cluster } from "ioredis";

import { slotOf } from "./layout";

/** A command: its name, then its arguments. */
export type Step = [string, ...(string | number | Buffer)[]];

/** How long what `CLUSTER NODES` said of the replicas is taken as true (ms). */
export const TOPOLOGY_FOR = 5000;

/**
 * The `host:port` of every master with a connected replica, from `CLUSTER NODES`
 * (`<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`).
 */
export function replicatedMasters(text: string): Set<string> {
  const names = new Map<string, string[]>();
  const replicaOf: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(" ");
    if (f.length < 8) continue;
    const [id, address, flagList, master, , , , link] = f as [string, string, string, string, ...string[]];
    const [addr = "", hostname] = address.replace(/@[^,]*/, "").split(",");
    const port = addr.slice(addr.lastIndexOf(":") + 1);
    names.set(id, hostname ? [addr, `${hostname}:${port}`] : [addr]);
    const flags = flagList.split(",");
    const failed = flags.some((x) => x === "fail" || x === "fail?" || x === "noaddr");
    if (flags.includes("slave") && link === "connected" && !failed) replicaOf.push(master);
  }
  return new Set(replicaOf.flatMap((id) => names.get(id) ?? []));
}

/** The cluster's writes, each confirmed by a replica of its master where there is one. */
export class Replicated {
  private masters = new Set<string>();
  private freshUntil = 0;
  private reading: Promise<Set<string>> | null = null;
  private readonly bodies: Map<string, string>;

  constructor(
    private readonly redis: Cluster,
    private readonly waitMs: number,
    private readonly shas: Record<string, string>,
    scripts: Record<string, string>,
  ) {
    this.bodies = new Map(Object.entries(scripts).map(([name, body]) => [shas[name]!, body]));
  }

  /** A protocol script as a step (by its SHA1; its text if the master lacks it). */
  script(name: string, keys: string[], args: (string | number | Buffer)[]): Step {
    return ["EVALSHA", this.shas[name]!, keys.length, ...keys, ...args];
  }

  /**
   * The nodes serving `key`'s slot as last seen, master first, as one string: ioredis sends a
   * pipeline only where all its keys have the same.
   */
  group(key: string): string {
    return (this.redis.slots[slotOf(key)] ?? []).join(",");
  }

  /**
   * Runs `steps` in order on one connection to `waitOn`'s master — every key they touch is
   * served by the same nodes — then waits there for a replica, if it has one; their replies. A
   * script goes last (its text follows if the master did not have it).
   */
  async write(steps: Step[], waitOn: string): Promise<unknown[]> {
    if (steps.length === 0) return [];
    const master = this.redis.slots[slotOf(waitOn)]?.[0];
    const wait = master !== undefined && (await this.replicated()).has(master);
    let pending = steps;
    const replies: unknown[] = [];
    for (;;) {
      const pipe = this.redis.pipeline();
      for (const [name, ...args] of pending) pipe.call(name, ...args);
      if (wait) pipe.call("WAIT", 1, this.waitMs);
      const out = (await pipe.exec()) ?? [];
      const failed = out.slice(0, pending.length).findIndex(([err]) => err !== null);
      if (failed < 0) {
        replies.push(...out.slice(0, pending.length).map(([, reply]) => reply));
        // The replica lags or is gone: look again before the next write.
        if (wait && out[pending.length]?.[1] === 0) this.freshUntil = 0;
        return replies;
      }
      const [err] = out[failed]!;
      const step = pending[failed]!;
      if (failed !== pending.length - 1 || step[0] !== "EVALSHA" || !String(err?.message).startsWith("NOSCRIPT")) {
        throw err;
      }
      replies.push(...out.slice(0, failed).map(([, reply]) => reply));
      const [, sha, ...rest] = step;
      pending = [["EVAL", this.bodies.get(String(sha))!, ...rest]];
    }
  }

  /** The masters with a connected replica, as of at most {@link TOPOLOGY_FOR} ago. */
  private async replicated(): Promise<Set<string>> {
    if (Date.now() < this.freshUntil) return this.masters;
    this.reading ??= (async () => {
      try {
        this.masters = replicatedMasters(String(await this.redis.cluster("NODES")));
        this.freshUntil = Date.now() + TOPOLOGY_FOR;
        return this.masters;
      } finally {
        this.reading = null;
      }
    })();
    return await this.reading;
  }
}
