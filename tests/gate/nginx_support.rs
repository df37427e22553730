//! Real nginx for the `auth_request` tests: a throw-away nginx in its own prefix directory on a
//! free loopback port, the echo application it proxies to, a TCP tap that records what nginx sends
//! to the gate, and the configuration ingress-nginx renders for `auth-url`.
//!
//! The rendering follows ingress-nginx's `rootfs/etc/nginx/template/nginx.tmpl` (the internal
//! `/_external-auth-…` location, `auth_request` + `auth_request_set $authHeaderN` +
//! `proxy_set_header`, and for `auth-keepalive` the `access_by_lua_block` with
//! `ngx.location.capture` against an `upstream` with `keepalive`), keeping every directive that
//! changes what the gate or the application sees and leaving out the controller's own machinery
//! (Lua balancer, metrics, ModSecurity).
#![allow(dead_code)] // the nginx tests use different parts of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NDK_MODULE: &str = "/usr/lib/nginx/modules/ndk_http_module.so";
pub const LUA_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_lua_module.so";

/// Panics (never skips) when nginx or its Lua module is missing.
pub fn require_nginx() {
    let runs = Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(runs, "`nginx` is not installed or not on PATH: run scripts/install-test-deps.sh");
    for module in [NDK_MODULE, LUA_MODULE] {
        assert!(
            Path::new(module).exists(),
            "{module} is missing (Debian package libnginx-mod-http-lua): run scripts/install-test-deps.sh"
        );
    }
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An address where nothing listens: the gate is down.
pub fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

fn fresh_prefix() -> PathBuf {
    let n = PREFIXES.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("jwtgate-nginx-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One nginx process (`master_process off`, so killing it leaves no workers behind) in its own
/// prefix directory, stopped and cleaned up on drop.
pub struct Nginx {
    pub port: u16,
    pub prefix: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx with `http(prefix, port)` as the body of its `http {}` block; the closure may
    /// also write files into the prefix for `include`. Waits until nginx accepts connections.
    pub async fn start(http: impl Fn(&Path, u16) -> String) -> Nginx {
        require_nginx();
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let prefix = fresh_prefix();
            let port = free_port();
            let p = prefix.display();
            let conf = format!(
                "# written by tests/gate/nginx_support.rs\n\
                 load_module {NDK_MODULE};\n\
                 load_module {LUA_MODULE};\n\
                 daemon off;\n\
                 master_process off;\n\
                 worker_processes 1;\n\
                 pid {p}/nginx.pid;\n\
                 error_log {p}/error.log warn;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 access_log {p}/access.log;\n\
                 client_body_temp_path {p}/client_body;\n\
                 proxy_temp_path {p}/proxy;\n\
                 fastcgi_temp_path {p}/fastcgi;\n\
                 uwsgi_temp_path {p}/uwsgi;\n\
                 scgi_temp_path {p}/scgi;\n\
                 {body}\n\
                 }}\n",
                body = http(&prefix, port)
            );
            std::fs::write(prefix.join("nginx.conf"), &conf).unwrap();
            let stderr = std::fs::File::create(prefix.join("stderr.log")).unwrap();
            let child = Command::new("nginx")
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(prefix.join("nginx.conf"))
                .arg("-e")
                .arg(prefix.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run nginx ({e}): run scripts/install-test-deps.sh"));
            let mut nginx = Nginx { port, prefix, child };
            match nginx.wait_listening().await {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") => last_log = log, // lost the port race
                Err(log) => panic!("nginx did not start:\n{log}\n--- nginx.conf ---\n{conf}"),
            }
        }
        panic!("nginx could not bind a free port in 5 attempts:\n{last_log}");
    }

    async fn wait_listening(&mut self) -> Result<(), String> {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("nginx exited with {status}\n{}", self.log()));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("nginx did not listen on port {} within 10 s\n{}", self.port, self.log()))
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's error log and stderr, for assertion messages.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.prefix.join(name)).unwrap_or_default();
        format!("--- error.log ---\n{}--- stderr ---\n{}", read("error.log"), read("stderr.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.prefix);
        }
    }
}

/// The application behind nginx: answers every request with what it received, as JSON
/// (`method`, `uri`, `headers` as name → list of values, `body`).
pub struct Echo {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start() -> Echo {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new().fallback(echo).with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Echo { addr, hits }
    }

    /// Requests that reached the application.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn echo(
    State(hits): State<Arc<AtomicUsize>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values = headers.get_all(name).iter().map(|v| json!(String::from_utf8_lossy(v.as_bytes()))).collect();
        map.insert(name.as_str().to_string(), Value::Array(values));
    }
    let seen = json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "headers": map,
        "body": String::from_utf8_lossy(&body),
    });
    ([(http::header::CONTENT_TYPE, "application/json")], seen.to_string()).into_response()
}

