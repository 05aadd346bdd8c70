//! The API client of controllers, the scheduler and agents, with two
//! transports: in-process (requests go through the same router as HTTPS
//! clients — authn, RBAC, admission, validation — without a socket or TLS
//! hop) and remote (HTTPS to a server URL with the CA pinned and a client
//! certificate, pooled connections, streaming watch bodies, timeouts). A
//! remote client may know several servers of one control plane: a request
//! that cannot connect to the current one is sent to the next, which then
//! stays current (the agents' failover between HA servers).

use super::authn::UserInfo;
use super::catalog::ResourceInfo;
use super::error::{ApiError, Reason};
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tower::ServiceExt;

/// How long a remote request may take to connect (TCP + TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a remote request may take until its whole answer arrived (a
/// watch: until its response headers arrived).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a remote client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read the {what} PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid TLS settings for the API client")]
    Tls(#[from] rustls::Error),
}

/// Whom the remote client trusts to be the server.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Only certificates signed by this CA (PEM): the normal case.
    Pinned(String),
    /// Any certificate. Only for fetching `/cacerts` before its hash is checked
    /// against the join token; nothing secret may be sent this way.
    Unverified,
}

/// Where and how a remote client talks to the API server.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// `https://host:port`, no path.
    pub server: String,
    pub trust: ServerTrust,
    /// The client certificate and key (PEM) that name the user.
    pub identity: Option<(String, String)>,
    /// A fixed `Authorization` header (the join token's Basic auth).
    pub authorization: Option<String>,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

struct Remote {
    servers: ServerList,
    http: HyperClient<Https, Full<Bytes>>,
    authorization: Option<HeaderValue>,
}

/// The URLs of the servers a remote client may use, and which one is current.
struct ServerList {
    urls: RwLock<Arc<Vec<String>>>,
    current: AtomicUsize,
}

impl ServerList {
    fn new(url: String) -> ServerList {
        ServerList { urls: RwLock::new(Arc::new(vec![url])), current: AtomicUsize::new(0) }
    }

