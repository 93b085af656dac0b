/**
 * Connections from a URL: `redis://` / `rediss://` for one server (as ioredis reads them),
 * `redis+sentinel://s1:p1,s2:p2/<master>[/<db>]` for the master of a Sentinel-managed group and
 * `redis+cluster://h1:p1,h2:p2` for a Redis Cluster (`rediss+…` with TLS), as the Rust crate
 * writes them: credentials as `user:password@` before the first host.
 */

import Redis, { Cluster, type RedisOptions } from "ioredis";

import { ConfigError } from "./errors";

export type Client = Redis | Cluster;

export function isCluster(url: string): boolean {
  return /^rediss?\+cluster:\/\//.test(url);
}

export function isSentinel(url: string): boolean {
  return /^rediss?\+sentinel:\/\//.test(url);
}

/** `h1[:p1],h2[:p2]` as host and port pairs. */
function hostsOf(url: string, hosts: string, defaultPort: number): { host: string; port: number }[] {
  return hosts.split(",").map((node) => {
    const i = node.lastIndexOf(":");
    const [host, port] = i < 0 ? [node, String(defaultPort)] : [node.slice(0, i), node.slice(i + 1)];
    if (host === "" || !/^\d+$/.test(port)) throw new ConfigError(`${url}: hosts are host[:port], comma-separated`);
    return { host, port: Number(port) };
  });
}

/** Takes `user:password@` off the front of a URL's `authority` into `options`; returns its hosts. */
function credentials(authority: string, options: RedisOptions): string {
  const at = authority.lastIndexOf("@");
  if (at < 0) return authority;
  const userinfo = authority.slice(0, at);
  const colon = userinfo.indexOf(":");
  const [user, password] = colon < 0 ? [userinfo, ""] : [userinfo.slice(0, colon), userinfo.slice(colon + 1)];
  if (user) options.username = decodeURIComponent(user);
  if (password) options.password = decodeURIComponent(password);
  return authority.slice(at + 1);
}

/**
 * The master of a Sentinel-managed group: the sentinels are asked for its address on each
 * (re)connection, and a connection that finds it has become a replica (`READONLY`) reconnects.
 * The URL's credentials, database and TLS are the master's; the sentinels take its TLS.
 */
function sentinel(url: string, options: RedisOptions): Redis {
  const [scheme, rest = ""] = url.split("://", 2) as [string, string?];
  const slash = rest.indexOf("/");
  const [authority, path] = slash < 0 ? [rest, ""] : [rest.slice(0, slash), rest.slice(slash + 1)];
  const o: RedisOptions = { ...options };
  const hosts = credentials(authority, o);
  const [name = "", db] = path.split("/", 2);
  if (name === "" || hosts === "")
    throw new ConfigError(`${url}: a Sentinel URL names its sentinels and a master (…/<master>)`);
  if (db !== undefined && db !== "") {
    if (!/^\d+$/.test(db)) throw new ConfigError(`${url}: the database is a number`);
    o.db = Number(db);
  }
  if (scheme === "rediss+sentinel") {
    o.tls = o.tls ?? {};
    o.enableTLSForSentinelMode = true;
    o.sentinelTLS = o.sentinelTLS ?? o.tls;
  }
  return new Redis({
    sentinels: hostsOf(url, hosts, 26379),
    name,
    failoverDetector: true,
    reconnectOnError: (err) => (err.message.startsWith("READONLY") ? 2 : false),
    ...o,
  });
}

/** A client for `url`; `options` go to ioredis (to each node's connection on a cluster). */
export function connect(url: string, options: RedisOptions): Client {
  if (isSentinel(url)) return sentinel(url, options);
  if (!isCluster(url)) return new Redis(url, options);
  const [scheme, rest = ""] = url.split("://", 2) as [string, string?];
  const redisOptions: RedisOptions = { ...options };
  const hosts = credentials(rest.split("/")[0] ?? "", redisOptions);
  if (scheme === "rediss+cluster") redisOptions.tls = redisOptions.tls ?? {};
  const nodes = hostsOf(url, hosts, 6379);
  return new Cluster(nodes, {
    redisOptions,
    enableAutoPipelining: options.enableAutoPipelining ?? false,
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

/**
 * Connects `redis` again whenever it ends without `stop()` having been called. ioredis ends a
 * Sentinel client for good when a failover is announced while it reconnects: its failover
 * detector disconnects the connector, whose pending lookup of the master then fails with
 * "Connection is closed." and the client's status becomes `end` (seen once in CI: a Node
 * instance refused every write for 30 s after the master was killed). Returns `stop`.
 */
export function keepConnected(redis: Redis, pause = 100): () => void {
  let stopped = false;
  redis.on("end", () => {
    if (stopped) return;
    setTimeout(() => {
      if (!stopped && redis.status === "end") redis.connect().catch(() => {}); // ends again: retried
    }, pause);
  });
  return () => {
    stopped = true;
  };
}

/**
 * The commands of one turn of the event loop go out in one write: each connection's socket is
 * corked at the turn's first command and uncorked by `setImmediate`, once the turn's timers and
 * I/O callbacks (replies) have run, as ioredis's own auto-pipelining and the Rust crate's
 * connection gather a batch; on a cluster, each node's connection, those it opens later too. On
 * loopback a `write` costs more than the command (~10 µs). ioredis's auto-pipelining goes
 * through a `Pipeline` per batch whose objects outlive young-generation collections: on W1
 * they made every scavenge copy ~3 MB (0.3 MB without), pauses of ~4 ms every ~20 ms, twice the
 * read p99. The commands still go through ioredis one by one (`sendCommand`), replies and
 * errors as ever. (Uncorking at `process.nextTick` instead sends a write per timer or reply
 * callback: ~20 % more of Redis's CPU on W1.)
 */
export function writePerTick(client: Client): void {
  if (client instanceof Cluster) {
    for (const node of client.nodes()) corkPerTick(node);
    client.on("+node", corkPerTick);
  } else {
    corkPerTick(client);
  }
}

const corking = new WeakSet<Redis>();

function corkPerTick(redis: Redis): void {
  if (corking.has(redis)) return;
  corking.add(redis);
  const send = redis.sendCommand.bind(redis);
  let corked = false;
  redis.sendCommand = (command, stream) => {
    const socket = redis.stream;
    if (!corked && socket?.writable) {
      corked = true;
      socket.cork();
      setImmediate(() => {
        corked = false;
        socket.uncork();
      });
    }
    return send(command, stream);
  };
}