/// The values of header `name` (lowercase) in an echo answer; empty when absent.
pub fn echoed(seen: &Value, name: &str) -> Vec<String> {
    seen["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

/// A TCP pass-through in front of the gate recording every byte nginx sends it.
pub struct Tap {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

impl Tap {
    pub async fn start(target: SocketAddr) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (log, count) = (sent.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut from_nginx, mut to_nginx) = inbound.into_split();
                    let (mut from_gate, mut to_gate) = outbound.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match from_nginx.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if to_gate.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to_gate.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut from_gate, &mut to_nginx).await;
                        let _ = to_nginx.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Tap { addr, sent, connections }
    }

    /// Everything nginx sent to the gate so far.
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }

    /// Connections nginx opened to the gate.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// How ingress-nginx calls the auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `auth-url` alone: `auth_request` to the internal location.
    AuthRequest,
    /// `auth-keepalive` > 0 (and `use-http2: "false"`): an `access_by_lua_block` subrequest
    /// through an `upstream` block with `keepalive`, accepting only 200.
    LuaKeepalive,
}

/// One Ingress's external-auth annotations, rendered as one `server {}` with `location /`.
#[derive(Debug, Clone)]
pub struct IngressSpec {
    /// `spec.rules[].host`, the `server_name`.
    pub host: String,
    /// `auth-url`.
    pub auth_url: String,
    /// `auth-response-headers`.
    pub response_headers: Vec<String>,
    /// `auth-cache-key`; `None` renders no cache.
    pub cache_key: Option<String>,
    /// `auth-cache-duration`, split on commas (ingress-nginx's default is `200 202 401 5m`).
    pub cache_duration: Vec<String>,
    /// `auth-keepalive` when the flavour is [`Flavour::LuaKeepalive`].
    pub keepalive: u32,
}

/// ingress-nginx's `buildAuthLocation` for path `/` with pathType Prefix.
pub fn auth_path(path: &str) -> String {
    format!("/_external-auth-{}-Prefix", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path))
}

