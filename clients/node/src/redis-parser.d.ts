/** The parts of `redis-parser` (ioredis's RESP parser, which ships no types) the cache uses. */
declare module "redis-parser" {
  interface Options {
    returnReply(reply: unknown): void;
    returnError(error: Error): void;
    returnFatalError?(error: Error): void;
    /** Bulk and status replies as `Buffer`s rather than strings. */
    returnBuffers?: boolean;
  }
  class RedisParser {
    constructor(options: Options);
    /** Parses `data`, calling back for each complete reply; keeps what is incomplete. */
    execute(data: Buffer): void;
  }
  export = RedisParser;
}
