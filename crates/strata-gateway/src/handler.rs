//! One request: to the admin API, or through its route.

use std::net::SocketAddr;

use http::Request;
use hyper::body::Incoming;

use crate::admin::{Admin, is_admin};
use crate::proxy::RequestBody;
use crate::reply::Reply;
use crate::routes::Routes;

/// What every serving thread shares.
pub(crate) struct Handler {
    pub(crate) routes: Routes,
    pub(crate) admin: Admin,
}

impl Handler {
    pub(crate) async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = request.uri().path();
        if is_admin(path) {
            let path = path.to_owned();
            let (parts, body) = request.into_parts();
            return self
                .admin
                .handle(&parts.method, &path, &parts.headers, body, &self.routes)
                .await;
        }
        let request = request.map(|body| RequestBody::new(body, peer));
        self.routes.serve(request).await
    }
}
