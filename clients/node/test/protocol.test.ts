/**
 * The bytes and names of protocol v1, checked against the examples of docs/protocol.md (the
 * same examples the Rust crates and the Python client check), and the decoder against hostile input.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { ackValue, parseAck } from "../src/acks";
import * as envelope from "../src/envelope";
import { FillBatch, MOST_BYTES, MOST_FILLS, outcomeOf } from "../src/fill-batch";
import { parseInvalidation, wire } from "../src/follower";
import { checkNamespace, Layout } from "../src/layout";

const DOC = readFileSync(join(__dirname, "..", "..", "..", "..", "docs", "protocol.md"), "utf8");

function example(name: string): string[] {
  const m = new RegExp(`<!-- checked: ${name} -->\\n([\\s\\S]*?)<!-- end -->`).exec(DOC);
  assert.ok(m, `no example ${name} in docs/protocol.md`);
  return m[1]!.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("```"));
}

const hex = (lines: string[]) => lines.map((l) => Buffer.from(l.replace(/ /g, ""), "hex"));

test("the envelope is the document's, byte for byte", () => {
  const created = 1_700_000_000_000;
  const times = { created, freshUntil: created + 60_000, expires: created + 120_000, staleUntil: created + 300_000 };
  const ours = envelope.encode(
    { id: 42, name: "teapot" },
    {
      negative: false,
      times,
      stamp: 0x0123456789abcdefn,
      loadMs: 12,
      tags: ["product:42"],
      codec: envelope.JSON_CODEC,
    },
  );
  assert.deepEqual(ours, Buffer.concat(hex(example("envelope"))));
  const back = envelope.decode(ours);
  assert.deepEqual(
    [back.value, back.times, back.tags, back.loadMs],
    [{ id: 42, name: "teapot" }, times, ["product:42"], 12],
  );
});

test("lease records are the document's", () => {
  const [plain, waited] = hex(example("lease"));
  assert.deepEqual(envelope.leaseRecord(0x1122334455667788n), plain);
  assert.equal(envelope.leaseHolder(plain!), 0x1122334455667788n);
  assert.equal(envelope.leaseHolder(waited!), 0x1122334455667788n);
  assert.equal(envelope.leaseHolder(Buffer.concat([plain!, Buffer.from("X")])), null);
  assert.ok(envelope.leaseWaited(waited!) && !envelope.leaseWaited(plain!));
  assert.ok(!envelope.leaseWaited(Buffer.concat([plain!, Buffer.from("X")])));
});

test("log entries are the document's", () => {
  const [key, tag, clear] = example("invalidations");
  assert.equal(wire({ origin: 0xdeadbeefn, op: "key", arg: "product:42" }), key);
  assert.equal(wire({ origin: 0xdeadbeefn, op: "tag", arg: "category:7" }), tag);
  assert.equal(wire({ origin: 0xdeadbeefn, op: "clear", arg: null }), clear);
  assert.deepEqual(parseInvalidation(Buffer.from('{"origin":"00000000deadbeef","op":"clear"}')), {
    origin: 0xdeadbeefn,
    op: "clear",
    arg: null,
  });
  for (const foreign of [
    "",
    "[]",
    '{"origin":"x","op":"key","arg":"k"}',
    '{"origin":"00000000deadbeef","op":"key","arg":"k","extra":1}',
  ]) {
    assert.equal(parseInvalidation(Buffer.from(foreign)), null, foreign);
  }
});

test("keys and log parts are the document's, on one server and on a cluster", () => {
  const rows = example("keys").filter((r) => r.startsWith("| ") && r.includes("`"));
  for (const [column, layout] of [
    [2, new Layout("catalog")],
    [3, new Layout("catalog", true)],
  ] as const) {
    const names: Record<string, string> = {
      "data|product:42": layout.data("product:42"),
      "tag|category:7": layout.tag("category:7"),
      "lease|product:42": layout.lease("product:42"),
      "lease|x{y}": layout.lease("x{y}"),
      "log|": layout.log(0),
      "log sequence|": layout.logSeq(0),
      "log part 1 of 3|": layout.log(1, 3),
      "log part 1 of 3, sequence|": layout.logSeq(1, 3),
      "log parts|": layout.logShards(),
      "protocol version|": layout.protocol(),
      "filled|": layout.filled(),
      "acks|": layout.acks(),
    };
    let checked = 0;
    for (const row of rows) {
      const cells = row
        .replace(/^\||\|$/g, "")
        .split("|")
        .map((c) => c.trim().replace(/`/g, ""));
      const ours = names[`${cells[0]}|${cells[1]}`];
      if (ours !== undefined) {
        assert.equal(ours, cells[column], `${cells[0]} (${column})`);
        checked += 1;
      }
    }
    assert.equal(checked, Object.keys(names).length);
  }
  const layout = new Layout("catalog");
  assert.deepEqual(
    ["product:42", "product:43", "product:47"].map((k) => layout.partOf(k, 3)),
    [0, 1, 2],
  );
});

test("namespaces cannot name each other", () => {
  for (const bad of ["", "a:b", "a#b", "a b", "x".repeat(129), "é"]) assert.throws(() => checkNamespace(bad));
  checkNamespace("catalog-v2.eu_1");
});

test("a newer format, an unknown codec or flag is refused", () => {
  const good = Buffer.concat(hex(example("envelope")));
  for (const [offset, byte] of [
    [3, 2],
    [4, 9],
    [5, 0x80],
  ] as const) {
    const bad = Buffer.from(good);
    bad[offset] = byte;
    assert.throws(() => envelope.decode(bad), envelope.DecodeError);
  }
  assert.throws(() => envelope.decode(good.subarray(0, 60)), envelope.DecodeError);
});

test("random and mutated bytes never throw anything but DecodeError", () => {
  let seed = 42;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
  const good = Buffer.concat(hex(example("envelope")));
  for (let i = 0; i < 20_000; i++) {
    let data: Buffer;
    if (i % 2) {
      data = Buffer.from(Array.from({ length: rand(80) }, () => rand(256)));
    } else {
      const m = Buffer.from(good);
      for (let j = 0, n = 1 + rand(3); j < n; j++) m[rand(m.length)] = rand(256);
      data = m.subarray(0, rand(m.length + 1));
    }
    try {
      envelope.decode(data);
    } catch (e) {
      assert.ok(e instanceof envelope.DecodeError, `${(e as Error).name}: ${(e as Error).message}`);
    }
  }
});

test("the documented acknowledgement reads as documented", () => {
  const said = DOC.split(/\s+/).join(" ");
  assert.ok(
    said.includes(
      '`1700000003000:17,4` says "alive until 1,700,000,003,000; applied part 0 up to 17 and part 1 up to 4"',
    ),
  );
  assert.equal(ackValue(1_700_000_003_000, [17n, 4n]), "1700000003000:17,4");
  assert.deepEqual(parseAck("1700000003000:17,4", 0), [1_700_000_003_000, 17n]);
  assert.deepEqual(parseAck("1700000003000:17,4", 1), [1_700_000_003_000, 4n]);
  assert.deepEqual(parseAck("1700000003000:17,4", 2), [1_700_000_003_000, 0n]);
  assert.equal(parseAck("1700000003000", 0), null);
  assert.equal(parseAck("x:1", 0), null);
  assert.equal(parseAck("-1:1", 0), null);
  assert.equal(parseAck("1: 2", 0), null);
});

test("a call of several fills answers each in its two bits", () => {
  // docs/protocol.md §5: key i at 4^(i-1); 26 keys stay exact (52 bits).
  const answer = 1 + 2 * 4 + 0 * 16 + 1 * 64;
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => outcomeOf(answer, i)),
    [1, 2, 0, 1],
  );
  const last = 2 * 4 ** 25;
  assert.equal(outcomeOf(last + 1, 25), 2);
  assert.equal(outcomeOf(last + 1, 0), 1);
});

test("fills wait for one of two calls on their way, and a full queue goes at once", async () => {
  const calls: number[] = [];
  const answers: ((n: number) => void)[] = [];
  const batch = new FillBatch(
    (keys, args) => {
      assert.equal(keys.pop(), "ns#filled"); // after the data keys: the script announces
      calls.push(keys.length);
      assert.equal(args.length, 3 * keys.length + 1); // value, TTL, record each; then the lease TTL
      assert.equal(args[args.length - 1], 10_000);
      return new Promise((r) => answers.push(r));
    },
    10_000,
    "ns#filled",
  );
  const fill = (i: number, bytes = 10) =>
    batch.fill({ data: `k${i}`, payload: Buffer.alloc(bytes), px: 1000, record: Buffer.alloc(12) });
  const first = [fill(0), fill(1)];
  const queued = Array.from({ length: MOST_FILLS - 1 }, (_, i) => fill(2 + i));
  assert.deepEqual(calls, [1, 1]); // two alone; the rest wait
  const full = fill(99); // the queue reaches its bound: sent at once
  assert.deepEqual(calls, [1, 1, MOST_FILLS]);
  const big = fill(100, MOST_BYTES); // its bytes alone reach the bound
  assert.deepEqual(calls, [1, 1, MOST_FILLS, 1]);
  answers[0]!(1);
  answers[1]!(2);
  answers[2]!(0);
  answers[3]!(1);
  assert.deepEqual(await Promise.all([...first, full, big]), [1, 2, 0, 1]); // each its own answer
  assert.ok((await Promise.all(queued)).every((o) => o === 0));
  const late = fill(101); // nothing on its way now: alone
  assert.deepEqual(calls, [1, 1, MOST_FILLS, 1, 1]);
  const [second, third] = [fill(102), fill(103)]; // the second on its way, the third waits
  const waitedOn = batch.fill({ data: "k104", payload: Buffer.alloc(1), px: 1, record: Buffer.alloc(12) }, true);
  assert.deepEqual(calls, [1, 1, MOST_FILLS, 1, 1, 1, 1]); // at once, alone, past the third
  answers[4]!(1);
  answers[5]!(0);
  answers[6]!(1);
  assert.deepEqual(await Promise.all([late, second, waitedOn]), [1, 0, 1]);
  assert.deepEqual(calls, [1, 1, MOST_FILLS, 1, 1, 1, 1, 1]); // the third, once one was answered
  answers[7]!(1);
  assert.equal(await third, 1);
});

test("on a cluster each fill goes alone, whatever is on its way, and its caller announces", async () => {
  const calls: string[][] = [];
  const batch = new FillBatch(
    (keys) => {
      calls.push(keys);
      return Promise.resolve(2);
    },
    10_000,
    null,
  );
  const fill = (i: number) =>
    batch.fill({ data: `k${i}`, payload: Buffer.alloc(4), px: 1000, record: Buffer.alloc(12) });
  const outcomes = await Promise.all([0, 1, 2, 3].map(fill));
  assert.deepEqual(calls, [["k0"], ["k1"], ["k2"], ["k3"]]); // one key a call: no slot shared
  assert.deepEqual(outcomes, [2, 2, 2, 2]); // the callers announce
});
