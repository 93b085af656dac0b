/**
 * Connections from a URL: `redis://` / `rediss://` for one server (as ioredis reads them),
 * `redis+cluster://h1:p1,h2:p2` / `rediss+cluster://…` for a Redis Cluster (as the Rust crate
 * writes them; credentials as `user:password@` before the first node).
 */

import Redis, { Cluster, type RedisOptions } from "ioredis";

import { ConfigError } from "./errors";

export type Client = Redis | Cluster;

export function isCluster(url: string): boolean {
  return /^rediss?\+cluster:\/\//.test(url);
}

/** A client for `url`; `options` go to ioredis (to each node's connection on a cluster). */
export function connect(url: string, options: RedisOptions): Client {
  if (!isCluster(url)) return new Redis(url, options);
  const [scheme, rest = ""] = url.split("://", 2) as [string, string?];
  let hosts = rest.split("/")[0] ?? "";
  const redisOptions: RedisOptions = { ...options };
  const at = hosts.lastIndexOf("@");
  if (at >= 0) {
    const [user = "", password = ""] = hosts.slice(0, at).split(":", 2);
    if (user) redisOptions.username = decodeURIComponent(user);
    if (password) redisOptions.password = decodeURIComponent(password);
    hosts = hosts.slice(at + 1);
  }
  if (scheme === "rediss+cluster") redisOptions.tls = redisOptions.tls ?? {};
  const nodes = hosts.split(",").map((node) => {
    const i = node.lastIndexOf(":");
    const port = Number(node.slice(i + 1));
    if (i <= 0 || !Number.isInteger(port))
      throw new ConfigError(`${url}: cluster nodes are host:port, comma-separated`);
    return { host: node.slice(0, i), port };
  });
  return new Cluster(nodes, {
    redisOptions,
    maxRedirections: 16,
    retryDelayOnFailover: 100,
    clusterRetryStrategy: options.retryStrategy ?? undefined,
  });
}

/**
 * Resolves once `client` is ready for commands; rejects with the first connection error. A
 * client that fails calls at once while disconnected (no offline queue) must wait for this
 * before its first call.
 */
export async function ready(client: Client): Promise<void> {
  if (client.status === "ready") return;
  if (client.status === "wait") return client.connect(); // `lazyConnect`: connect now
  await new Promise<void>((resolve, reject) => {
    const settle = (error?: Error) => {
      client.off("ready", onReady);
      client.off("error", onError);
      client.off("end", onEnd);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onReady = () => settle();
    const onError = (e: Error) => settle(e);
    const onEnd = () => settle(new Error("connection closed before it was ready"));
    client.once("ready", onReady);
    client.once("error", onError);
    client.once("end", onEnd);
  });
}
