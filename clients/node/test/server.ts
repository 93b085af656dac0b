/** A real `redis-server` on a free loopback port, killed when the tests end. */

import { type ChildProcess, spawn } from "node:child_process";
import { createServer, Socket } from "node:net";

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
