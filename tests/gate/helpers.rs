//! `spawn_app()`: a gate on 127.0.0.1:0 trusting an in-process development issuer whose keys,
//! failures and hit counters the test controls.
#![allow(dead_code)] // each test module uses a different part of the helpers

use std::net::SocketAddr;
use std::time::Duration;

use jwtgate::config::Config;
use jwtgate::dev_issuer::DevIssuer;
use jwtgate::gate::Gate;
use serde_json::Value;
use tokio::sync::oneshot;

pub const AUD: &str = "orders-api";

/// A running gate on 127.0.0.1:0.
pub struct Server {
    pub url: String,
    pub addr: SocketAddr,
    pub gate: Gate,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A running gate and the development issuer it trusts.
pub struct TestApp {
    pub server: Server,
    pub issuer: DevIssuer,
}

impl std::ops::Deref for TestApp {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

/// The config a test app runs with: issuer `main` trusting `issuer`, plus `extra` YAML appended
/// at the top level and `issuer_extra` appended inside the issuer entry.
pub fn config_yaml(issuer: &DevIssuer, issuer_extra: &str, extra: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
issuers:
  - name: main
    issuer: "{iss}"
    audiences: ["{AUD}"]
    algorithms: ["RS256", "ES256", "EdDSA"]
{issuer_extra}
claims_to_headers:
  - {{claim: sub, header: X-Auth-Subject}}
  - {{claim: iss, header: X-Auth-Issuer}}
  - {{claim: email, header: X-Auth-Email}}
  - {{claim: realm_access.roles, header: X-Auth-Roles}}
shutdown:
  grace_seconds: 1
{extra}
"#,
        iss = issuer.issuer()
    )
}

/// Indents `yaml` for use as `issuer_extra`.
pub fn issuer_keys(yaml: &str) -> String {
    yaml.lines().map(|l| format!("    {l}\n")).collect()
}

/// A gate with the default test config, waiting until its keys are loaded.
pub async fn spawn_app() -> TestApp {
    spawn_app_extra("jwks:\n  min_refresh_interval_seconds: 1\n").await
}

/// A gate trusting a fresh development issuer, with `extra` YAML appended at the top level of
/// the test config, waiting until its keys are loaded.
pub async fn spawn_app_extra(extra: &str) -> TestApp {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", extra);
    let app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    app
}

/// A gate with an explicit config trusting `issuer` (does not wait for readiness).
pub async fn spawn_app_with(issuer: DevIssuer, yaml: &str) -> TestApp {
    TestApp { server: Server::spawn(yaml).await, issuer }
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after 20 s.
pub async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "timed out after 20 s waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    /// Serves a gate with this config on 127.0.0.1:0 (does not wait for readiness).
    pub async fn spawn(yaml: &str) -> Server {
        let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        let gate = Gate::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(jwtgate::shutdown::serve(listener, gate.clone(), async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Server { url: format!("http://{addr}"), addr, gate, client, stop: Some(tx), task: Some(task) }
    }

    /// Polls `/readyz` until 200 (at most 20 s).
    pub async fn wait_ready(&self) {
        wait_until("the gate is ready (keys loaded)", async || {
            self.client.get(format!("{}/readyz", self.url)).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// `/readyz`: the status and the JSON body.
    pub async fn readyz(&self) -> (u16, Value) {
        let r = self.client.get(format!("{}/readyz", self.url)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Waits until `/readyz` reports a fetch error for `issuer`, checks it answers 503, and
    /// returns the error.
    pub async fn wait_issuer_error(&self, issuer: &str) -> String {
        wait_until("readyz reports the issuer's fetch error", async || {
            self.readyz().await.1["issuers"][issuer]["last_error"].is_string()
        })
        .await;
        let (status, body) = self.readyz().await;
        assert_eq!(status, 503, "{body}");
        body["issuers"][issuer]["last_error"].as_str().unwrap().to_string()
    }

    /// `GET /verify?query` with an optional bearer token.
    pub async fn verify(&self, token: Option<&str>, query: &str) -> reqwest::Response {
        let url =
            if query.is_empty() { format!("{}/verify", self.url) } else { format!("{}/verify?{query}", self.url) };
        let mut req = self.client.get(url).header("X-Request-ID", "test-request-1");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req.send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap()
    }

    /// The value of one metric series (its full text before the value), or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }

    /// Starts a graceful stop (as SIGTERM does) without waiting for it; `stop` then waits.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl TestApp {
    /// A token for `sub`, valid for an hour, for this app's audience, signed by `kid`.
    pub fn token(&self, kid: &str) -> String {
        self.issuer.sign(kid, &self.issuer.claims("user-1", AUD, 3600))
    }

    /// Signs custom claims with `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.issuer.sign(kid, claims)
    }

    /// Stops the gate gracefully and waits for it.
    pub async fn stop(self) {
        self.server.stop().await
    }
}
