//! Another service, read over HTTP (JSON), with a deadline per call.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Not reachable, or no answer in time.
    #[error("{service} unreachable: {reason}")]
    Unreachable {
        /// The service called.
        service: &'static str,
        /// What happened.
        reason: String,
    },
    /// It answered with an error status or a body that is not what was asked for.
    #[error("{service} answered badly: {reason}")]
    BadAnswer {
        /// The service called.
        service: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// A service reached at `base` (`http://host:port`).
#[derive(Clone, Debug)]
pub struct Remote {
    service: &'static str,
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    deadline: Duration,
}

impl Remote {
    /// `service` at `base`; each call gives up after `deadline`.
    pub fn new(service: &'static str, base: &str, deadline: Duration) -> Remote {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(deadline));
        connector.set_nodelay(true);
        Remote {
            service,
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            deadline,
        }
    }

    /// `GET path` as JSON; `Ok(None)` for a 404.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, RemoteError> {
        let unreachable = |reason: String| RemoteError::Unreachable {
            service: self.service,
            reason,
        };
        let bad = |reason: String| RemoteError::BadAnswer {
            service: self.service,
            reason,
        };
        let request = Request::get(format!("{}{path}", self.base))
            .body(Empty::new())
            .map_err(|e| bad(e.to_string()))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, RemoteError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.deadline, call)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.deadline)))??;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| bad(e.to_string())),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(bad(format!("status {other}"))),
        }
    }
}
