//! The image's runtime contract without an engine: the Dockerfile runs the release binary as
//! uid/gid 65532 (distroless `nonroot`) with a read-only root filesystem, no shell and no HOME.
//! This runs the release binary that way (`setpriv`, cwd `/`, an empty environment, a config
//! file and directory it cannot write) and proves it becomes ready, decides and shuts down cleanly.
//!
//! It needs the release binary, so it is `#[ignore]`d: a plain `cargo test` reports it as ignored
//! (a visible skip, never a pass). `scripts/test.sh` builds the binary, sets `JWTGATE_RELEASE_BIN`
//! and runs it with `--ignored`; once run, an unset or unusable `JWTGATE_RELEASE_BIN` fails.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use jwtgate::dev_issuer::DevIssuer;
use serde_json::Value;

use crate::helpers::*;

/// The distroless `nonroot` user and group, as in the Dockerfile's `USER 65532:65532`.
const NONROOT: &str = "65532";

fn release_bin() -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os("JWTGATE_RELEASE_BIN")
            .expect("JWTGATE_RELEASE_BIN is not set: scripts/test.sh builds the release binary and sets it"),
    );
    assert!(p.is_file(), "JWTGATE_RELEASE_BIN is set but {} is not a file", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the release binary: scripts/test.sh sets JWTGATE_RELEASE_BIN and runs it with --ignored"]
async fn release_binary_runs_as_uid_65532_with_cwd_root_no_home_and_a_read_only_config() {
    let bin = release_bin();
    assert_eq!(
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).ok(),
        Some("0".to_string()),
        "switching to uid 65532 needs root (CI runs as root)"
    );
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = free_port();
    // The config as the chart mounts it: a directory and file owned by root, read-only.
    let dir = std::env::temp_dir().join(format!("jwtgate-runtime-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let yaml =
        config_yaml(&issuer, "", "").replace("listen: \"127.0.0.1:0\"", &format!("listen: \"127.0.0.1:{port}\""));
    std::fs::write(&config, yaml).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // A copy of the binary the unprivileged user may execute (target/ may not be traversable).
    let exe = dir.join("jwtgate");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(&bin, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();

    // Its log goes to a file the test (root) opened; the process itself writes no file.
    let log = std::env::temp_dir().join(format!("jwtgate-runtime-{}.log", std::process::id()));
    let mut child = Command::new("setpriv")
        .args(["--reuid", NONROOT, "--regid", NONROOT, "--clear-groups", "--inh-caps=-all", "--no-new-privs"])
        .arg(&exe)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir("/")
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let pid = child.id();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until("the release binary, as uid 65532, is ready", async || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("jwtgate exited early with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    // It really runs as 65532, in /, with an empty environment.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == NONROOT), "{uid_line}");
    let gid_line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    assert!(gid_line.split_whitespace().skip(1).all(|g| g == NONROOT), "{gid_line}");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), PathBuf::from("/"));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.is_empty(), "environment not empty: {:?}", String::from_utf8_lossy(&environ));
    // It cannot write its own config, which it never needs to.
    assert!(
        Command::new("setpriv")
            .args(["--reuid", NONROOT, "--regid", NONROOT, "--clear-groups", "sh", "-c"])
            .arg(format!("echo x >> {}", config.display()))
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
            != Some(0),
        "the config must be read-only for uid 65532"
    );

    // It decides.
    let token = issuer.sign("es256-1", &issuer.claims("alice", AUD, 3600));
    let allow = client.get(format!("{url}/verify")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(allow.status(), 200);
    assert_eq!(allow.headers()["x-auth-subject"], "alice");
    let refuse = client.get(format!("{url}/verify")).send().await.unwrap();
    assert_eq!(refuse.status(), 401);
    let ready: Value = client.get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["issuers"]["main"]["state"], "ready");

    // And stops cleanly on SIGTERM, as the kubelet asks it to.
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
}
