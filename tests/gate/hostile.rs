//! Hostile and unusual requests (the contract's section of that name), over HTTP against the
//! running service: memory a query stream can make the gate keep (read from `/proc` of the real
//! binary), header-count and header-size limits, forged log lines in both log formats, identity
//! headers that could decode two ways, keep-alive idle timeout and `Connection: close` while
//! draining.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jwtgate::dev_issuer::DevIssuer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_jwtgate");

/// The real binary serving a config that trusts an in-process development issuer, with its
/// stderr (the log) collected line by line, as raw bytes.
struct RealGate {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    issuer: DevIssuer,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RealGate {
    async fn spawn(log_format: &str) -> RealGate {
        let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let yaml = config_yaml(&issuer, "", "").replace("\"127.0.0.1:0\"", &format!("\"127.0.0.1:{port}\""));
        let dir = std::env::temp_dir().join(format!("jwtgate-hostile-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("JWTGATE_LOG_FORMAT", log_format)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        let gate = RealGate { child, url: format!("http://127.0.0.1:{port}"), log, issuer, _dir: TempDir(dir) };
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        wait_until("the real binary is ready", async || {
            client.get(format!("{}/readyz", gate.url)).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        gate
    }

    /// VmRSS of the process, in KiB, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn log_lines(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RealGate {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_under_64_mib_after_1024_distinct_60_kib_queries() {
    let gate = RealGate::spawn("json").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let before = gate.rss_kib();
    // About 60 KiB each (the `http` crate caps a URI at 64 KiB).
    let padding = ",a".repeat(30 * 1024);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..1024 {
        let url = format!("{}/verify?aud=q{i}{padding}", gate.url);
        let status = client.get(url).send().await.unwrap().status().as_u16();
        *statuses.entry(status).or_insert(0) += 1;
    }
    let after = gate.rss_kib();
    eprintln!("RSS before the query stream {} KiB, after {} KiB ({statuses:?})", before, after);
    // No token: each is refused after its (valid) policy was parsed.
    assert_eq!(statuses.get(&401), Some(&1024), "{statuses:?}");
    assert!(after < 64 * 1024, "RSS {after} KiB after 1,024 long queries (started at {before} KiB)");
}

/// A raw HTTP/1.1 request with `extra` headers; returns the status and the response head
/// (`None` when the connection closed without an answer).
async fn raw_request(addr: std::net::SocketAddr, head: Vec<u8>) -> Option<(u16, String)> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Write while reading: a server that refuses early may answer before the head is sent.
    // The write half stays open until the answer is read: hyper treats a half-closed connection
    // as gone.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&head).await;
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                response.extend_from_slice(&buf[..n]);
                if response.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => panic!("no answer within 20 s"),
        }
    }
    write.abort();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn request_with_headers(token: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut head = format!("GET /verify HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn filler(count: usize, value_len: usize) -> Vec<(String, String)> {
    (0..count).map(|i| (format!("X-Filler-{i}"), "v".repeat(value_len))).collect()
}

#[tokio::test]
async fn a_valid_token_with_200_headers_is_allowed_and_past_the_limits_is_refused_with_4xx() {
    let app = spawn_app().await;
    let token = app.token("rs256-1");

    // 200 headers, and 256 headers in 64 KiB: decided like any other request.
    let (status, head) = raw_request(app.addr, request_with_headers(&token, &filler(200, 20))).await.unwrap();
    assert_eq!(status, 200, "{head}");
    let (status, head) = raw_request(app.addr, request_with_headers(&token, &filler(253, 200))).await.unwrap();
    assert_eq!(status, 200, "{head}");

    // Just past either limit: refused by jwtgate, with the contract's no-store headers.
    for (what, headers) in [("300 headers", filler(300, 10)), ("70 KiB of headers", filler(10, 7 * 1024))] {
        let (status, head) = raw_request(app.addr, request_with_headers(&token, &headers)).await.unwrap();
        assert_eq!(status, 431, "{what}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("cache-control: no-store") && lower.contains("x-accel-expires: 0"), "{what}: {head}");
    }
    assert_eq!(
        app.metric(r#"jwtgate_decisions_total{decision="deny",issuer="none",reason="headers_too_large"}"#).await,
        2.0
    );

    // Far past them: refused by the HTTP layer itself (a 4xx, or a closed connection), never 200.
    for (what, headers) in [("2,000 headers", filler(2000, 4)), ("1 MiB of headers", filler(64, 16 * 1024))] {
        match raw_request(app.addr, request_with_headers(&token, &headers)).await {
            Some((status, head)) => assert!((400..500).contains(&status), "{what}: {head}"),
            None => eprintln!("{what}: connection closed without an answer"),
        }
    }
    // And the connection-level refusals did not disturb the service.
    assert_eq!(app.verify(Some(&token), "").await.status(), 200);
}

/// Every line is one well-formed log record without a control character.
fn assert_log_is_clean(format: &str, lines: &[Vec<u8>]) {
    assert!(!lines.is_empty());
    for raw in lines {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        assert!(
            line.iter().all(|b| !b.is_ascii_control() || *b == b'\t'),
            "{format}: control character in log line {:?}",
            String::from_utf8_lossy(line)
        );
        let text = std::str::from_utf8(line).unwrap();
        // C1 controls (U+0080..U+009F, CSI among them) and bidirectional overrides too.
        assert!(
            text.chars().all(|c| c == '\t' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))),
            "{format}: control character in log line {text:?}"
        );
        match format {
            "json" => {
                let v: Value =
                    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON record ({e}): {text}"));
                assert!(v["timestamp"].is_string() && v["level"].is_string(), "{text}");
            }
            _ => {
                // `2026-11-30T05:35:59.123456Z  INFO ...`: a record starts with its timestamp.
                let b = text.as_bytes();
                assert!(
                    b.len() > 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && text[..4].parse::<u32>().is_ok(),
                    "text: a line that is not a log record (forged?): {text:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_and_escapes_in_any_client_field_never_forge_a_log_line_in_either_format() {
    for format in ["text", "json"] {
        let gate = RealGate::spawn(format).await;
        let addr: std::net::SocketAddr = gate.url.trim_start_matches("http://").parse().unwrap();
        let token = gate.issuer.sign("rs256-1", &gate.issuer.claims("user-1", AUD, 3600));
        let evil = "%0d%0a2026-01-01T00:00:00.000000Z%20%20INFO%20FORGED%1b%5b2J%c2%9b%e2%80%ae%0a";
        let queries = [
            format!("issuer=nope{evil}"),
            format!("aud=x&bad{evil}=1"),
            format!("aud={evil}&scope=s{evil}&x{evil}"),
            format!("issuer=main,{evil}"),
        ];
        for q in &queries {
            let head = format!("GET /verify?{q} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n\r\n");
            let (status, _) = raw_request(addr, head.into_bytes()).await.unwrap();
            assert!(status == 400 || status == 403 || status == 401, "{q}: {status}");
        }
        // Header values: obs-text (C1 controls and bidi overrides as UTF-8) in X-Request-ID; a
        // raw ESC, CR or LF in a header name or value is refused by the HTTP parser.
        let mut with_c1 = b"GET /verify?issuer=nope HTTP/1.1\r\nHost: gate\r\nX-Request-ID: id-".to_vec();
        with_c1.extend_from_slice("\u{9b}2J\u{202e}FORGED\u{85}next".as_bytes());
        with_c1.extend_from_slice(b"\r\n\r\n");
        assert_eq!(raw_request(addr, with_c1).await.unwrap().0, 400);
        for raw in [
            &b"GET /verify HTTP/1.1\r\nHost: gate\r\nX-Request-ID: a\x1b[2Jb\r\n\r\n"[..],
            b"GET /verify HTTP/1.1\r\nHost: gate\r\nX-Bad\x1b[2J: v\r\n\r\n",
            b"GET /verify HTTP/1.1\r\nHost: gate\r\nX-Request-ID: a\rFORGED\r\n\r\n",
            b"GET /verify HTTP/1.1\r\nHost: gate\r\nX-Bad\nFORGED: v\r\n\r\n",
        ] {
            if let Some((status, head)) = raw_request(addr, raw.to_vec()).await {
                assert!((400..500).contains(&status), "{head}");
            }
        }
        // The refusals were logged (the log is not just silent) and each stayed on its line.
        wait_until("the refusals are logged", async || {
            gate.log_lines().iter().filter(|l| String::from_utf8_lossy(l).contains("FORGED")).count() >= 5
        })
        .await;
        let lines = gate.log_lines();
        assert_log_is_clean(format, &lines);
        let forged = lines.iter().map(|l| String::from_utf8_lossy(l)).filter(|l| l.contains("FORGED")).count();
        assert!(forged >= 5, "{format}: {forged} log lines mention the attempts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_proofs_never_forge_a_log_line_and_a_missing_original_header_is_named() {
    for format in ["text", "json"] {
        let gate = RealGate::spawn(format).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let keys = jwtgate::dev_issuer::KeyRing::standard();
        let mut claims = gate.issuer.claims("user-1", AUD, 3600);
        claims["cnf"] = json!({"jkt": keys.thumbprint("es256-1")});
        let token = gate.issuer.sign("rs256-1", &claims);
        let url = "https://api.example.com/x";
        let now = jwtgate::gate::unix_now();
        let evil = "\r\n2026-01-01T00:00:00.000000Z  INFO FORGED\u{1b}[2J\u{9b}\u{202e}\n";
        for (jti, htu) in
            [(evil.to_string(), url.to_string()), ("j".into(), format!("{url}{evil}")), (evil.into(), evil.into())]
        {
            let proof = keys.dpop_proof("es256-1", "GET", &htu, &token, now, &jti);
            let send = |p: String| {
                client
                    .get(format!("{}/verify", gate.url))
                    .header("Authorization", format!("DPoP {token}"))
                    .header("DPoP", p)
                    .header("X-Original-Method", "GET")
                    .header("X-Original-URL", url)
                    .send()
            };
            let first = send(proof.clone()).await.unwrap().status();
            let second = send(proof).await.unwrap().status();
            assert_eq!(second, 401, "{format}: replayed or refused ({first})");
        }
        let proof = keys.dpop_proof("es256-1", "GET", url, &token, now, "k");
        let r = client
            .get(format!("{}/verify", gate.url))
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", proof)
            .header("X-Original-Method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        wait_until("the missing X-Original-URL is logged", async || {
            gate.log_lines().iter().any(|l| {
                let l = String::from_utf8_lossy(l);
                l.contains("WARN") && l.contains("x-original-url") && l.contains("proxy_set_header")
            })
        })
        .await;
        let lines = gate.log_lines();
        assert_log_is_clean(format, &lines);
        let text: String = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        assert!(!text.contains("FORGED"), "{format}: proof content reached the log");
        assert!(text.contains("replayed"), "{format}: the replay refusal is logged with its detail");
    }
}

/// Decodes a header value written by jwtgate: plain text, or RFC 2047 `B` encoded words
/// separated by spaces (RFC 2047 §6.2: the space between adjacent encoded words is dropped).
fn decode_header(value: &str) -> String {
    if !value.starts_with("=?") {
        return value.to_string();
    }
    let mut bytes = Vec::new();
    for word in value.split(' ') {
        assert!(word.len() <= 75, "encoded word longer than 75 characters: {word}");
        let b64 = word.strip_prefix("=?UTF-8?B?").and_then(|w| w.strip_suffix("?=")).unwrap();
        let chunk = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        // Each word holds whole characters (RFC 2047 §5).
        std::str::from_utf8(&chunk).unwrap_or_else(|_| panic!("an encoded word splits a character: {word}"));
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).unwrap()
}

/// How an upstream reads an array header back: compact JSON when it is JSON, else split on `,`.
fn decode_array(value: &str) -> Value {
    let text = decode_header(value);
    if text.starts_with('[') {
        serde_json::from_str(&text).unwrap()
    } else {
        Value::Array(text.split(',').map(|s| Value::String(s.into())).collect())
    }
}

#[tokio::test]
async fn identity_headers_decode_one_way_only() {
    let app = spawn_app().await;
    let header = async |claims: Value, name: &str| -> String {
        let r = app.verify(Some(&app.sign("rs256-1", &claims)), "").await;
        assert_eq!(r.status(), 200);
        r.headers()[name].to_str().unwrap().to_string()
    };
    let with_roles = |roles: Value| {
        let mut c = app.issuer.claims("user-1", AUD, 3600);
        c["realm_access"] = json!({ "roles": roles });
        c
    };
    let cases = [
        json!(["admin", "ops"]),
        json!(["admin,ops"]),
        json!(["x,admin"]),
        json!(["say \"hi\"", "ops"]),
        json!(["Zoë", "ops"]),
        json!(["=?UTF-8?B?YWRtaW4=?=", "x"]),
        json!(["", "a"]),
        json!([" padded", "a"]),
    ];
    let mut seen = std::collections::HashMap::new();
    for roles in cases {
        let value = header(with_roles(roles.clone()), "x-auth-roles").await;
        assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "{value}");
        assert_eq!(decode_array(&value), roles, "{value}");
        if let Some(other) = seen.insert(value.clone(), roles.clone()) {
            panic!("{roles} and {other} both send {value}");
        }
    }
    assert_eq!(seen.iter().find(|(_, r)| **r == json!(["admin", "ops"])).unwrap().0, "admin,ops");
    assert_eq!(seen.iter().find(|(_, r)| **r == json!(["admin,ops"])).unwrap().0, r#"["admin,ops"]"#);

    // An encoded-word marker anywhere in a string is encoded, so no decoder reads `x admin`.
    let mut claims = app.issuer.claims("user-1", AUD, 3600);
    claims["email"] = json!("x =?UTF-8?B?YWRtaW4=?=");
    let value = header(claims, "x-auth-email").await;
    assert!(value.starts_with("=?UTF-8?B?"), "{value}");
    assert_eq!(decode_header(&value), "x =?UTF-8?B?YWRtaW4=?=");

    // A long non-ASCII value is several encoded words, none over 75 characters, none splitting
    // a character.
    let mut claims = app.issuer.claims("user-1", AUD, 3600);
    let long = "é€😀a".repeat(40);
    claims["email"] = json!(long);
    let value = header(claims, "x-auth-email").await;
    assert!(value.split(' ').count() > 1, "{value}");
    assert_eq!(decode_header(&value), long);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_still_open_after_65_seconds() {
    let app = spawn_app().await;
    let token = app.token("rs256-1");
    let request = format!("GET /verify HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let read_response = async |stream: &mut TcpStream| -> String {
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the gate closed the connection");
            response.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(response).unwrap()
    };
    stream.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Longer than nginx's default upstream keepalive_timeout (60 s): nginx closes, not jwtgate.
    let mut probe = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(65), stream.peek(&mut probe)).await {
        Err(_) => {}
        Ok(r) => panic!("the gate closed or wrote on an idle keep-alive connection within 65 s: {r:?}"),
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn while_draining_every_answer_says_connection_close() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = config_yaml(&issuer, "", "").replace("grace_seconds: 1", "grace_seconds: 1\n  drain_delay_seconds: 3");
    let mut app = spawn_app_with(issuer, &yaml).await;
    app.wait_ready().await;
    let token = app.token("rs256-1");
    let r = app.verify(Some(&token), "").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("connection").is_none(), "keep-alive before shutdown");

    app.server.signal_stop();
    wait_until("readyz reports draining", async || app.readyz().await.1["draining"] == json!(true)).await;
    for (token, status) in [(Some(token.as_str()), 200), (None, 401)] {
        let r = app.verify(token, "").await;
        assert_eq!(r.status(), status);
        assert_eq!(r.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    }
    app.stop().await;
}

/// A refusal's log line answers "why" on its own (issue 17's "logs that explain"): the
/// `error_description` the challenge carries and, for a 403, the requirement that failed, in
/// both formats, never a value from the token; and no ANSI colour codes in a log that is not a
/// terminal (checked by `assert_log_is_clean`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_log_line_says_why_and_which_requirement_failed_never_a_token_value() {
    for format in ["json", "text"] {
        let gate = RealGate::spawn(format).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let token = gate.issuer.sign("rs256-1", &gate.issuer.claims("user-1", AUD, 3600));
        let cases = [
            ("aud=another-api", 401, "audience not accepted", None),
            ("scope=orders:admin", 403, "insufficient scope", Some("scope=orders:admin")),
            ("claim.realm_access.roles=admin", 403, "claim requirement not met", Some("claim.realm_access.roles")),
        ];
        for (query, status, description, requirement) in cases {
            let r = client.get(format!("{}/verify?{query}", gate.url)).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), status, "{query}");
            wait_until("the refusal is logged", async || {
                gate.log_lines().iter().any(|l| String::from_utf8_lossy(l).contains(description))
            })
            .await;
            let lines = gate.log_lines();
            let line = lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .find(|l| l.contains(description))
                .unwrap();
            match format {
                "json" => {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(v["error_description"], description, "{line}");
                    assert_eq!(v["status"], status, "{line}");
                    assert_eq!(v["requirement"].as_str(), requirement, "{line}");
                }
                _ => {
                    assert!(line.contains(&format!("error_description=\"{description}\"")), "{line}");
                    if let Some(req) = requirement {
                        assert!(line.contains(&format!("requirement={req}")), "{line}");
                    }
                }
            }
        }
        let lines = gate.log_lines();
        assert_log_is_clean(format, &lines);
        let signature = token.rsplit('.').next().unwrap();
        for l in lines.iter().map(|l| String::from_utf8_lossy(l)) {
            assert!(!l.contains(&token) && !l.contains(signature) && !l.contains("user-1"), "token value in log: {l}");
        }
    }
}
