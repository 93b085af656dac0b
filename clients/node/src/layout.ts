/** Where a namespace's keys live on one server (protocol v1, `docs/protocol.md` §1). */

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

/** The names of one namespace's keys. */
export class Layout {
  constructor(readonly namespace: string) {
    checkNamespace(namespace);
  }
  data(key: string): string {
    return `${this.namespace}:${key}`;
  }
  tag(tag: string): string {
    return `${this.namespace}#tag:${tag}`;
  }
  lease(key: string): string {
    return `${this.namespace}#lease:${key}`;
  }
  log(part: number): string {
    return part === 0 ? `${this.namespace}#log` : `${this.namespace}#log.${part}`;
  }
  logSeq(part: number): string {
    return `${this.log(part)}:seq`;
  }
  logShards(): string {
    return `${this.namespace}#log:shards`;
  }
  protocol(): string {
    return `${this.namespace}#protocol`;
  }
  filled(): string {
    return `${this.namespace}#filled`;
  }
  acks(): string {
    return `${this.namespace}#acks`;
  }
  partOf(keyOrTag: string, parts: number): number {
    return Number(fnv1a64(keyOrTag) % BigInt(parts));
  }
}
