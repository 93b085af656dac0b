//! Integration tests of the HTTP cache layer: an axum app as the origin, the layer in front,
//! a real `redis-server` where instances share the cache.

mod harness;
mod layer;
mod origin;
mod shared;
