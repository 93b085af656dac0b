/** URLs as the Rust crate writes them: one server, a Sentinel group's master, a cluster. */

import assert from "node:assert/strict";
import { test } from "node:test";

import Redis, { Cluster } from "ioredis";

import { connect, keepConnected } from "../src/connection";
import { ConfigError } from "../src/errors";
import { replicatedMasters } from "../src/replicas";
import { Server } from "./server";

test("a Sentinel URL names the sentinels, the master, its database and credentials", () => {
  const client = connect("redis+sentinel://app:p%40ss@10.0.0.1:26380,10.0.0.2/mymaster/3", { lazyConnect: true });
  assert.ok(client instanceof Redis);
  const o = client.options;
  assert.deepEqual(o.sentinels, [
    { host: "10.0.0.1", port: 26380 },
    { host: "10.0.0.2", port: 26379 },
  ]);
  assert.deepEqual([o.name, o.db, o.username, o.password], ["mymaster", 3, "app", "p@ss"]);
  // The credentials are the master's, not the sentinels'.
  assert.equal(o.sentinelPassword ?? null, null);
  client.disconnect();
});

test("a malformed URL is a config error", () => {
  for (const url of [
    "redis+sentinel://h1,h2",
    "redis+sentinel:///mymaster",
    "redis+sentinel://h:port/mymaster",
    "redis+sentinel://h/mymaster/zero",
    "redis+cluster://h1:1,:2",
  ]) {
    assert.throws(() => connect(url, { lazyConnect: true }), ConfigError, url);
  }
});

test("cluster nodes take the default port and the credentials", () => {
  const client = connect("redis+cluster://u:p:w@h1,h2:7001", { lazyConnect: true });
  assert.ok(client instanceof Cluster);
  // Not in ioredis' types: the nodes it was given.
  assert.deepEqual((client as unknown as { startupNodes: unknown }).startupNodes, [
    { host: "h1", port: 6379 },
    { host: "h2", port: 7001 },
  ]);
  assert.deepEqual([client.options.redisOptions?.username, client.options.redisOptions?.password], ["u", "p:w"]);
  client.disconnect();
});

// `CLUSTER NODES` of three masters (30001–30003), each with a replica: 30004 connected, 30005's
// link down, 30006 connected (its flags are changed below).
const CLUSTER_NODES = `n4 127.0.0.1:30004@31004,h4 slave n1 0 1 4 connected
n2 127.0.0.1:30002@31002,h2 master - 0 1 2 connected 5461-10922
n3 127.0.0.1:30003@31003,h3 master - 0 1 3 connected 10923-16383
n5 127.0.0.1:30005@31005,h5 slave n2 0 1 5 disconnected
n6 127.0.0.1:30006@31006,h6 slave n3 0 1 6 connected
n1 127.0.0.1:30001@31001,h1 myself,master - 0 0 1 connected 0-5460
`;

test("writes wait on the masters with a connected replica", () => {
  assert.deepEqual([...replicatedMasters(CLUSTER_NODES)].sort(), [
    "127.0.0.1:30001",
    "127.0.0.1:30003",
    "h1:30001",
    "h3:30003",
  ]);
  const failed = CLUSTER_NODES.replace("h6 slave", "h6 slave,fail");
  assert.deepEqual([...replicatedMasters(failed)].sort(), ["127.0.0.1:30001", "h1:30001"]);
});

test("a client kept connected connects again after an end it did not ask for, not after stop", async () => {
  // ioredis ends a Sentinel client when a failover is announced while it reconnects; here the
  // end comes from `disconnect()`, which leaves the same status.
  const server = await Server.start();
  const client = new Redis(server.url);
  client.on("error", () => {});
  const stop = keepConnected(client, 10);
  const ended = () => new Promise((r) => client.once("end", r));
  try {
    assert.equal(await client.ping(), "PONG");
    let end = ended();
    client.disconnect();
    await end;
    const deadline = Date.now() + 10_000;
    while (client.status !== "ready") {
      assert.ok(Date.now() < deadline, `still ${client.status}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(await client.ping(), "PONG");
    stop();
    end = ended();
    client.disconnect();
    await end;
    await new Promise((r) => setTimeout(r, 100)); // ten times the pause: nothing reconnects
    assert.equal(client.status, "end");
  } finally {
    stop();
    client.disconnect();
    server.stop();
  }
});
