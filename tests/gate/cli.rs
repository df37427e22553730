//! The real binary: exit codes, `check-config`, JSON logs, SIGTERM, and `demo`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jwtgate::dev_issuer::DevIssuer;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_jwtgate");

fn write_config(text: &str) -> (tempdir::Dir, std::path::PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.path.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A minimal temporary directory (no extra crate).
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!("jwtgate-cli-{}-{}", std::process::id(), fastrand::u64(..)));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("jwtgate {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_prints_config_ok_and_one_line_per_issuer() {
    let (_d, path) = write_config(
        "issuers:\n  - {name: a, issuer: 'https://a.example', audiences: [x]}\n  - {name: b, issuer: 'https://b.example', jwks_uri: 'https://b.example/keys', audiences: [y], algorithms: [ES256]}\n",
    );
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "config ok");
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[1].starts_with("issuer a: https://a.example") && lines[1].contains("discovery"));
    assert!(lines[2].starts_with("issuer b: https://b.example") && lines[2].contains("ES256"));
}

#[test]
fn check_config_reads_jwtgate_config_from_the_environment() {
    let (_d, path) = write_config("issuers:\n  - {name: a, issuer: 'https://a.example', audiences: [x]}\n");
    let out = Command::new(BIN).arg("check-config").env("JWTGATE_CONFIG", &path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_config_lists_every_problem_exits_2_and_binds_nothing() {
    let port = free_port();
    let (_d, path) = write_config(&format!(
        "listen: \"127.0.0.1:{port}\"\nissuers:\n  - name: BAD\n    issuer: nope\n    audiences: []\n    algoritms: [RS256]\n"
    ));
    for cmd in ["serve", "check-config"] {
        let started = Instant::now();
        let out = Command::new(BIN).args([cmd, "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for key in ["issuers[0].name", "issuers[0].issuer", "issuers[0].audiences", "issuers[0].algoritms: unknown key"]
        {
            assert!(stderr.contains(key), "{cmd}: missing {key} in {stderr}");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "{cmd} bound the port");
    }
}

#[test]
fn a_policy_that_does_not_compile_is_a_config_error_at_its_key() {
    let (_d, path) = write_config(
        "issuers:\n  - {name: a, issuer: 'https://a.example', audiences: [x]}\npolicies:\n  fine: 'claims.sub == \"a\"'\n  unclosed: 'claims.roles.exists(r, r == \"admin\"'\n  typo: 'claim.sub == \"a\"'\n  nofn: 'now() > 0'\n",
    );
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in
        ["policies.unclosed: ", "policies.typo: unknown variable `claim`", "policies.nofn: unknown function `now`"]
    {
        assert!(stderr.contains(key), "missing {key} in {stderr}");
    }
    assert!(!stderr.contains("policies.fine"), "{stderr}");
}

#[test]
fn missing_config_file_exits_2() {
    let out = Command::new(BIN).args(["serve", "--config", "/nonexistent/jwtgate.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test]
async fn serve_logs_json_refusals_without_tokens_and_exits_0_on_sigterm() {
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = free_port();
    let yaml = config_yaml(&issuer, "", "policies:\n  sales-only: 'claims.department == \"sales\"'\n")
        .replace("listen: \"127.0.0.1:0\"", &format!("listen: \"127.0.0.1:{port}\""));
    let (_d, path) = write_config(&yaml);
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("JWTGATE_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("measured: debug binary start to ready: {:?}", started.elapsed());
    let expired = issuer.sign("rs256-1", &issuer.claims("u", AUD, -600));
    let r = client
        .get(format!("{base}/verify"))
        .bearer_auth(&expired)
        .header("X-Request-ID", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let good = issuer.sign("es256-1", &issuer.claims("u", AUD, 600));
    let r = client.get(format!("{base}/verify")).bearer_auth(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A policy that cannot evaluate (the token has no `department`) denies, logged at warn.
    let r = client.get(format!("{base}/verify?policy=sales-only")).bearer_auth(&good).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let pid = child.id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let stopped = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    assert!(stopped.elapsed() < Duration::from_secs(5));

    let mut refusal = None;
    let mut policy_error = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        assert!(!line.contains(&expired) && !line.contains(&good), "a token was logged: {line}");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        if v["message"] == "refused" && refusal.is_none() {
            refusal = Some(v);
        } else if v["message"] == "policy could not be evaluated; denied" {
            policy_error = Some(v);
        }
    }
    let policy_error = policy_error.expect("a warn line for the policy that could not evaluate");
    assert_eq!(policy_error["level"], "WARN");
    assert_eq!(policy_error["policy"], "sales-only");
    assert_eq!(policy_error["reason"], "policy");
    assert!(policy_error["problem"].as_str().unwrap().contains("department"), "{policy_error}");
    let refusal = refusal.expect("one log line per refused decision");
    assert_eq!(refusal["reason"], "expired");
    assert_eq!(refusal["issuer"], "main");
    assert_eq!(refusal["request_id"], "req-42");
    assert_eq!(refusal["level"], "INFO");
}

#[tokio::test]
async fn demo_prints_a_token_that_the_demo_gate_accepts() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut token = None;
    let mut curl_lines = 0;
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("ey") {
            token = Some(line.trim().to_string());
        }
        curl_lines += line.trim_start().starts_with("curl ") as usize;
        if line.contains("readiness and metrics") {
            break;
        }
        line.clear();
    }
    let token = token.expect("demo prints a token");
    assert!(curl_lines >= 4, "allowed, missing, wrong audience and scope-refused curl lines");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let verify = format!("http://127.0.0.1:{port}/verify");
    let r = client.get(&verify).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-subject"], "demo-user");
    assert_eq!(client.get(&verify).send().await.unwrap().status(), 401);
    let r = client.get(format!("{verify}?scope=orders:write")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
