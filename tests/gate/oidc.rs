//! Interop with a real OpenID provider: panva's `oidc-provider` (tests/oidc), started per test as
//! a child process on loopback. The gate is configured by discovery only and verifies RFC 9068
//! access tokens (`typ: at+jwt`) from the `client_credentials` grant with resource indicators,
//! applies the scope policy to the granted scopes, and follows key rotation at the provider
//! without being restarted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::helpers::{Server, wait_until};

const CLIENT_ID: &str = "jwtgate-test";
const CLIENT_SECRET: &str = "secret";
/// Resource indicators the test provider knows, and the algorithm it signs each one's tokens with.
const ORDERS: &str = "https://orders.example.com"; // RS256
const ES: &str = "https://es.example.com"; // ES256
const ED: &str = "https://ed.example.com"; // EdDSA
const PS: &str = "https://ps.example.com"; // PS256
/// How long the provider may take to print READY (it loads its modules first, about 1.5 s).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for anything the tests wait for (a scheduled key refresh, a restart).
const WAIT: Duration = Duration::from_secs(20);

const INSTALL_HINT: &str = "run scripts/install-test-deps.sh (it installs Node's test provider: npm ci in tests/oidc)";

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Fails loudly when the provider cannot run: these tests are never skipped.
fn require_node() {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("`node --version` failed ({}): {INSTALL_HINT}", out.status),
        Err(e) => panic!("node is not installed ({e}): {INSTALL_HINT}"),
    }
    let module = oidc_dir().join("node_modules/oidc-provider");
    assert!(module.is_dir(), "{} is missing: {INSTALL_HINT}", module.display());
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("jwtgate-oidc-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private JWK from `tests/oidc/genkey.mjs` (kid, alg and `use: sig` set).
fn genkey(alg: &str, kid: &str) -> Value {
    require_node();
    let out = Command::new("node").arg(oidc_dir().join("genkey.mjs")).args([alg, kid]).output().unwrap();
    assert!(out.status.success(), "genkey.mjs {alg} {kid} failed: {}", String::from_utf8_lossy(&out.stderr));
    let jwk: Value = serde_json::from_slice(&out.stdout).expect("genkey.mjs prints a JWK");
    assert_eq!(jwk["kid"], kid);
    jwk
}

/// A running `tests/oidc/server.mjs`. Dropping it kills the process.
struct Provider {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:<port>`: the issuer, and the discovery base URL.
    issuer: String,
    port: u16,
    http: reqwest::Client,
}

impl Provider {
    /// Starts the provider with `keys` (private JWKs, the first per algorithm signs) on `port`
    /// (0: any free port) and waits for its READY line.
    async fn start(dir: &Path, keys: &[Value], port: u16) -> Provider {
        require_node();
        let dir = dir.to_path_buf();
        let keys = json!({ "keys": keys });
        tokio::task::spawn_blocking(move || Provider::start_blocking(&dir, &keys, port)).await.unwrap()
    }

    fn start_blocking(dir: &Path, keys: &Value, port: u16) -> Provider {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let keys_file = dir.join(format!("keys-{n}.json"));
        std::fs::write(&keys_file, keys.to_string()).unwrap();
        let stderr_file = dir.join(format!("provider-{n}.stderr"));
        let mut child = Command::new("node")
            .arg(oidc_dir().join("server.mjs"))
            .arg("--keys")
            .arg(&keys_file)
            .args(["--port", &port.to_string(), "--ttl", "300", "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}; {INSTALL_HINT}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the READY line, then drains stdout until the process exits.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
                panic!("oidc provider did not print READY within {READY_TIMEOUT:?} (exit: {status:?}):\n{stderr}");
            }
        };
        let issuer = line.strip_prefix("READY ").unwrap_or_else(|| panic!("unexpected provider output `{line}`"));
        let port: u16 = issuer.rsplit(':').next().and_then(|p| p.parse().ok()).expect("issuer ends with a port");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Provider { child, stdin, issuer: issuer.to_string(), port, http }
    }

    /// Stops the provider the way its README describes (stdin EOF: graceful close) and waits
    /// for the process, so the port is free for a restart.
    async fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An access token from the `client_credentials` grant (client_secret_basic) for `resource`.
    async fn token(&self, resource: &str, scope: &str) -> String {
        self.token_request(resource, scope, None).await
    }

    /// The `client_credentials` grant; with `proof` in a `DPoP` header the token must come back
    /// DPoP-bound (`token_type: DPoP`), else a bearer token.
    async fn token_request(&self, resource: &str, scope: &str, proof: Option<&str>) -> String {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("resource", resource)
            .append_pair("scope", scope)
            .finish();
        let basic = STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        let mut request = self
            .http
            .post(format!("{}/token", self.issuer))
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        let r = request.body(body).send().await.unwrap();
        let status = r.status();
        let doc: Value = r.json().await.unwrap();
        let kind = if proof.is_some() { "DPoP" } else { "Bearer" };
        assert_eq!(status, 200, "{kind} token request for {resource} failed: {doc}");
        assert_eq!(doc["token_type"], kind, "{doc}");
        doc["access_token"].as_str().expect("access_token").to_string()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decoded JOSE header and claims of a compact JWS.
fn decode(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (part(), part())
}

/// The gate under test, with the shortcuts these tests use.
struct GateApp(Server);

/// The gate's config: one issuer, configured by discovery only (no `jwks_uri`).
fn gate_yaml(issuer: &str, audiences: &[&str], algorithms: &[&str], refresh_interval_seconds: u64) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
issuers:
  - name: panva
    issuer: "{issuer}"
    audiences: {audiences}
    algorithms: {algorithms}
    required_typ: at+jwt
claims_to_headers:
  - {{claim: sub, header: X-Auth-Subject}}
  - {{claim: client_id, header: X-Auth-Client}}
  - {{claim: aud, header: X-Auth-Audience}}
  - {{claim: scope, header: X-Auth-Scope}}
jwks:
  refresh_interval_seconds: {refresh_interval_seconds}
  min_refresh_interval_seconds: 1
shutdown:
  grace_seconds: 1
"#,
        audiences = json!(audiences),
        algorithms = json!(algorithms),
    )
}

impl GateApp {
    async fn spawn(yaml: &str) -> GateApp {
        let server = Server::spawn(yaml).await;
        server.wait_ready().await;
        GateApp(server)
    }

    async fn verify(&self, token: &str, query: &str) -> reqwest::Response {
        self.0.verify(Some(token), query).await
    }

    async fn status(&self, token: &str, query: &str) -> u16 {
        self.verify(token, query).await.status().as_u16()
    }

    async fn metric(&self, series: &str) -> f64 {
        self.0.metric(series).await
    }

    async fn fetches_ok(&self) -> f64 {
        self.metric(r#"jwtgate_jwks_fetches_total{issuer="panva",result="ok"}"#).await
    }

    async fn wait_until(&self, what: &str, cond: impl AsyncFnMut() -> bool) {
        wait_until(what, cond).await
    }
}

fn header<'r>(r: &'r reqwest::Response, name: &str) -> &'r str {
    r.headers().get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_signed_rs256_es256_and_eddsa_verify_with_keys_found_by_discovery() {
    let dir = TempDir::new();
    let keys = [genkey("RS256", "rs-1"), genkey("ES256", "es-1"), genkey("EdDSA", "ed-1"), genkey("PS256", "ps-1")];
    let provider = Provider::start(&dir.0, &keys, 0).await;
    let gate = GateApp::spawn(&gate_yaml(&provider.issuer, &[ORDERS, ES, ED], &["RS256", "ES256", "EdDSA"], 300)).await;
    // Discovery gave the JWKS: all four published keys are usable.
    assert_eq!(gate.metric(r#"jwtgate_jwks_keys{issuer="panva"}"#).await, 4.0);

    for (resource, alg, kid) in [(ORDERS, "RS256", "rs-1"), (ES, "ES256", "es-1"), (ED, "EdDSA", "ed-1")] {
        let token = provider.token(resource, "orders:read").await;
        let (jose, claims) = decode(&token);
        assert_eq!(jose, json!({"alg": alg, "typ": "at+jwt", "kid": kid}));
        assert_eq!(claims["iss"], provider.issuer.as_str());
        assert_eq!(claims["aud"], resource);
        assert_eq!(claims["client_id"], CLIENT_ID);

        let r = gate.verify(&token, "").await;
        assert_eq!(r.status(), 200, "{alg} token for {resource}");
        assert_eq!(header(&r, "x-auth-subject"), CLIENT_ID);
        assert_eq!(header(&r, "x-auth-client"), CLIENT_ID);
        assert_eq!(header(&r, "x-auth-audience"), resource);
        assert_eq!(header(&r, "x-auth-scope"), "orders:read");
        let max_age: u64 = header(&r, "cache-control").strip_prefix("private, max-age=").unwrap().parse().unwrap();
        assert!(max_age <= 300, "max-age {max_age} outlives the token");

        // The resource indicator became the audience, and it is enforced.
        let other = if resource == ORDERS { ES } else { ORDERS };
        let r = gate.verify(&token, &format!("aud={other}")).await;
        assert_eq!(r.status(), 401, "{alg} token with aud={other}");
        assert_eq!(
            header(&r, "www-authenticate"),
            r#"Bearer realm="jwtgate", error="invalid_token", error_description="audience not accepted""#
        );
    }

    // A PS256 token from the same provider, its key published, is refused by the allow-list.
    let ps = provider.token(PS, "orders:read").await;
    assert_eq!(decode(&ps).0["alg"], "PS256");
    let r = gate.verify(&ps, &format!("aud={PS}")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        r#"Bearer realm="jwtgate", error="invalid_token", error_description="algorithm not accepted""#
    );

    // A gate allowing only RS256 refuses the provider's ES256 and EdDSA tokens.
    let rs_only = GateApp::spawn(&gate_yaml(&provider.issuer, &[ORDERS, ES, ED], &["RS256"], 300)).await;
    assert_eq!(rs_only.status(&provider.token(ORDERS, "orders:read").await, "").await, 200);
    assert_eq!(rs_only.status(&provider.token(ES, "orders:read").await, "").await, 401);
    assert_eq!(rs_only.status(&provider.token(ED, "orders:read").await, "").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_scopes_decide_the_scope_policy() {
    let dir = TempDir::new();
    let provider = Provider::start(&dir.0, &[genkey("RS256", "rs-1")], 0).await;
    let gate = GateApp::spawn(&gate_yaml(&provider.issuer, &[ORDERS], &["RS256"], 300)).await;

    let read = provider.token(ORDERS, "orders:read").await;
    assert_eq!(decode(&read).1["scope"], "orders:read");
    assert_eq!(gate.status(&read, "scope=orders:read").await, 200);
    let r = gate.verify(&read, "scope=admin").await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "www-authenticate"), r#"Bearer realm="jwtgate", error="insufficient_scope", scope="admin""#);
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(gate.status(&read, "scope=orders:read%20orders:write").await, 403);

    let admin = provider.token(ORDERS, "orders:read admin").await;
    assert_eq!(decode(&admin).1["scope"], "orders:read admin");
    assert_eq!(gate.status(&admin, "scope=admin").await, 200);
    assert_eq!(gate.status(&admin, "scope=orders:read,admin").await, 200);
    assert_eq!(gate.status(&admin, "scope=orders:write").await, 403);

    // The provider drops scopes it does not know; with none left the token has no scope claim.
    let none = provider.token(ORDERS, "profile").await;
    assert!(decode(&none).1.get("scope").is_none(), "{}", decode(&none).1);
    assert_eq!(gate.status(&none, "").await, 200);
    assert_eq!(gate.status(&none, "scope=orders:read").await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_at_the_provider_is_followed_without_restarting_the_gate() {
    let dir = TempDir::new();
    let (key_a, key_b) = (genkey("RS256", "rsa-A"), genkey("RS256", "rsa-B"));
    let mut provider = Provider::start(&dir.0, std::slice::from_ref(&key_a), 0).await;
    let (issuer, port) = (provider.issuer.clone(), provider.port);
    // `refetching` refreshes only at start and on an unknown kid; `refreshing` every 2 s.
    let refetching = GateApp::spawn(&gate_yaml(&issuer, &[ORDERS], &["RS256"], 300)).await;
    let refreshing = GateApp::spawn(&gate_yaml(&issuer, &[ORDERS], &["RS256"], 2)).await;

    // 1. Keys [A]: a token signed by A is verified, then served from the cache.
    let ta = provider.token(ORDERS, "orders:read").await;
    assert_eq!(decode(&ta).0["kid"], "rsa-A");
    for gate in [&refetching, &refreshing] {
        assert_eq!(gate.status(&ta, "").await, 200);
        assert_eq!(gate.status(&ta, "").await, 200);
        assert!(gate.metric(r#"jwtgate_token_cache_lookups_total{result="hit"}"#).await >= 1.0);
    }

    // 2. Restart on the same port with [B, A]: B signs new tokens, A stays published.
    provider.stop().await;
    provider = Provider::start(&dir.0, &[key_b.clone(), key_a.clone()], port).await;
    assert_eq!(provider.issuer, issuer);
    let tb = provider.token(ORDERS, "orders:read").await;
    assert_eq!(decode(&tb).0["kid"], "rsa-B");

    // The refetching gate learns B from the token itself: one refetch on the unknown kid, once
    // its one-second cooldown after the start-up fetch is over.
    refetching
        .wait_until("the start-up fetch is older than the refetch cooldown", async || {
            refetching.metric(r#"jwtgate_jwks_last_success_age_seconds{issuer="panva"}"#).await >= 1.5
        })
        .await;
    assert_eq!(refetching.fetches_ok().await, 1.0);
    let r = refetching.verify(&tb, "").await;
    assert_eq!(r.status(), 200, "{:?}", r.headers().get("www-authenticate"));
    assert_eq!(header(&r, "x-auth-subject"), CLIENT_ID);
    assert_eq!(refetching.metric(r#"jwtgate_jwks_unknown_kid_refetches_total{issuer="panva"}"#).await, 1.0);
    assert_eq!(refetching.fetches_ok().await, 2.0);
    assert_eq!(refetching.metric(r#"jwtgate_jwks_keys{issuer="panva"}"#).await, 2.0);
    assert_eq!(refetching.status(&ta, "").await, 200);

    // The refreshing gate picks up [B, A] at a scheduled refresh (or the refetch): both verify.
    let before = refreshing.fetches_ok().await;
    refreshing
        .wait_until("a key refresh from the restarted provider", async || refreshing.fetches_ok().await > before)
        .await;
    assert_eq!(refreshing.status(&tb, "").await, 200);
    assert_eq!(refreshing.status(&ta, "").await, 200);

    // 3. Restart with [B] only: after the next refresh A's token is refused, though it was
    // verified and cached before; B's still verifies.
    provider.stop().await;
    provider = Provider::start(&dir.0, std::slice::from_ref(&key_b), port).await;
    let before = refreshing.fetches_ok().await;
    refreshing
        .wait_until("a key refresh from the provider publishing only B", async || {
            refreshing.fetches_ok().await > before
        })
        .await;
    assert_eq!(refreshing.metric(r#"jwtgate_jwks_keys{issuer="panva"}"#).await, 1.0);
    let r = refreshing.verify(&ta, "").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        r#"Bearer realm="jwtgate", error="invalid_token", error_description="signing key not found""#
    );
    assert_eq!(
        refreshing.metric(r#"jwtgate_decisions_total{decision="deny",issuer="panva",reason="unknown_key"}"#).await,
        1.0
    );
    let r = refreshing.verify(&tb, "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-auth-subject"), CLIENT_ID);
    // Tokens the provider issues now are signed by B, and verify.
    let tb2 = provider.token(ORDERS, "orders:read").await;
    assert_eq!(decode(&tb2).0["kid"], "rsa-B");
    assert_eq!(refreshing.status(&tb2, "").await, 200);
    provider.stop().await;
}

/// A DPoP client made with panva's `dpop` package (`tests/oidc/dpop-client.mjs`): one key pair,
/// a proof per request. Dropping it closes its stdin, which ends the process.
struct DpopClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// The RFC 7638 thumbprint of its public key, as the `dpop` package computes it.
    jkt: String,
}

impl DpopClient {
    fn start(alg: &str) -> DpopClient {
        require_node();
        assert!(oidc_dir().join("node_modules/dpop").is_dir(), "panva's dpop package is missing: {INSTALL_HINT}");
        let mut child = Command::new("node")
            .arg(oidc_dir().join("dpop-client.mjs"))
            .arg(alg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}; {INSTALL_HINT}"));
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().expect("dpop-client.mjs prints READY").unwrap();
        let jkt = ready.strip_prefix("READY ").unwrap_or_else(|| panic!("unexpected `{ready}`")).to_string();
        DpopClient { child, stdin, lines, jkt }
    }

    /// A proof for `htm htu`, covering `token` (its `ath`) when given.
    fn proof(&mut self, htm: &str, htu: &str, token: Option<&str>) -> String {
        use std::io::Write as _;
        let ask = json!({"htm": htm, "htu": htu, "accessToken": token});
        writeln!(self.stdin.as_mut().unwrap(), "{ask}").unwrap();
        self.lines.next().expect("a proof").unwrap()
    }
}

impl Drop for DpopClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Provider {
    /// A DPoP-bound access token: the `client_credentials` grant with `proof` in a `DPoP` header.
    async fn dpop_token(&self, resource: &str, scope: &str, proof: &str) -> String {
        self.token_request(resource, scope, Some(proof)).await
    }
}

/// Files under `dir`, recursively (nginx's cache entries).
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries.filter_map(Result::ok).map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
    })
}

/// The whole DPoP flow with code jwtgate did not write: panva's oidc-provider issues a token bound
/// to a key of panva's `dpop` client (token request with a proof), then each request goes through
/// nginx rendered as ingress-nginx renders `auth-url` with the example's auth cache, with a new
/// proof every time. Every broken proof is refused, and nginx never answers from its auth cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_token_from_oidc_provider_passes_through_ingress_nginx_with_a_new_proof_each_time() {
    use crate::nginx_support::{Echo, Flavour, decisions, echoed, example_ingress, ingress_nginx};
    let dir = TempDir::new();
    let provider = Provider::start(&dir.0, &[genkey("RS256", "rsa-1")], 0).await;
    let mut client = tokio::task::block_in_place(|| DpopClient::start("ES256"));
    let jkt = client.jkt.clone();
    let mut proof =
        |htm: &str, htu: &str, token: Option<&str>| tokio::task::block_in_place(|| client.proof(htm, htu, token));

    let token_proof = proof("POST", &format!("{}/token", provider.issuer), None);
    let token = provider.dpop_token(ORDERS, "orders:read", &token_proof).await;
    let (jose, claims) = decode(&token);
    assert_eq!(jose["typ"], "at+jwt");
    assert_eq!(claims["cnf"]["jkt"], jkt.as_str(), "oidc-provider binds the token to the proof's key");

    let gate = GateApp::spawn(&gate_yaml(&provider.issuer, &[ORDERS], &["RS256"], 300)).await;
    let echo = Echo::start().await;
    let example = example_ingress();
    let host = "orders.test";
    let query = format!("aud={ORDERS}&scope=orders:read&dpop=required");
    // A second Ingress without dpop=required, to show that this auth cache does cache a Bearer 200.
    let specs = vec![
        example.cached_spec(host, example.auth_url_with(gate.0.addr, &query)),
        example.cached_spec("bearer.test", example.auth_url_with(gate.0.addr, &format!("aud={ORDERS}"))),
    ];
    let nginx = ingress_nginx(specs, Flavour::AuthRequest, echo.addr).await;
    let htu = format!("http://{host}/orders/7");
    let send = |scheme: &str, proof: Option<&str>| {
        let mut req = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(nginx.url("/orders/7?expand=items"))
            .header(http::header::HOST, host)
            .header("Authorization", format!("{scheme} {token}"));
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        req.send()
    };
    let decided = async || decisions(&gate.0.metrics().await);

    // A new proof per request: each allowed, each decided by the gate (never nginx's cache).
    let mut first = None;
    for i in 0..3 {
        let p = proof("GET", &htu, Some(&token));
        let before = decided().await;
        let r = send("DPoP", Some(&p)).await.unwrap();
        assert_eq!(r.status(), 200, "request {i}: {:?}\n{}", r.headers().get("www-authenticate"), nginx.log());
        let seen: Value = r.json().await.unwrap();
        assert_eq!(echoed(&seen, "x-auth-subject"), [CLIENT_ID]);
        assert_eq!(decided().await, before + 1.0, "request {i} was answered from nginx's auth cache");
        first.get_or_insert(p);
    }
    assert_eq!(echo.hits(), 3);

    // Every broken proof is refused by the gate, with the DPoP challenge passed to the client.
    let other = tokio::task::block_in_place(|| DpopClient::start("ES256").proof("GET", &htu, Some(&token)));
    let cases = [
        ("replayed", "DPoP", first.clone(), "invalid_dpop_proof"),
        ("missing", "DPoP", None, "invalid_dpop_proof"),
        ("htm", "DPoP", Some(proof("POST", &htu, Some(&token))), "invalid_dpop_proof"),
        ("htu", "DPoP", Some(proof("GET", &format!("http://{host}/orders/8"), Some(&token))), "invalid_dpop_proof"),
        ("no ath", "DPoP", Some(proof("GET", &htu, None)), "invalid_dpop_proof"),
        ("another key", "DPoP", Some(other), "invalid_token"),
        ("as Bearer", "Bearer", Some(proof("GET", &htu, Some(&token))), "invalid_token"),
    ];
    for (case, scheme, p, error) in cases {
        let before = decided().await;
        let r = send(scheme, p.as_deref()).await.unwrap();
        assert_eq!(r.status(), 401, "{case}\n{}", nginx.log());
        let challenge = header(&r, "www-authenticate").to_string();
        assert!(challenge.starts_with(r#"DPoP realm="jwtgate""#), "{case}: {challenge}");
        assert!(challenge.contains(&format!(r#"error="{error}""#)), "{case}: {challenge}");
        assert!(challenge.contains(r#"algs=""#), "{case}: {challenge}");
        assert_eq!(decided().await, before + 1.0, "{case} was answered from nginx's auth cache");
    }
    assert_eq!(echo.hits(), 3, "no refused request reached the app");
    // The example's `auth-cache-duration: 200 1m` would cache a 200 without X-Accel-Expires: 0.
    assert_eq!(files_under(&nginx.prefix.join("nginx-cache-auth")), 0, "nginx cached a DPoP answer");
    // The same cache keeps a Bearer answer (so the check above can fail).
    let bearer = provider.token(ORDERS, "orders:read").await;
    for _ in 0..2 {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(nginx.url("/"))
            .header(http::header::HOST, "bearer.test")
            .header("Authorization", format!("Bearer {bearer}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}\n{}", r.headers().get("www-authenticate"), nginx.log());
    }
    assert_eq!(files_under(&nginx.prefix.join("nginx-cache-auth")), 1, "nginx caches a Bearer 200");
    provider.stop().await;
}

/// Proofs that panva's `dpop` package makes with each of its algorithms (Ed25519 under its
/// RFC 9864 name among them) verify, and its thumbprint is jwtgate's `cnf.jkt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_of_every_dpop_package_algorithm_verify_with_its_thumbprint_as_cnf_jkt() {
    let app = crate::helpers::spawn_app().await;
    let htu = "https://api.example.com/orders/7";
    for alg in ["ES256", "Ed25519", "RS256", "PS256"] {
        let mut client = tokio::task::block_in_place(|| DpopClient::start(alg));
        let mut claims = app.issuer.claims("alice", crate::helpers::AUD, 300);
        claims["cnf"] = json!({"jkt": client.jkt});
        let token = app.sign("es256-1", &claims);
        for _ in 0..2 {
            let p = tokio::task::block_in_place(|| client.proof("GET", htu, Some(&token)));
            let r = app
                .client
                .get(format!("{}/verify", app.url))
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", &p)
                .header("X-Original-Method", "GET")
                .header("X-Original-URL", format!("{htu}?page=2"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{alg}: {:?}", r.headers().get("www-authenticate"));
            assert_eq!(header(&r, "cache-control"), "no-store");
        }
    }
}
