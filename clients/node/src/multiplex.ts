/**
 * One connection for a cache's own commands: what a turn of the event loop asks for leaves in
 * one write, and the replies answer their callers in the order they were asked.
 *
 * Through ioredis each command cost a `Command` object (its arguments flattened, a promise and
 * its callbacks, a `toWritable` pass, a lookup of the command's flags), ~19 % of the Node W1
 * bench's time and a quarter of its busy time (BENCHMARKS.md, "The Node client on one
 * connection"). Here a command is its RESP text appended to the turn's output, `setImmediate`
 * writes the turn as one buffer in one `write` (sooner — at the end of each callback, as
 * `queueMicrotask` or `process.nextTick` would — costs more writes, more of Redis's CPU and
 * fewer operations a second: measured), and `redis-parser` — ioredis's own — parses the
 * replies, which settle the callers' promises in order.
 *
 * The server is the one the cache's ioredis client is connected to, with that client's
 * options: its host and port (on Sentinel, the master it found; after a failover, the next
 * one), TLS, credentials (`AUTH`), database (`SELECT`) and name. While that client is not
 * ready (reconnecting, a failover under way) commands fail at once, as they did through it
 * without an offline queue. An error reply rejects its own caller with ioredis's `ReplyError`;
 * a lost connection rejects every command waiting on it, and the next command connects again;
 * `commandTimeout` (if set) breaks the connection when a reply keeps the oldest command waiting
 * that long; a `READONLY` reply (a master demoted by a failover) drops the connection, and on
 * Sentinel has the client look the master up again. On a cluster, `routed.ts` keeps one per
 * master, made from that master's node client.
 */

import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";

import type Redis from "ioredis";
import RedisParser from "redis-parser";

import { Ring } from "./l1";

export type Arg = string | number | Buffer;

/** A caller waiting for its reply. */
interface Waiter {
  resolve(reply: unknown): void;
  reject(error: Error): void;
  /** Bulk and status replies as strings (ioredis's `evalsha`), else as `Buffer`s (`evalshaBuffer`). */
  strings: boolean;
  /** When it was sent (`Date.now()`), for `commandTimeout`. */
  at: number;
}

/** A connection's failure, as ioredis words it. */
const closed = (): Error => new Error("Connection is closed.");

export class Multiplexed {
  private link: Link | null = null;
  private closed = false;

  constructor(private readonly redis: Redis) {}

  /** Sends one command; its reply as ioredis gives it (`strings`: bulk replies as strings). */
  call(args: Arg[], strings: boolean): Promise<unknown> {
    let link = this.link;
    if (link === null || link.broken) {
      if (this.closed) return Promise.reject(new Error("the cache is closed"));
      // Not ready: a reconnection or a failover is under way. Fail now, as ioredis does
      // without an offline queue, rather than wait out its back-off.
      if (this.redis.status !== "ready") return Promise.reject(closed());
      link = this.link = new Link(this.open(), this.redis.options.commandTimeout, (demoted) => {
        // A demoted master: on Sentinel, have the client find the new one.
        if (demoted && this.redis.options.sentinels) this.redis.disconnect(true);
      });
    }
    return link.send(args, strings);
  }

  /** Closes the connection; commands still waiting fail. */
  close(): void {
    this.closed = true;
    this.link?.break(new Error("the cache is closed"));
    this.link = null;
  }

  /** A socket to the server the client is connected to, its handshake written first. */
  private open(): { socket: Socket; handshake: Arg[][] } {
    const o = this.redis.options;
    let host = o.host ?? "localhost";
    let port = o.port ?? 6379;
    if (o.sentinels) {
      // The master Sentinel named to the client, where the client's own socket goes.
      host = this.redis.stream.remoteAddress ?? host;
      port = this.redis.stream.remotePort ?? port;
    }
    const socket: Socket = o.path
      ? netConnect(o.path)
      : o.tls
        ? // As ioredis connects (`tls: true` for a `rediss://` URL): its TLS options over the address.
          tlsConnect({ host, port, ...(typeof o.tls === "object" ? o.tls : {}) })
        : netConnect({ host, port });
    socket.setNoDelay(o.noDelay ?? true);
    if (o.keepAlive !== undefined) socket.setKeepAlive(true, o.keepAlive);
    const handshake: Arg[][] = [];
    if (o.password) handshake.push(o.username ? ["AUTH", o.username, o.password] : ["AUTH", o.password]);
    if (o.db) handshake.push(["SELECT", o.db]);
    if (o.connectionName) handshake.push(["CLIENT", "SETNAME", o.connectionName]);
    return { socket, handshake };
  }
}

