/**
 * The cache's own connection: one write per turn, replies in order, errors to their own caller,
 * a lost connection failing what waited on it and the next command connecting again.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import Redis from "ioredis";

import { ready } from "../src/connection";
import { Multiplexed } from "../src/multiplex";
import { eventually, Server } from "./server";

let server: Server;
let admin: Redis;

before(async () => {
  server = await Server.start();
  admin = new Redis(server.url);
});

after(() => {
  admin.disconnect();
  server.stop();
});

/** An ioredis client as the cache makes it, and a connection of its own beside it. */
async function own(url = server.url, options = {}): Promise<{ redis: Redis; m: Multiplexed }> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, ...options });
  redis.on("error", () => {});
  await ready(redis);
  return { redis, m: new Multiplexed(redis) };
}

const stat = async (section: string, field: string): Promise<number> =>
  Number(new RegExp(`${field}:(\\d+)`).exec(await admin.info(section))?.[1]);

test("the commands of one turn leave in one write and are answered in order", async () => {
  const { redis, m } = await own();
  await admin.mset(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, `v${i}`])));
  assert.equal(await m.call(["PING"], true), "PONG"); // connected
  const reads = await stat("stats", "total_reads_processed");
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => m.call(["GET", `k${i}`], true)));
  assert.deepEqual(
    replies,
    Array.from({ length: 100 }, (_, i) => `v${i}`),
  );
  // The admin's INFO is one read; the hundred GETs one more (two if the kernel split them).
  // A write per command makes ~100.
  assert.ok((await stat("stats", "total_reads_processed")) - reads <= 3);
  m.close();
  redis.disconnect();
});

test("values go as bytes and come back as buffers, or as strings where asked", async () => {
  const { redis, m } = await own();
  const value = Buffer.from([0, 255, 13, 10, 36, 42, 0xc3]);
  assert.equal(await m.call(["SET", "bytes", value, "PX", 60_000], true), "OK");
  assert.deepEqual(await m.call(["GET", "bytes"], false), value);
  assert.deepEqual(await m.call(["EVAL", "return {1, 'é', redis.call('GET', KEYS[1])}", 1, "bytes"], true), [
    1,
    "é",
    value.toString(),
  ]);
  assert.equal(await m.call(["GET", "nothing here"], false), null);
  m.close();
  redis.disconnect();
});

test("an error reply goes to its own caller", async () => {
  const { redis, m } = await own();
  await admin.set("text", "not a number");
  const [a, b, c] = await Promise.allSettled([
    m.call(["SET", "n", 1], true),
    m.call(["INCR", "text"], true),
    m.call(["INCR", "n"], true),
  ]);
  assert.deepEqual(
    [a, c],
    [
      { status: "fulfilled", value: "OK" },
      { status: "fulfilled", value: 2 },
    ],
  );
  assert.equal(b.status, "rejected");
  assert.match(String((b as PromiseRejectedResult).reason.message), /^ERR value is not an integer/);
  assert.equal(await m.call(["PING"], true), "PONG"); // the connection stays
  m.close();
  redis.disconnect();
});

test("a killed connection fails what waited on it and the next command connects again", async () => {
  const { redis, m } = await own();
  await m.call(["CLIENT", "SETNAME", "mux-kill"], true);
  const connections = await stat("stats", "total_connections_received");
  const blocked = m.call(["BLPOP", "never", 0], true);
  // Sent: the server counts it before the kill.
  await eventually(async () => (await admin.info("commandstats")).includes("cmdstat_blpop"));
  await admin.client("KILL", "USER", "default", "SKIPME", "yes"); // every client but the admin
  await assert.rejects(blocked, /Connection is closed/);
  await ready(redis);
  assert.equal(await m.call(["PING"], true), "PONG");
  assert.ok((await stat("stats", "total_connections_received")) > connections);
  m.close();
  redis.disconnect();
});

test("a reply late past commandTimeout is a timeout, and the next command connects again", async () => {
  const frozen = await Server.start();
  const { redis, m } = await own(frozen.url, { commandTimeout: 200 });
  assert.equal(await m.call(["PING"], true), "PONG");
  frozen.freeze();
  try {
    const started = Date.now();
    await assert.rejects(m.call(["GET", "k"], true), /Command timed out/);
    const waited = Date.now() - started;
    assert.ok(waited >= 190 && waited < 2_000, `timed out after ${waited} ms`);
  } finally {
    frozen.thaw();
  }
  await ready(redis);
  assert.equal(await m.call(["PING"], true), "PONG");
  m.close();
  redis.disconnect();
  frozen.stop();
});

