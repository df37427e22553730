//! An https identity provider for the "https stays https" tests: a test CA and a certificate for
//! 127.0.0.1 made at run time with rcgen (no key material in the repository, nothing that
//! expires in git), served with tokio-rustls. Its discovery document names whichever `jwks_uri`
//! the test asks for, and `/to/<n>` redirects to the test's URL number `n`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use jwtgate::dev_issuer::KeyRing;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

struct Shared {
    base: String,
    /// The `jwks_uri` discovery names; `None`: this server's own `/jwks`.
    discovery_jwks_uri: Mutex<Option<String>>,
    redirects: Mutex<Vec<String>>,
    keys: KeyRing,
    hits: AtomicUsize,
}

/// A running https identity provider. Dropping it stops the server.
pub struct TlsIdp {
    shared: Arc<Shared>,
    /// The test CA's certificate, PEM: what a `ca_file` holds.
    pub ca_pem: String,
    stop: CancellationToken,
}

impl Drop for TlsIdp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A fresh CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, chain, key).
fn test_pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "jwtgate test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = server.signed_by(&server_key, &ca).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    (ca.pem(), vec![cert.der().clone()], key)
}

/// A fresh test CA certificate (PEM), for `ca_file` checks.
pub fn test_ca_pem() -> String {
    test_pki().0
}

impl TlsIdp {
    /// Starts on 127.0.0.1 with the standard keys (`rs256-1`, `es256-1`, `eddsa-1`).
    pub async fn start() -> TlsIdp {
        let (ca_pem, chain, key) = test_pki();
        let config = ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            base,
            discovery_jwks_uri: Mutex::new(None),
            redirects: Mutex::new(Vec::new()),
            keys: KeyRing::standard(),
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/to/{n}", get(redirect))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(request.map(axum::body::Body::new))
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        TlsIdp { shared, ca_pem, stop }
    }

    /// The `iss` value and discovery base: `https://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.shared.base.clone()
    }

    /// Makes discovery name this `jwks_uri`.
    pub fn set_discovery_jwks_uri(&self, uri: &str) {
        *self.shared.discovery_jwks_uri.lock().unwrap() = Some(uri.to_string());
    }

    /// An https URL on this server that redirects (302) to `target`.
    pub fn redirect_to(&self, target: &str) -> String {
        let mut redirects = self.shared.redirects.lock().unwrap();
        redirects.push(target.to_string());
        format!("{}/to/{}", self.shared.base, redirects.len() - 1)
    }

    /// Requests served, of any path.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Signs `claims` with one of the standard keys.
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        self.shared.keys.sign(kid, claims)
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let jwks_uri = shared.discovery_jwks_uri.lock().unwrap().clone().unwrap_or(format!("{}/jwks", shared.base));
    json_response(json!({"issuer": shared.base, "jwks_uri": jwks_uri}))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    json_response(shared.keys.jwks())
}

async fn redirect(State(shared): State<Arc<Shared>>, Path(n): Path<usize>) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let target = shared.redirects.lock().unwrap()[n].clone();
    (http::StatusCode::FOUND, [(http::header::LOCATION, target)]).into_response()
}

/// A plain-http server on 127.0.0.1 whose every path redirects (302) to `target`; returns its URL.
pub async fn http_redirector(target: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let target = target.to_string();
    let app = Router::new().fallback(move || {
        let target = target.clone();
        async move { (http::StatusCode::FOUND, [(http::header::LOCATION, target)]).into_response() }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn json_response(body: serde_json::Value) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