/** One socket's life: its commands in flight and its reply parser. */
class Link {
  broken = false;
  private readonly socket: Socket;
  private readonly waiters = new Ring<Waiter>();
  /** The turn's output: text, and the `Buffer` arguments between it. */
  private out: (string | Buffer)[] = [];
  private text = "";
  private flushing = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    opened: { socket: Socket; handshake: Arg[][] },
    private readonly timeout: number | undefined,
    private readonly onBreak: (demoted: boolean) => void,
  ) {
    this.socket = opened.socket;
    const parser = new RedisParser({
      returnBuffers: true,
      returnReply: (reply: unknown) => this.settle(reply),
      returnError: (error: Error) => this.fail(error),
      returnFatalError: (error: Error) => this.break(error),
    });
    this.socket.on("data", (data: Buffer) => parser.execute(data));
    this.socket.on("error", (error: Error) => this.break(error));
    this.socket.on("close", () => this.break(closed()));
    // A refused handshake (a wrong password) fails the connection and all it carries.
    for (const command of opened.handshake) this.send(command, true).catch((e: Error) => this.break(e));
  }

  send(args: Arg[], strings: boolean): Promise<unknown> {
    if (this.broken) return Promise.reject(closed());
    let t = `${this.text}*${args.length}\r\n`;
    for (const a of args) {
      if (typeof a === "string") t += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
      else if (typeof a === "number") {
        const s = String(a);
        t += `$${s.length}\r\n${s}\r\n`;
      } else {
        this.out.push(`${t}$${a.length}\r\n`, a);
        t = "\r\n";
      }
    }
    this.text = t;
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(this.flush);
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject, strings, at: this.timeout === undefined ? 0 : Date.now() });
      if (this.timeout !== undefined && this.timer === null) this.watch(this.timeout);
    });
  }

  /** Fails every command waiting and closes the socket (the first failure wins). */
  break(error: Error): void {
    if (this.broken) return;
    this.broken = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.socket.destroy();
    for (let w = this.waiters.shift(); w !== undefined; w = this.waiters.shift()) w.reject(error);
    this.onBreak(error.message.startsWith("READONLY"));
  }

  /** Writes the turn's commands as one buffer: one `write` (Node's `writev` of many chunks cost twice as much). */
  private readonly flush = (): void => {
    this.flushing = false;
    if (this.broken) return;
    const out = this.out;
    if (this.text !== "") out.push(this.text);
    this.out = [];
    this.text = "";
    let bytes = 0;
    for (const chunk of out) bytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
    const buffer = Buffer.allocUnsafe(bytes);
    let at = 0;
    for (const chunk of out) at += typeof chunk === "string" ? buffer.write(chunk, at) : chunk.copy(buffer, at);
    this.socket.write(buffer);
  };

  private settle(reply: unknown): void {
    const w = this.waiters.shift();
    if (w === undefined) return this.break(new Error("a reply no command asked for"));
    w.resolve(w.strings ? asStrings(reply) : reply);
  }

  private fail(error: Error): void {
    const w = this.waiters.shift();
    if (w === undefined) return this.break(error);
    w.reject(error);
    // The server is a replica now: its answers to writes would all be this.
    if (error.message.startsWith("READONLY")) this.break(error);
  }

  /** Breaks the connection once a reply has kept the oldest command waiting `timeout` ms. */
  private watch(after: number): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      const oldest = this.waiters.peek();
      if (oldest === undefined || this.broken) return;
      const waited = Date.now() - oldest.at;
      if (waited >= this.timeout!) this.break(new Error("Command timed out"));
      else this.watch(this.timeout! - waited);
    }, after);
    this.timer.unref();
  }
}

/** A reply with its bulk and status strings decoded, as ioredis's string commands return it. */
function asStrings(reply: unknown): unknown {
  if (Buffer.isBuffer(reply)) return reply.toString();
  if (Array.isArray(reply)) return reply.map(asStrings);
  return reply;
}