test("a server turned replica is left for a new connection", async () => {
  const other = await Server.start();
  const turned = await Server.start();
  const { redis, m } = await own(turned.url);
  assert.equal(await m.call(["SET", "k", "v"], true), "OK");
  const admin2 = new Redis(turned.url);
  const connections = Number(/total_connections_received:(\d+)/.exec(await admin2.info("stats"))?.[1]);
  await admin2.replicaof("127.0.0.1", other.port);
  await assert.rejects(m.call(["SET", "k", "w"], true), /READONLY/);
  await admin2.replicaof("NO", "ONE");
  assert.equal(await m.call(["SET", "k", "w"], true), "OK");
  // The connection made again (none if it had stayed on the replica).
  const now = Number(/total_connections_received:(\d+)/.exec(await admin2.info("stats"))?.[1]);
  assert.equal(now - connections, 1);
  m.close();
  redis.disconnect();
  admin2.disconnect();
  turned.stop();
  other.stop();
});

test("credentials and the database are the client's", async () => {
  const locked = await Server.start();
  const setup = new Redis(locked.url);
  await setup.acl("SETUSER", "app", "on", ">s3cret", "~*", "+@all");
  await setup.config("SET", "requirepass", "adminpass");
  setup.disconnect();
  const { redis, m } = await own(`redis://app:s3cret@127.0.0.1:${locked.port}/3`);
  assert.equal(await m.call(["SET", "where", "db3"], true), "OK");
  assert.equal(await m.call(["ACL", "WHOAMI"], true), "app");
  assert.equal(await redis.select(3).then(() => redis.get("where")), "db3");
  m.close();
  redis.disconnect();
  locked.stop();
});

test("over TLS, checked against the client's CA", async () => {
  // A CA and a server certificate for 127.0.0.1, by openssl (as the Rust tests make theirs).
  const dir = mkdtempSync(join(tmpdir(), "strata-tls-"));
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=ca",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
  );
  writeFileSync(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\n");
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server", "-keyout", "server.key", "-out", "server.csr");
  openssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "server.ext",
    "-out",
    "server.crt",
  );
  // TLS on the port the harness waits for; no plain port at all.
  const tls = await Server.start("redis-server", undefined, (port) => [
    "--port",
    "0",
    "--tls-port",
    String(port),
    "--tls-auth-clients",
    "no",
    "--tls-cert-file",
    join(dir, "server.crt"),
    "--tls-key-file",
    join(dir, "server.key"),
    "--tls-ca-cert-file",
    join(dir, "ca.crt"),
  ]);
  const url = `rediss://127.0.0.1:${tls.port}`;
  const { redis, m } = await own(url, { tls: { ca: readFileSync(join(dir, "ca.crt")) } });
  assert.equal(await m.call(["SET", "over", "tls"], true), "OK");
  assert.equal(await redis.get("over"), "tls");
  m.close();
  redis.disconnect();
  // Another CA's client refuses the server: what the connection checks is the client's.
  const { redis: other, m: refused } = await own(url, { tls: { ca: readFileSync(join(dir, "ca.crt")) } });
  other.options.tls = { ca: readFileSync(join(dir, "server.crt")) }; // not a CA
  await assert.rejects(refused.call(["PING"], true), /certificate|self.signed|unable to verify/i);
  refused.close();
  other.disconnect();
  tls.stop();
});

test("while the client is not ready commands fail at once; closed, it refuses them", async () => {
  const gone = await Server.start();
  const { redis, m } = await own(gone.url);
  assert.equal(await m.call(["PING"], true), "PONG");
  gone.stop();
  await eventually(() => redis.status !== "ready");
  const started = Date.now();
  await assert.rejects(m.call(["GET", "k"], true), /Connection is closed/);
  assert.ok(Date.now() - started < 100);
  m.close();
  await assert.rejects(m.call(["PING"], true), /the cache is closed/);
  redis.disconnect();
});
