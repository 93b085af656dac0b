/**
 * The cache's commands on a Redis Cluster: each on a connection of its own to the master that
 * serves its key's slot, pipelined as on one server (`multiplex.ts`).
 *
 * Through ioredis's cluster client each command cost a `Command` and its routing: W1 on three
 * masters took 15.9 µs of this process's CPU per operation against ~8–9 on one server, and its
 * read p99 was 1.8× naive's (BENCHMARKS.md, "The Node client on a cluster"). Here the key's slot
 * picks the master in ioredis's own slot map, and that master's `Multiplexed` connection —
 * made from the node client's options (TLS, credentials) and failing at once while that client
 * reconnects — carries it. What the map got wrong goes through the cluster client, which
 * follows it: a `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN` reply (the command did not run) is
 * sent again there, and ioredis follows the redirection and refreshes its map. A lost
 * connection fails the commands that waited on it (they may have run: nothing is sent twice)
 * and has the cluster client read the slots again (at most every 100 ms), so that after a
 * failover the next command goes to the promoted replica.
 */

import type Redis from "ioredis";
import type { Cluster } from "ioredis";
import calculateSlot from "cluster-key-slot";

import { ready } from "./connection";
import { type Arg, Multiplexed } from "./multiplex";

/** Replies that say the command did not run where it was sent. */
const REDIRECTED = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /;

/** The least time between two refreshes of the slot map a lost connection asks for (ms). */
const REFRESH_EVERY = 100;

export class Routed {
  /** Each master's connection, by its node key (`host:port`), with the node client it was made from. */
  private readonly links = new Map<string, { node: Redis; link: Multiplexed }>();
  private closed = false;
  private refreshed = 0;

  constructor(private readonly cluster: Cluster) {}

  /**
   * Sends one command to the master of its key — `args[1]`, or a script's first key — and
   * returns its reply as `Multiplexed.call` does.
   */
  async call(args: Arg[], strings: boolean): Promise<unknown> {
    if (this.closed) throw new Error("the cache is closed");
    const master = this.master(String(args[0] === "EVALSHA" || args[0] === "EVAL" ? args[3] : args[1]));
    if (master === undefined) {
      // Its master is gone from the map (failed, no promoted replica known yet): fail now, as
      // a lost connection does, rather than queue in the cluster client until it recovers.
      this.refresh();
      throw new Error("Connection is closed.");
    }
    try {
      // ioredis connects a node's client on its first command: here, ours.
      const status = master.node.status;
      if (status === "wait" || status === "connecting" || status === "connect") await ready(master.node);
      return await master.link.call(args, strings);
    } catch (e) {
      const error = e as Error;
      if (!REDIRECTED.test(error.message)) {
        // A connection's failure (not the server's answer): the master may be gone, and its
        // node client tells the cluster client nothing — have it read the topology again.
        if (error.name !== "ReplyError") this.refresh();
        throw e;
      }
      const [command, ...rest] = args as [string, ...Arg[]];
      return strings ? await this.cluster.call(command, ...rest) : await this.cluster.callBuffer(command, ...rest);
    }
  }

  /** Closes every connection; commands still waiting fail. */
  close(): void {
    this.closed = true;
    for (const { link } of this.links.values()) link.close();
    this.links.clear();
  }

  /** Has ioredis read the cluster's slots again, at most every `REFRESH_EVERY` ms. */
  private refresh(): void {
    const now = Date.now();
    if (now - this.refreshed < REFRESH_EVERY) return;
    this.refreshed = now;
    this.cluster.refreshSlotsCache();
  }

  /**
   * The master serving `key`'s slot in ioredis's map, and its connection: looked up among the
   * cluster's node clients only when its node key is new here or its client has ended (ioredis
   * replaces the client of a node it dropped and found again).
   */
  private master(key: string): { node: Redis; link: Multiplexed } | undefined {
    const nodeKey = nodeKeyOf(this.cluster, key);
    if (nodeKey === undefined) return undefined;
    const known = this.links.get(nodeKey);
    if (known !== undefined && known.node.status !== "end") return known;
    known?.link.close();
    this.links.delete(nodeKey);
    const node = nodeClient(this.cluster, nodeKey);
    if (node === undefined) return undefined;
    const fresh = { node, link: new Multiplexed(node) };
    this.links.set(nodeKey, fresh);
    return fresh;
  }
}

/** The client of the master serving `key`'s slot in ioredis's map, if it knows one. */
export function masterOf(cluster: Cluster, key: string): Redis | undefined {
  const nodeKey = nodeKeyOf(cluster, key);
  return nodeKey === undefined ? undefined : nodeClient(cluster, nodeKey);
}

/** The node key (`host:port`) of the master serving `key`'s slot in ioredis's map. */
function nodeKeyOf(cluster: Cluster, key: string): string | undefined {
  return cluster.slots[calculateSlot(key)]?.[0];
}

function nodeClient(cluster: Cluster, nodeKey: string): Redis | undefined {
  return cluster.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === nodeKey);
}
