//! Another service, read over HTTP (JSON), with a deadline per call and a circuit breaker.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use strata::{BreakerConfig, BreakerError, CircuitBreaker};

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Not reachable, no answer in time, or its circuit breaker is open.
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
    breaker: CircuitBreaker,
}

impl Remote {
    /// `caller`'s view of `service` at `base`. Each call gives up after `deadline`; after 3
    /// failed or slow calls in a row the breaker opens for 2 s: calls then fail at once (the
    /// caller's cache answers with what it last knew) until a probe gets through.
    /// `strata_breaker_state{namespace=caller, target=service}` shows it.
    pub fn new(caller: &str, service: &'static str, base: &str, deadline: Duration) -> Remote {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(deadline));
        connector.set_nodelay(true);
        let breaker = BreakerConfig::default()
            .consecutive_failures(3)
            .slow_call(deadline)
            .open_for(Duration::from_secs(2));
        Remote {
            service,
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            deadline,
            breaker: CircuitBreaker::new(caller, service, breaker),
        }
    }

    /// `GET path` as JSON; `Ok(None)` for a 404.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, RemoteError> {
        self.fetch(path, None).await
    }

    /// `GET path` as JSON on behalf of `user` (sent as `X-User-Id`, as the gateway's auth
    /// would); `Ok(None)` for a 404.
    pub async fn get_for<T: DeserializeOwned>(
        &self,
        path: &str,
        user: i64,
    ) -> Result<Option<T>, RemoteError> {
        self.fetch(path, Some(user)).await
    }

    /// The breaker's state now.
    pub fn breaker(&self) -> strata::BreakerState {
        self.breaker.state()
    }

    async fn fetch<T: DeserializeOwned>(
        &self,
        path: &str,
        user: Option<i64>,
    ) -> Result<Option<T>, RemoteError> {
        let unreachable = |reason: String| RemoteError::Unreachable {
            service: self.service,
            reason,
        };
        let bad = |reason: String| RemoteError::BadAnswer {
            service: self.service,
            reason,
        };
        let mut request = Request::get(format!("{}{path}", self.base));
        if let Some(user) = user {
            request = request.header("x-user-id", user);
        }
        let mut request = request.body(Empty::new()).map_err(|e| bad(e.to_string()))?;
        crate::trace::inject(request.headers_mut());
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
            // A 5xx says the service is unwell (the breaker counts it); any other answer,
            // even a refusal, says it is up.
            if status.is_server_error() {
                return Err(bad(format!("status {status}")));
            }
            Ok((status, body))
        };
        let deadline = async {
            tokio::time::timeout(self.deadline, call)
                .await
                .map_err(|_| unreachable(format!("no answer within {:?}", self.deadline)))?
        };
        let (status, body) = self.breaker.call(deadline).await.map_err(|e| match e {
            BreakerError::Open => unreachable("circuit breaker open".to_owned()),
            BreakerError::Failed(e) => e,
        })?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| bad(e.to_string())),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(bad(format!("status {other}"))),
        }
    }
}
