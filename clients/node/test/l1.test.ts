/** L1's eviction (S3-FIFO): bounded, a read key outlives a flood of keys read once, a key evicted
 * unread and read again comes back to stay, and a skewed stream keeps more than LRU would. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { L1, type L1Entry } from "../src/l1";

const ENTRY: L1Entry = {
  value: 1,
  negative: false,
  times: { created: 0, freshUntil: 0, expires: 0, staleUntil: 0 },
  l1Until: 0,
  tags: ["t"],
  stamp: null,
  failSafe: false,
};

test("L1 holds at most its capacity and drops what it is told", () => {
  const l1 = new L1(100);
  for (let i = 0; i < 1_000; i++) l1.insert(`k${i}`, ENTRY);
  assert.equal(l1.size, 100);
  l1.insert("x", ENTRY);
  l1.remove("x");
  assert.equal(l1.get("x"), undefined);
  l1.removeTag("t");
  assert.equal(l1.size, 0);
  const none = new L1(0);
  none.insert("k", ENTRY);
  assert.equal(none.get("k"), undefined);
});

test("an entry removed or evicted lets go of its value, though its slot waits in a queue", () => {
  const l1 = new L1(10);
  const slots = (l1 as unknown as { index: Map<string, { entry: L1Entry }> }).index;
  const removed = slots.get((l1.insert("removed", { ...ENTRY, value: "r" }), "removed"))!;
  const evicted = slots.get((l1.insert("evicted", { ...ENTRY, value: "e" }), "evicted"))!;
  l1.remove("removed");
  for (let i = 0; i < 100; i++) l1.insert(`k${i}`, ENTRY);
  assert.equal(l1.peek("evicted"), undefined);
  // Held by a dropped slot, a value lived through young-generation GCs (BENCHMARKS.md).
  assert.notEqual(removed.entry.value, "r");
  assert.notEqual(evicted.entry.value, "e");
});

test("a key read outlives a flood of keys read once", () => {
  const l1 = new L1(100);
  l1.insert("hot", ENTRY);
  assert.equal(l1.get("hot"), ENTRY);
  for (let i = 0; i < 10_000; i++) l1.insert(`scan${i}`, ENTRY); // a hundred times the room
  assert.equal(l1.get("hot"), ENTRY); // least-recently-used would have dropped it 9,900 keys ago
});

test("a key evicted unread and wanted again comes back to stay", () => {
  const l1 = new L1(100);
  l1.insert("k", ENTRY);
  for (let i = 0; i < 100; i++) l1.insert(`a${i}`, ENTRY); // full: k leaves, remembered
  assert.equal(l1.get("k"), undefined);
  l1.insert("k", ENTRY); // back from the ghost: into the main queue
  for (let i = 0; i < 50; i++) l1.insert(`b${i}`, ENTRY);
  assert.equal(l1.get("k"), ENTRY);
});

test("a skewed stream keeps more than least-recently-used would", () => {
  let seed = 5;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const keys = Array.from({ length: 200_000 }, () =>
    String(Math.min(Math.floor((1 - random()) ** (-1 / 0.4)), 100_000)),
  );
  const l1 = new L1(1_000);
  let hits = 0;
  for (const k of keys) {
    if (l1.get(k) === undefined) l1.insert(k, ENTRY);
    else hits += 1;
  }
  const lru = new Map<string, true>();
  let lruHits = 0;
  for (const k of keys) {
    if (lru.delete(k)) lruHits += 1;
    lru.set(k, true);
    if (lru.size > 1_000) lru.delete(lru.keys().next().value!);
  }
  assert.ok(hits > lruHits, `${hits} against ${lruHits}`);
});

test("under any mix of inserts, reads and removals it stays bounded and answers only what it holds", () => {
  let seed = 11;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  const l1 = new L1(50);
  const model = new Map<string, L1Entry>(); // inserted and not removed since
  for (let i = 0; i < 50_000; i++) {
    const key = `k${Math.floor(random() ** 2 * 200)}`;
    const op = random();
    if (op < 0.4) {
      const entry = { ...ENTRY, value: i };
      l1.insert(key, entry);
      model.set(key, entry);
    } else if (op < 0.9) {
      const got = l1.get(key);
      if (got !== undefined) assert.equal(got, model.get(key), key);
    } else if (op < 0.99) {
      l1.remove(key);
      model.delete(key);
    } else {
      l1.removeTag("t");
      model.clear();
    }
    assert.ok(l1.size <= 50, `${l1.size}`);
  }
});