    fn urls(&self) -> Arc<Vec<String>> {
        match self.urls.read() {
            Ok(urls) => urls.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current server's URL (for messages).
    fn current(&self) -> String {
        let urls = self.urls();
        urls.get(self.current.load(Ordering::Relaxed) % urls.len().max(1)).cloned().unwrap_or_default()
    }

    /// Replaces the list, keeping the current server current when it is still listed.
    fn replace(&self, urls: Vec<String>) {
        let current = self.current();
        let index = urls.iter().position(|url| *url == current).unwrap_or(0);
        match self.urls.write() {
            Ok(mut slot) => *slot = Arc::new(urls),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(urls),
        }
        self.current.store(index, Ordering::Relaxed);
    }
}

/// A server URL as the remote client needs it: `https://HOST:PORT`, no path.
fn server_url(url: &str) -> Result<String, ClientError> {
    let server = url.trim_end_matches('/').to_string();
    let url_error = |reason: &str| ClientError::Url { url: url.to_string(), reason: reason.to_string() };
    let uri: http::Uri = server.parse().map_err(|_| url_error("expected https://HOST:PORT"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(url_error("expected https://HOST:PORT"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(url_error("the URL must not have a path"));
    }
    Ok(server)
}

#[derive(Clone)]
enum Transport {
    InProcess { router: Router, user: UserInfo },
    Remote(Arc<Remote>),
}

#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

/// The REST path of a resource collection or object.
pub fn path(res: &ResourceInfo, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>) -> String {
    let mut path = if res.group.is_empty() {
        format!("/api/{}", res.version)
    } else {
        format!("/apis/{}/{}", res.group, res.version)
    };
    if let Some(ns) = namespace.filter(|_| res.namespaced) {
        path.push_str(&format!("/namespaces/{ns}"));
    }
    path.push('/');
    path.push_str(&res.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    if let Some(sub) = sub {
        path.push('/');
        path.push_str(sub);
    }
    path
}

/// The error a Status response body describes.
fn status_error(code: u16, body: &Value) -> ApiError {
    let message = body.get("message").and_then(Value::as_str).unwrap_or("request failed").to_string();
    let reason = match code {
        404 => Reason::NotFound,
        409 if body.get("reason").and_then(Value::as_str) == Some("AlreadyExists") => Reason::AlreadyExists,
        409 => Reason::Conflict,
        401 => Reason::Unauthorized,
        403 => Reason::Forbidden,
        422 => Reason::Invalid,
        400 => Reason::BadRequest,
        503 => Reason::ServiceUnavailable,
        _ => Reason::InternalError,
    };
    ApiError::new(code, reason, message)
}

/// The error of a remote request that got no answer: `cannot reach
/// https://…: connection refused`.
fn unreachable(server: &str, err: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let detail = match cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_string(),
        Some(std::io::ErrorKind::TimedOut) => "connection timed out".to_string(),
        _ => cause.to_string(),
    };
    ApiError::new(503, Reason::ServiceUnavailable, format!("cannot reach {server}: {detail}"))
}

fn timed_out(server: &str) -> ApiError {
    ApiError::new(
        504,
        Reason::Timeout,
        format!("cannot reach {server}: no answer within {} s", REQUEST_TIMEOUT.as_secs()),
    )
}

/// Accepts any server certificate (signatures still checked): see [`ServerTrust::Unverified`];
/// also the API server's client of agents, which it reaches by node IP.
#[derive(Debug)]
pub(crate) struct AcceptAnyServer(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(config: &RemoteConfig) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &config.trust {
        ServerTrust::Pinned(ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(ca.map_err(|source| ClientError::Pem { what: "server CA", source })?)?;
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::Unverified => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        }
    };
    Ok(match &config.identity {
        Some((cert_pem, key_pem)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|source| ClientError::Pem { what: "client certificate", source })?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|source| ClientError::Pem { what: "client key", source })?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

impl Remote {
    fn new(config: &RemoteConfig) -> Result<Remote, ClientError> {
        let servers = ServerList::new(server_url(&config.server)?);
        let url_error = |reason: &str| ClientError::Url { url: config.server.clone(), reason: reason.to_string() };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config)?)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let http = HyperClient::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Duration::from_secs(15))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true)
            .build(https);
        let authorization = match &config.authorization {
            Some(value) => Some(HeaderValue::from_str(value).map_err(|_| url_error("invalid Authorization header"))?),
            None => None,
        };
        Ok(Remote { servers, http, authorization })
    }

    /// Sends `request` to the current server; when it cannot connect (the
    /// request was not sent), to the next ones in turn.
    async fn send(&self, request: Request<Body>) -> Result<http::Response<Body>, ApiError> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|err| ApiError::internal("buffer a request body", &err))?;
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let urls = self.servers.urls();
        let first = self.servers.current.load(Ordering::Relaxed);
        let mut refused = None;
        for step in 0..urls.len() {
            let index = (first + step) % urls.len();
            let server = &urls[index];
            let mut request = Request::builder().method(parts.method.clone()).uri(format!("{server}{path}"));
            if let Some(headers) = request.headers_mut() {
                headers.clone_from(&parts.headers);
                if let Some(value) = &self.authorization {
                    headers.insert(header::AUTHORIZATION, value.clone());
                }
            }
            let request =
                request.body(Full::new(body.clone())).map_err(|err| ApiError::internal("build a URI", &err))?;
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
                .await
                .map_err(|_| timed_out(server))?;
            match answer {
                Ok(response) => {
                    if step > 0 {
                        tracing::info!(%server, "switched to another API server");
                        self.servers.current.store(index, Ordering::Relaxed);
                    }
                    return Ok(response.map(Body::new));
                }
                Err(err) if err.is_connect() && step + 1 < urls.len() => {
                    tracing::debug!(%server, error = %unreachable(server, &err).message, "trying the next API server");
                    refused = Some(err);
                }
                Err(err) => return Err(unreachable(server, &err)),
            }
        }
        let server = self.servers.current();
        Err(match refused {
            Some(err) => unreachable(&server, &err),
            None => ApiError::new(503, Reason::ServiceUnavailable, format!("cannot reach {server}: no server known")),
        })
    }
}

impl Client {
    /// The in-process client acting as `user`.
    pub fn new(router: Router, user: UserInfo) -> Client {
        Client { transport: Transport::InProcess { router, user } }
    }

    /// A client of a remote API server over HTTPS. Connections are made on
    /// first use and pooled; retrying failed requests is the caller's job.
    pub fn remote(config: &RemoteConfig) -> Result<Client, ClientError> {
        Ok(Client { transport: Transport::Remote(Arc::new(Remote::new(config)?)) })
    }

    /// Replaces the servers a remote client may use (the first is tried
    /// first unless the current one is still among them); no-op in-process.
    pub fn set_servers(&self, urls: &[String]) -> Result<(), ClientError> {
        if let Transport::Remote(remote) = &self.transport {
            let mut checked: Vec<String> = Vec::new();
            for url in urls {
                let url = server_url(url)?;
                if !checked.contains(&url) {
                    checked.push(url);
                }
            }
            if !checked.is_empty() {
                remote.servers.replace(checked);
            }
        }
        Ok(())
    }

