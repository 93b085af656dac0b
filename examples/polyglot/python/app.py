"""The FastAPI service of examples/polyglot: the same catalog as the Rust and Express services,
its cache sharing their namespace (``catalog``).

    REDIS_URL=redis://127.0.0.1:6379 uvicorn app:app --port 8002
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Response
from pydantic import BaseModel

from strata_cache import EntryOptions, HybridCache

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


class Product(BaseModel):
    id: int = 0
    name: str
    price_cents: int


class State:
    cache: HybridCache
    db: aioredis.Redis
    queries = 0


state = State()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    state.cache = await HybridCache.connect(REDIS_URL, "catalog", defaults=EntryOptions(ttl=300))
    state.db = aioredis.Redis.from_url(REDIS_URL)
    yield
    await state.cache.close()
    await state.db.aclose()


app = FastAPI(lifespan=lifespan)


async def query(id: int) -> Product:
    """The database: 50 ms, then the stored product (or a made-up one never written)."""
    state.queries += 1
    await asyncio.sleep(0.05)
    raw = await state.db.get(f"db:product:{id}")
    if raw is None:
        return Product(id=id, name=f"product {id}", price_cents=1000 + id)
    return Product.model_validate(json.loads(raw))


@app.get("/products/{id}")
async def read(id: int) -> dict[str, object]:
    product = await state.cache.get_or_load(
        f"product:{id}", lambda: query(id), decode=Product.model_validate
    )
    return {"product": product, "served_by": "python", "db_queries": state.queries}


@app.put("/products/{id}", status_code=204)
async def write(id: int, product: Product) -> Response:
    product.id = id
    await state.db.set(f"db:product:{id}", product.model_dump_json())
    await state.cache.invalidate(f"product:{id}")
    return Response(status_code=204)
