//! Without the `cluster` feature: a cluster connection that cannot exist. The code that
//! handles one compiles unchanged and is never reached (no `redis+cluster://` URL parses).

use redis::aio::ConnectionLike;
use redis::cluster_routing::RoutingInfo;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Uninhabited: there is no value of it.
#[derive(Clone)]
pub(crate) enum ClusterConnection {}

impl ClusterConnection {
    pub(crate) async fn route_command(
        &mut self,
        _cmd: Cmd,
        _routing: RoutingInfo,
    ) -> RedisResult<Value> {
        match *self {}
    }
}

impl ConnectionLike for ClusterConnection {
    fn req_packed_command<'a>(&'a mut self, _cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match *self {}
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _pipeline: &'a Pipeline,
        _offset: usize,
        _count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match *self {}
    }

    fn get_db(&self) -> i64 {
        match *self {}
    }
}
