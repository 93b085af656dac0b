//! One request: through its route (the public listener), or to the admin API (the admin
//! listener).

use std::net::SocketAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::admin::{Admin, is_admin};
use crate::forwarding;
use crate::proxy::RequestBody;
use crate::reply::{Reply, plain};
use crate::routes::Routes;

/// What every serving thread shares.
pub(crate) struct Handler {
    pub(crate) routes: Routes,
    pub(crate) admin: Admin,
}

impl Handler {
    /// A client's request: every path goes to its route (an upstream's own `/metrics` too).
    pub(crate) async fn public(&self, request: Request<Incoming>, peer: SocketAddr) -> Reply {
        let (mut parts, body) = request.into_parts();
        forwarding::from_client(&mut parts.headers, peer);
        let request = http::Request::from_parts(parts, RequestBody::new(body));
        self.routes.serve(request).await
    }

    /// A request on the admin listener.
    pub(crate) async fn admin(&self, request: Request<Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        if !is_admin(path) {
            return plain(
                StatusCode::NOT_FOUND,
                "the admin listener serves /_strata/ (dashboard), /_strata/purge, \
                 /_strata/health and /metrics\n",
            );
        }
        self.admin
            .handle(&parts.method, path, &parts.headers, body, &self.routes)
            .await
    }
}
