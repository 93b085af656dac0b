/** The part of `cluster-key-slot` (ioredis's slot hashing, which ships no types) the cache uses. */
declare module "cluster-key-slot" {
  /** The cluster slot of `key` (CRC16 of its hash tag or whole key, modulo 16,384). */
  function calculateSlot(key: string | Buffer): number;
  export = calculateSlot;
}