/// The `http {}` body ingress-nginx renders for these Ingresses, with the application at `app`.
pub fn render_ingresses(specs: &[IngressSpec], flavour: Flavour, prefix: &Path, port: u16, app: SocketAddr) -> String {
    let mut out = String::new();
    out += "log_subrequest on;\n";
    // From nginx.tmpl: the request id passed to the gate and the app.
    out += "map $http_x_request_id $req_id { default $http_x_request_id; \"\" $request_id; }\n";
    out += &format!(
        "proxy_cache_path {}/nginx-cache-auth levels=1:2 keys_zone=auth_cache:10m max_size=128m inactive=30m use_temp_path=off;\n",
        prefix.display()
    );
    let auth = auth_path("/");
    for spec in specs {
        let url = url::Url::parse(&spec.auth_url).expect("auth-url parses");
        let authority = format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap());
        let upstream = format!("{}-{}", spec.host, &auth[2..]);
        let target = match flavour {
            Flavour::AuthRequest => spec.auth_url.clone(),
            // changeHostPort: the auth URL with its host:port replaced by the upstream's name.
            Flavour::LuaKeepalive => spec.auth_url.replacen(&authority, &upstream, 1),
        };
        if flavour == Flavour::LuaKeepalive {
            out += &format!(
                "upstream {upstream} {{\n  server {authority};\n  keepalive {};\n  keepalive_requests 1000;\n  keepalive_timeout 60s;\n}}\n",
                spec.keepalive
            );
        }
        out += &format!("server {{\n  listen 127.0.0.1:{port};\n  server_name {};\n", spec.host);

        // The internal auth location.
        out += &format!("  location = {auth} {{\n    internal;\n");
        if let Some(key) = &spec.cache_key {
            out += &format!("    set $tmp_cache_key '{}{auth}{key}';\n    set $cache_key '';\n", spec.host);
            out += "    rewrite_by_lua_block {\n      ngx.var.cache_key = ngx.encode_base64(ngx.sha1_bin(ngx.var.tmp_cache_key))\n    }\n";
            out += "    proxy_cache auth_cache;\n";
            for d in &spec.cache_duration {
                out += &format!("    proxy_cache_valid {d};\n");
            }
            out += "    proxy_cache_key \"$cache_key\";\n";
        }
        out += "    proxy_pass_request_body off;\n";
        out += "    proxy_set_header Content-Length \"\";\n";
        out += "    proxy_set_header X-Forwarded-Proto \"\";\n";
        out += "    proxy_set_header X-Request-ID $req_id;\n";
        out += &format!("    proxy_set_header Host {};\n", url.host_str().unwrap());
        out += "    proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n";
        out += "    proxy_set_header X-Original-Method $request_method;\n";
        out += "    proxy_set_header X-Sent-From \"nginx-ingress-controller\";\n";
        out += "    proxy_set_header X-Real-IP $remote_addr;\n";
        out += "    proxy_set_header X-Forwarded-For $remote_addr;\n";
        out += "    proxy_set_header X-Auth-Request-Redirect $request_uri;\n";
        out += if spec.cache_key.is_some() { "    proxy_buffering on;\n" } else { "    proxy_buffering off;\n" };
        out += "    proxy_buffer_size 4k;\n    proxy_buffers 4 4k;\n    proxy_request_buffering on;\n";
        out += "    proxy_ssl_server_name on;\n    proxy_pass_request_headers on;\n    client_max_body_size 1m;\n";
        if flavour == Flavour::LuaKeepalive {
            out += "    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n";
        } else {
            out += "    proxy_http_version 1.1;\n";
        }
        out += &format!("    set $target {target};\n    proxy_pass $target;\n  }}\n");

        // The protected location.
        out += "  location / {\n";
        match flavour {
            Flavour::AuthRequest => {
                out += &format!("    auth_request {auth};\n");
                out += "    auth_request_set $auth_cookie $upstream_http_set_cookie;\n";
                out += "    add_header Set-Cookie $auth_cookie;\n";
                for (i, h) in spec.response_headers.iter().enumerate() {
                    let var = h.to_lowercase().replace('-', "_");
                    out += &format!("    auth_request_set $authHeader{i} $upstream_http_{var};\n");
                    out += &format!("    proxy_set_header '{h}' $authHeader{i};\n");
                }
            }
            Flavour::LuaKeepalive => {
                out += "    set $auth_cookie '';\n    add_header Set-Cookie $auth_cookie;\n";
                for (i, h) in spec.response_headers.iter().enumerate() {
                    out += &format!("    set $authHeader{i} '';\n    proxy_set_header '{h}' $authHeader{i};\n");
                }
                // auth_request does not use upstream keepalive (trac.nginx.org/nginx/ticket/1579),
                // hence the Lua subrequest; only 200 lets the request through.
                out += "    access_by_lua_block {\n";
                out += &format!(
                    "      local res = ngx.location.capture('{auth}', {{ method = ngx.HTTP_GET, body = '' }})\n"
                );
                out += "      if res.status == ngx.HTTP_OK then\n";
                out += "        ngx.var.auth_cookie = res.header['Set-Cookie']\n";
                for (i, h) in spec.response_headers.iter().enumerate() {
                    out += &format!("        ngx.var.authHeader{i} = res.header['{h}']\n");
                }
                out += "        return\n      end\n";
                out += "      if res.status == ngx.HTTP_UNAUTHORIZED or res.status == ngx.HTTP_FORBIDDEN then\n";
                out += "        ngx.exit(res.status)\n      end\n";
                out += "      ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)\n    }\n";
            }
        }
        out += "    proxy_set_header Host $http_host;\n";
        out += "    proxy_set_header X-Request-ID $req_id;\n";
        out += "    proxy_set_header X-Real-IP $remote_addr;\n";
        out += "    proxy_set_header X-Forwarded-For $remote_addr;\n";
        out += "    proxy_set_header X-Forwarded-Proto $scheme;\n";
        out += "    proxy_set_header Proxy \"\";\n";
        out += "    proxy_http_version 1.1;\n";
        out += &format!("    proxy_pass http://{app};\n  }}\n}}\n");
    }
    out
}

