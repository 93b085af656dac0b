/** A real `redis-server` on a free loopback port, killed when the tests end; test helpers. */

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach } from "node:test";

import Redis from "ioredis";

/** Waits until `check` holds, polling every 5 ms; fails the test past `within` ms. */
export async function eventually(check: () => boolean | Promise<boolean>, within = 10_000): Promise<void> {
  const deadline = Date.now() + within;
  while (!(await check())) {
    if (Date.now() >= deadline) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A server for the calling file's tests — started before them, emptied before each, stopped
 * after — and a plain client of it (set once the tests start).
 */
export function onServer(): { server: Server; redis: Redis } {
  const env = {} as { server: Server; redis: Redis };
  before(async () => {
    env.server = await Server.start();
    env.redis = new Redis(env.server.url);
  });
  after(() => {
    env.redis.disconnect();
    env.server.stop();
  });
  beforeEach(async () => {
    await env.redis.flushall();
  });
  return env;
}

export class Server {
  private constructor(
    readonly port: number,
    private readonly process: ChildProcess,
  ) {}

  /**
   * `program`: another server binary than `redis-server` from PATH (Valkey, for `IFEQ`);
   * `port`: a given one (a restart where a killed server was) rather than a free one;
   * `more`: further arguments, given the port (which they may take for TLS).
   */
  static async start(
    program = "redis-server",
    port?: number,
    more: (port: number) => string[] = () => [],
  ): Promise<Server> {
    port ??= await freePort();
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...more(port)];
    const child = spawn(program, args, { stdio: "ignore" });
    const deadline = Date.now() + 10_000;
    while (!(await reachable(port))) {
      if (Date.now() > deadline) throw new Error("redis-server did not start (./scripts/test installs it)");
      await new Promise((r) => setTimeout(r, 20));
    }
    return new Server(port, child);
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.process.kill("SIGKILL");
  }

  /** Freezes the server (SIGSTOP): its sockets stay open and nothing answers. */
  freeze(): void {
    this.process.kill("SIGSTOP");
  }

  /** Thaws a frozen server (SIGCONT). */
  thaw(): void {
    this.process.kill("SIGCONT");
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
    socket.connect(port, "127.0.0.1");
  });
}

/** A Redis Cluster on loopback (`scripts/redis-cluster`): 3 masters, a replica each, node timeout 1 s. */
export class RedisCluster {
  private constructor(
    readonly url: string,
    private readonly dir: string,
  ) {}

  static async start(): Promise<RedisCluster> {
    const script = join(__dirname, "..", "..", "..", "..", "scripts", "redis-cluster");
    const dir = mkdtempSync(join(tmpdir(), "strata-cluster-"));
    for (let attempt = 0; attempt < 20; attempt++) {
      // A node also listens on its port + 10,000 (the cluster bus): both below the kernel's
      // ephemeral range (32,768 on), where outgoing connections take theirs.
      const base = 15_000 + Math.floor(Math.random() * 7_000);
      const ports = [0, 1, 2, 3, 4, 5].flatMap((i) => [base + i, base + 10_000 + i]);
      if (!(await Promise.all(ports.map(isFree))).every(Boolean)) continue;
      const env = { ...process.env, STRATA_CLUSTER_DIR: join(dir, "nodes") };
      const up = spawnSync(script, ["up", "--port", String(base), "--node-timeout", "1000"], { env });
      if (up.status === 0) return new RedisCluster(up.stdout.toString().trim().split("\n").at(-1)!, dir);
      spawnSync(script, ["down"], { env });
      if (!up.stderr.toString().includes("is taken")) {
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`redis-cluster up: ${up.stderr}`);
      }
    }
    rmSync(dir, { recursive: true, force: true });
    throw new Error("no six free ports in a row for a cluster");
  }

  /** The pid of the node on `port`. */
  pid(port: number): number {
    return Number(readFileSync(join(this.dir, "nodes", String(port), "redis.pid"), "utf8"));
  }

  stop(): void {
    const script = join(__dirname, "..", "..", "..", "..", "scripts", "redis-cluster");
    spawnSync(script, ["down"], { env: { ...process.env, STRATA_CLUSTER_DIR: join(this.dir, "nodes") } });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}
