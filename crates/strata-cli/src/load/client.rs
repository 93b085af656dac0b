//! Sends the load's requests: one pooled HTTP/1.1 client over TCP or TLS (rustls: the
//! system's CA certificates and `--cacert`), the headers and credentials given, a timeout per
//! request, the whole body read (a response is done when its last byte is).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response, whole.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why no response came.
pub(crate) struct Failure {
    /// `timeout`, `connect` or `io`.
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
}

/// The load's HTTP client.
#[derive(Clone)]
pub(crate) struct Client {
    hyper: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: HeaderMap,
    timeout: Duration,
}

/// How the client is set up.
pub(crate) struct Settings<'a> {
    /// `Name: value` lines, sent with every request.
    pub(crate) headers: &'a [String],
    /// `Authorization: Bearer …`.
    pub(crate) bearer: Option<&'a str>,
    /// `Authorization: Basic …`, from `user:password`.
    pub(crate) basic: Option<&'a str>,
    /// Per request, to its response's last byte.
    pub(crate) timeout: Duration,
    /// More CA certificates (PEM) to trust for `https://`, beside the system's.
    pub(crate) cacert: Option<&'a Path>,
}

impl Client {
    pub(crate) fn new(settings: &Settings<'_>) -> Result<Client, String> {
        let Settings {
            headers,
            bearer,
            basic,
            timeout,
            cacert,
        } = *settings;
        let mut map = HeaderMap::new();
        for line in headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("--header {line:?}: expected 'Name: value'"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                format!("--header {line:?}: {:?} is not a header name", name.trim())
            })?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("--header {line:?}: the value is not a valid header value"))?;
            map.append(name, value);
        }
        let authorization = match (bearer, basic) {
            (Some(_), Some(_)) => return Err("give --bearer or --user, not both".into()),
            (Some(token), None) => Some(format!("Bearer {token}")),
            (None, Some(user)) => {
                if !user.contains(':') {
                    return Err("--user: expected USER:PASSWORD".into());
                }
                {
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(user);
                    Some(format!("Basic {encoded}"))
                }
            }
            (None, None) => None,
        };
        if let Some(a) = authorization {
            let mut value = HeaderValue::from_str(&a)
                .map_err(|_| "the credentials are not a valid header value".to_owned())?;
            value.set_sensitive(true);
            map.insert(AUTHORIZATION, value);
        }
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        // The TLS connector hands `http://` to `tcp` as it is.
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls(cacert)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let hyper = Hyper::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            hyper,
            headers: map,
            timeout,
        })
    }

    /// Sends one request; `extra` headers go after the common ones (a purge's token).
    pub(crate) async fn send(
        &self,
        method: &Method,
        uri: Uri,
        body: Option<String>,
        extra: &HeaderMap,
    ) -> Result<Response, Failure> {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(headers) = request.headers_mut() {
            headers.extend(self.headers.clone());
            headers.extend(extra.clone());
            if body.is_some() && !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Failure {
                kind: "io",
                detail: e.to_string(),
            })?;
        let exchange = async {
            let response = self.hyper.request(request).await.map_err(|e| Failure {
                kind: if e.is_connect() { "connect" } else { "io" },
                detail: error_chain(&e),
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| Failure {
                kind: "io",
                detail: error_chain(&e),
            })?;
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure {
                    kind: "timeout",
                    detail: format!("no whole response within {:?}", self.timeout),
                })
            })
    }
}

/// TLS with ring: the system's CA certificates and those of `cacert`.
fn tls(cacert: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Certificates the system has but rustls cannot read are left out, as browsers do.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = cacert {
        let mut given = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--cacert {}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
            given += 1;
        }
        if given == 0 {
            return Err(format!(
                "--cacert {}: no PEM certificate in it",
                path.display()
            ));
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// An error and its sources: hyper's own message alone says little (`client error (Connect)`).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_headers_and_credentials_are_clear_errors() {
        let t = Duration::from_secs(1);
        for (headers, bearer, basic, says) in [
            (
                vec!["novalue".to_owned()],
                None,
                None,
                "expected 'Name: value'",
            ),
            (
                vec!["bad name: x".to_owned()],
                None,
                None,
                "is not a header name",
            ),
            (vec![], Some("t"), Some("u:p"), "not both"),
            (vec![], None, Some("user"), "USER:PASSWORD"),
        ] {
            let settings = Settings {
                headers: &headers,
                bearer,
                basic,
                timeout: t,
                cacert: None,
            };
            let err = Client::new(&settings).err().unwrap();
            assert!(err.contains(says), "{err}");
        }
    }
}