    /// The server a remote client sends to first (none in-process).
    pub fn server(&self) -> Option<String> {
        match &self.transport {
            Transport::Remote(remote) => Some(remote.servers.current()),
            Transport::InProcess { .. } => None,
        }
    }

    /// The servers a remote client may use (empty in-process).
    pub fn servers(&self) -> Vec<String> {
        match &self.transport {
            Transport::Remote(remote) => remote.servers.urls().to_vec(),
            Transport::InProcess { .. } => Vec::new(),
        }
    }

    /// One request; a non-2xx answer becomes the `ApiError` its Status describes.
    pub async fn request(&self, method: Method, uri: &str, body: Option<(&str, Value)>) -> Result<Value, ApiError> {
        let bytes = self.request_bytes(method, uri, body).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// One request whose answer is not JSON (e.g. `/cacerts`).
    pub async fn request_bytes(
        &self,
        method: Method,
        uri: &str,
        body: Option<(&str, Value)>,
    ) -> Result<Bytes, ApiError> {
        let response = self.send(method, uri, body).await?;
        let code = response.status().as_u16();
        let read = axum::body::to_bytes(response.into_body(), usize::MAX);
        let bytes = match &self.transport {
            Transport::InProcess { .. } => read.await,
            Transport::Remote(remote) => {
                tokio::time::timeout(REQUEST_TIMEOUT, read).await.map_err(|_| timed_out(&remote.servers.current()))?
            }
        }
        .map_err(|err| self.read_error(&err))?;
        if (200..300).contains(&code) {
            Ok(bytes)
        } else {
            Err(status_error(code, &serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        }
    }

    fn read_error(&self, err: &axum::Error) -> ApiError {
        match &self.transport {
            Transport::InProcess { .. } => ApiError::internal("read an in-process response", err),
            Transport::Remote(remote) => unreachable(&remote.servers.current(), err),
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<(&str, Value)>,
    ) -> Result<http::Response<Body>, ApiError> {
        let mut builder = Request::builder().method(method).uri(uri).header(header::ACCEPT, "application/json");
        let body = match body {
            Some((content_type, value)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Body::from(serde_json::to_vec(&value).map_err(|err| ApiError::internal("encode a request", &err))?)
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).map_err(|err| ApiError::internal("build a request", &err))?;
        match &self.transport {
            Transport::InProcess { router, user } => {
                request.extensions_mut().insert(user.clone());
                router.clone().oneshot(request).await.map_err(|err| ApiError::internal("route a request", &err))
            }
            Transport::Remote(remote) => remote.send(request).await,
        }
    }

    pub async fn get(&self, uri: &str) -> Result<Value, ApiError> {
        self.request(Method::GET, uri, None).await
    }

    pub async fn create(&self, uri: &str, obj: Value) -> Result<Value, ApiError> {
        self.request(Method::POST, uri, Some(("application/json", obj))).await
    }

    pub async fn update(&self, uri: &str, obj: Value) -> Result<Value, ApiError> {
        self.request(Method::PUT, uri, Some(("application/json", obj))).await
    }

    pub async fn merge_patch(&self, uri: &str, patch: Value) -> Result<Value, ApiError> {
        self.request(Method::PATCH, uri, Some(("application/merge-patch+json", patch))).await
    }

    pub async fn delete(&self, uri: &str, options: Option<Value>) -> Result<Value, ApiError> {
        self.request(Method::DELETE, uri, options.map(|o| ("application/json", o))).await
    }

    /// The items of a list (all pages).
    pub async fn list(&self, uri: &str) -> Result<Vec<Value>, ApiError> {
        let list = self.get(uri).await?;
        Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// A watch stream: (event type, object) pairs until the server ends it
    /// (or, remotely, the connection breaks).
    pub async fn watch(&self, uri: &str) -> Result<impl futures::Stream<Item = (String, Value)> + use<>, ApiError> {
        let response = self.send(Method::GET, uri, None).await?;
        if !response.status().is_success() {
            let code = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
            return Err(status_error(code, &serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
        let body = response.into_body().into_data_stream();
        let lines = futures::stream::unfold((body, Vec::<u8>::new()), |(mut body, mut buffer)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    return Some((line, (body, buffer)));
                }
                let chunk = body.next().await?.ok()?;
                buffer.extend_from_slice(&chunk);
            }
        });
        Ok(lines.filter_map(|line| async move {
            let event: Value = serde_json::from_slice(&line).ok()?;
            Some((event.get("type")?.as_str()?.to_string(), event.get("object")?.clone()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::listener::{self, PeerIdentity, TlsMaterial};
    use crate::server::pki::{Authority, Usage};
    use axum::Extension;
    use axum::routing::get;
    use serde_json::json;

    async fn whoami(Extension(PeerIdentity(user)): Extension<PeerIdentity>) -> axum::Json<Value> {
        axum::Json(json!({"name": user.map(|u| u.name)}))
    }

    async fn events() -> Body {
        let lines = futures::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"type\":\"ADDED\",\"object\":{\"n\":1}}\n{\"type\":")),
            Ok(Bytes::from_static(b"\"DELETED\",\"object\":{\"n\":2}}\n")),
        ]);
        Body::from_stream(lines)
    }

    /// A real HTTPS listener on loopback with the cluster's TLS setup.
    async fn serve(ca: &Authority) -> (String, tokio_util::sync::CancellationToken) {
        let names = vec!["127.0.0.1".to_string()];
        let serving = ca.issue("kube-apiserver", Usage::Server { names: &names }).unwrap();
        let tls = listener::tls_config(&TlsMaterial {
            ca_pem: &ca.cert_pem,
            cert_pem: &serving.cert_pem,
            key_pem: &serving.key_pem,
        })
        .unwrap();
        let router = Router::new().route("/whoami", get(whoami)).route("/watch", get(events));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", tcp.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(listener::serve(tcp, tls, router, shutdown.clone(), Duration::from_secs(1)));
        (url, shutdown)
    }

    fn remote(server: &str, trust: ServerTrust, identity: Option<(String, String)>) -> Client {
        Client::remote(&RemoteConfig { server: server.into(), trust, identity, authorization: None }).unwrap()
    }

    #[tokio::test]
    async fn remote_client_pins_the_ca_presents_its_certificate_and_streams_watches() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let (url, shutdown) = serve(&ca).await;
        let node =
            ca.issue("system:node:n2", Usage::Client { user: "system:node:n2", groups: &["system:nodes"] }).unwrap();
        let client = remote(&url, ServerTrust::Pinned(ca.cert_pem.clone()), Some((node.cert_pem, node.key_pem)));
        assert_eq!(client.get("/whoami").await.unwrap(), json!({"name": "system:node:n2"}));
        let events: Vec<(String, Value)> = client.watch("/watch").await.unwrap().collect().await;
        assert_eq!(events, vec![("ADDED".into(), json!({"n": 1})), ("DELETED".into(), json!({"n": 2}))]);

        let anonymous = remote(&url, ServerTrust::Unverified, None);
        assert_eq!(anonymous.get("/whoami").await.unwrap(), json!({"name": null}));

        let other_dir = tempfile::tempdir().unwrap();
        let other = Authority::load_or_create(other_dir.path()).unwrap();
        let err = remote(&url, ServerTrust::Pinned(other.cert_pem), None).get("/whoami").await.unwrap_err();
        assert!(err.message.starts_with(&format!("cannot reach {url}: ")), "{}", err.message);
        assert!(err.message.contains("certificate"), "{}", err.message);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("https://127.0.0.1:{port}");
        let err = remote(&url, ServerTrust::Unverified, None).get("/version").await.unwrap_err();
        assert_eq!(err.message, format!("cannot reach {url}: connection refused"));
        assert_eq!(err.code, 503);
        assert!(
            Client::remote(&RemoteConfig {
                server: "http://a:1".into(),
                trust: ServerTrust::Unverified,
                identity: None,
                authorization: None
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn requests_fail_over_to_the_next_server_that_answers_and_stay_there() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let (alive, shutdown) = serve(&ca).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dead = format!("https://127.0.0.1:{port}");
        let client = remote(&dead, ServerTrust::Pinned(ca.cert_pem.clone()), None);
        assert!(client.get("/whoami").await.unwrap_err().message.contains("connection refused"));

        client.set_servers(&[dead.clone(), alive.clone(), format!("{alive}/")]).unwrap();
        assert_eq!(client.servers(), vec![dead.clone(), alive.clone()], "checked and deduplicated");
        assert_eq!(client.get("/whoami").await.unwrap(), json!({"name": null}));
        assert_eq!(client.server().unwrap(), alive, "the answering server stays current");
        client.set_servers(&[dead.clone(), alive.clone()]).unwrap();
        assert_eq!(client.server().unwrap(), alive, "a new list keeps the current server");
        assert!(client.set_servers(&["http://a:1".into()]).is_err());

        shutdown.cancel();
    }
}
