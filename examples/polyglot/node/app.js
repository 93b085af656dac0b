// The Express service of examples/polyglot: the same catalog as the Rust and FastAPI services,
// its cache sharing their namespace (`catalog`).
//
//     REDIS_URL=redis://127.0.0.1:6379 PORT=8003 node app.js

const express = require("express");
const Redis = require("ioredis");
const { HybridCache } = require("strata-cache");

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const PORT = Number(process.env.PORT ?? 8003);

async function main() {
  const cache = await HybridCache.connect(REDIS_URL, "catalog", { defaults: { ttl: 300_000 } });
  const db = new Redis(REDIS_URL);
  let queries = 0;

  // The database: 50 ms, then the stored product (or a made-up one never written).
  async function query(id) {
    queries += 1;
    await new Promise((r) => setTimeout(r, 50));
    const raw = await db.get(`db:product:${id}`);
    return raw === null ? { id, name: `product ${id}`, price_cents: 1000 + id } : JSON.parse(raw);
  }

  const app = express();
  app.use(express.json());
  app.get("/products/:id", async (req, res, next) => {
    try {
      const id = Number(req.params.id);
      const product = await cache.getOrLoad(`product:${id}`, () => query(id));
      res.json({ product, served_by: "node", db_queries: queries });
    } catch (e) {
      next(e);
    }
  });
  app.put("/products/:id", async (req, res, next) => {
    try {
      const id = Number(req.params.id);
      await db.set(`db:product:${id}`, JSON.stringify({ ...req.body, id }));
      await cache.invalidate(`product:${id}`);
      res.status(204).end();
    } catch (e) {
      next(e);
    }
  });
  app.listen(PORT, "127.0.0.1", () => console.log(`node catalog on http://127.0.0.1:${PORT}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