/// `examples/ingress.yaml`'s annotations, which the nginx tests render.
#[derive(Debug, Clone)]
pub struct ExampleIngress {
    pub host: String,
    pub auth_url: url::Url,
    pub response_headers: Vec<String>,
    pub keepalive: u32,
    pub cache_key: String,
    pub cache_duration: Vec<String>,
    /// The whole document, as JSON.
    pub doc: Value,
}

pub const EXAMPLE_INGRESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ingress.yaml");
pub const EXAMPLE_NGINX_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nginx/jwtgate.conf");

/// Parses `examples/ingress.yaml`.
pub fn example_ingress() -> ExampleIngress {
    let text = std::fs::read_to_string(EXAMPLE_INGRESS).expect("examples/ingress.yaml");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("examples/ingress.yaml is YAML");
    let notes = &doc["metadata"]["annotations"];
    let note = |name: &str| {
        notes[format!("nginx.ingress.kubernetes.io/{name}")]
            .as_str()
            .unwrap_or_else(|| panic!("examples/ingress.yaml: annotation {name} missing or not a string"))
            .to_string()
    };
    let split = |s: String| s.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    ExampleIngress {
        host: doc["spec"]["rules"][0]["host"].as_str().expect("spec.rules[0].host").to_string(),
        auth_url: url::Url::parse(&note("auth-url")).expect("auth-url is a URL"),
        response_headers: split(note("auth-response-headers")),
        keepalive: note("auth-keepalive").parse().expect("auth-keepalive is a number"),
        cache_key: note("auth-cache-key"),
        cache_duration: split(note("auth-cache-duration")),
        doc,
    }
}

impl ExampleIngress {
    /// The example's auth-url (same path and policy query) with the gate at `gate`.
    pub fn auth_url_at(&self, gate: SocketAddr) -> String {
        let mut url = self.auth_url.clone();
        url.set_host(Some(&gate.ip().to_string())).unwrap();
        url.set_port(Some(gate.port())).unwrap();
        url.to_string()
    }

    /// The example's auth-url with another policy query (`""` for none), gate at `gate`.
    pub fn auth_url_with(&self, gate: SocketAddr, query: &str) -> String {
        let mut url = url::Url::parse(&self.auth_url_at(gate)).unwrap();
        url.set_query(if query.is_empty() { None } else { Some(query) });
        url.to_string()
    }

    /// An Ingress for `host` with the example's annotations, its auth-url pointing at `auth_url`
    /// and no auth cache.
    pub fn spec(&self, host: &str, auth_url: String) -> IngressSpec {
        IngressSpec {
            host: host.to_string(),
            auth_url,
            response_headers: self.response_headers.clone(),
            cache_key: None,
            cache_duration: self.cache_duration.clone(),
            keepalive: self.keepalive,
        }
    }

    /// Like [`ExampleIngress::spec`] with the example's `auth-cache-key` and `auth-cache-duration`.
    pub fn cached_spec(&self, host: &str, auth_url: String) -> IngressSpec {
        IngressSpec { cache_key: Some(self.cache_key.clone()), ..self.spec(host, auth_url) }
    }
}

/// Starts nginx rendering `specs` in `flavour`, proxying to `app`.
pub async fn ingress_nginx(specs: Vec<IngressSpec>, flavour: Flavour, app: SocketAddr) -> Nginx {
    Nginx::start(move |prefix, port| render_ingresses(&specs, flavour, prefix, port, app)).await
}

/// The sum of every `jwtgate_decisions_total` series: how many requests the gate decided.
pub fn decisions(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("jwtgate_decisions_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
