/**
 * Where a namespace's keys live, on one server and on a Redis Cluster (protocol v1,
 * `docs/protocol.md` §1).
 *
 * On a cluster a script may only touch keys of one slot: a value's refresh lease carries a hash
 * tag that puts it in the value's slot, and the namespace-wide keys that change together share
 * the slot of `{<namespace>}`; data keys and tag indexes keep their one-server names.
 */

const NAMESPACE = /^[A-Za-z0-9_.-]{1,128}$/;

export const MAX_LOG_SHARDS = 64;

/**
 * Throws unless `namespace` is 1–128 characters of `[A-Za-z0-9_.-]`: neither `:` nor `#`, so
 * no namespace can name another's keys.
 */
export function checkNamespace(namespace: string): void {
  if (!NAMESPACE.test(namespace)) {
    throw new RangeError(`namespace ${JSON.stringify(namespace)}: 1 to 128 characters of A-Z a-z 0-9 _ . - expected`);
  }
}

/** FNV-1a, 64-bit, over the UTF-8 bytes: which part of a split log a key's or tag's entries go to. */
export function fnv1a64(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(text)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

const SLOTS = 16384;

const CRC16 = (() => {
  const table = new Uint16Array(256);
  for (let byte = 0; byte < 256; byte++) {
    let crc = byte << 8;
    for (let i = 0; i < 8; i++) crc = (crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1) & 0xffff;
    table[byte] = crc;
  }
  return table;
})();

/**
 * The slot Redis hashes `key` to: CRC16 (XMODEM) of its hash tag — what lies between the first
 * `{` and the next `}`, if not empty — or of the whole key, modulo 16,384.
 */
export function slotOf(key: string): number {
  let raw = Buffer.from(key);
  const start = raw.indexOf(0x7b);
  if (start >= 0) {
    const end = raw.indexOf(0x7d, start + 1);
    if (end > start + 1) raw = raw.subarray(start + 1, end);
  }
  let crc = 0;
  for (const byte of raw) crc = ((crc << 8) & 0xffff) ^ CRC16[((crc >> 8) ^ byte) & 0xff]!;
  return crc % SLOTS;
}

let TAGS: Map<number, string> | null = null;

/**
 * For `slot`, the first of `0`, `1`, …, `z`, `01`, … (`n` = 0, 1, … in base 36, least
 * significant digit first) that hashes to it — as the Rust crate picks them.
 */
export function tagFor(slot: number): string {
  if (TAGS === null) {
    const digits = "0123456789abcdefghijklmnopqrstuvwxyz";
    const tags = new Map<number, string>();
    for (let n = 0; tags.size < SLOTS; n++) {
      let m = n;
      let tag = "";
      do {
        tag += digits[m % 36];
        m = Math.floor(m / 36);
      } while (m !== 0);
      const s = slotOf(tag);
      if (!tags.has(s)) tags.set(s, tag);
    }
    TAGS = tags;
  }
  return TAGS.get(slot) ?? "0";
}

/** The names of one namespace's keys, on one server or (`cluster`) on a Redis Cluster. */
export class Layout {
  constructor(
    readonly namespace: string,
    readonly cluster = false,
  ) {
    checkNamespace(namespace);
  }
  private wide(name: string): string {
    return this.cluster ? `${name}{${this.namespace}}` : name;
  }
  data(key: string): string {
    return `${this.namespace}:${key}`;
  }
  tag(tag: string): string {
    return `${this.namespace}#tag:${tag}`;
  }
  lease(key: string): string {
    if (!this.cluster) return `${this.namespace}#lease:${key}`;
    if (key.includes("{") || key.includes("}")) {
      return `${this.namespace}#lease:{${tagFor(slotOf(this.data(key)))}}${key}`;
    }
    return `${this.namespace}#lease:{${this.namespace}:${key}}`;
  }
  log(part: number, parts = 1): string {
    return part === 0 ? this.wide(`${this.namespace}#log`) : this.part(`${this.namespace}#log.${part}`, part, parts);
  }
  logSeq(part: number, parts = 1): string {
    return part === 0
      ? this.wide(`${this.namespace}#log:seq`)
      : this.part(`${this.namespace}#log.${part}:seq`, part, parts);
  }
  private part(name: string, part: number, parts: number): string {
    if (!this.cluster) return name;
    const home = slotOf(`{${this.namespace}}`);
    return `${name}{${tagFor((home + Math.floor((part * SLOTS) / parts)) % SLOTS)}}`;
  }
  logShards(): string {
    return this.wide(`${this.namespace}#log:shards`);
  }
  protocol(): string {
    return this.wide(`${this.namespace}#protocol`);
  }
  filled(): string {
    return this.wide(`${this.namespace}#filled`);
  }
  acks(): string {
    return this.wide(`${this.namespace}#acks`);
  }
  partOf(keyOrTag: string, parts: number): number {
    return Number(fnv1a64(keyOrTag) % BigInt(parts));
  }
}
