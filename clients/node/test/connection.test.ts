/** URLs as the Rust crate writes them: one server, a Sentinel group's master, a cluster. */

import assert from "node:assert/strict";
import { test } from "node:test";

import Redis, { Cluster } from "ioredis";

import { connect } from "../src/connection";
import { ConfigError } from "../src/errors";

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
