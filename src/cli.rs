//! The command line: `serve`, `check-config`, `demo`, `explain`, `--version`.
//!
//! Exit codes: 0 success, 2 bad configuration (every problem listed, nothing bound),
//! 1 any other failure (for example the port is taken). `explain`: 0 allowed, 1 refused, 2 bad
//! config or query.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::gate::Gate;

#[derive(Parser)]
#[command(name = "jwtgate", version, about = "JWT verification for nginx auth_request and ingress-nginx auth-url")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Config file [default: $JWTGATE_CONFIG, else /etc/jwtgate/config.yaml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Validate a config file offline and print a summary per issuer.
    CheckConfig {
        /// Config file [default: $JWTGATE_CONFIG, else /etc/jwtgate/config.yaml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Start a development issuer and a gate that trusts it, and print a token to try.
    Demo {
        /// Where the gate listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the development issuer listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        issuer_listen: SocketAddr,
        /// Log format for the demo (text or json).
        #[arg(long, default_value = "text")]
        log_format: String,
    },
    /// Explain why a token is allowed or refused: every check /verify runs, and its answer.
    ///
    /// Exit code: 0 allowed, 1 refused, 2 bad config or query. The signature is never printed.
    Explain {
        /// Config file [default: $JWTGATE_CONFIG, else /etc/jwtgate/config.yaml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The auth-url query string of the Ingress, e.g. 'aud=orders-api&scope=orders:read'.
        #[arg(long, value_name = "QUERY")]
        query: Option<String>,
        /// The original request's method (X-Original-Method).
        #[arg(long, value_name = "M", default_value = "GET")]
        method: String,
        /// The original request's URL (X-Original-URL).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Fetch nothing: skip the key and signature checks (and say so).
        #[arg(long)]
        offline: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The token, or `-` (the default) to read it from standard input.
        #[arg(value_name = "TOKEN|-")]
        token: Option<String>,
    },
}

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("JWTGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/jwtgate/config.yaml"))
}

fn load(flag: Option<PathBuf>) -> Result<(PathBuf, Config), ExitCode> {
    let path = config_path(flag);
    match Config::load(&path) {
        Ok(c) => Ok((path, c)),
        Err(errors) => {
            eprintln!("{}: invalid configuration:", path.display());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            Err(ExitCode::from(2))
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load(config) {
            Ok((_, c)) => {
                println!("config ok");
                for line in c.summary() {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config } => {
            let (path, config) = match load(config) {
                Ok(x) => x,
                Err(code) => return code,
            };
            crate::telemetry::init(crate::telemetry::format_from_env(config.log.format), &config.log.level);
            let rt = runtime();
            let code = rt.block_on(serve(path, config));
            // Everything that matters has stopped; a resolver thread still blocked on the network
            // must not hold the exit (shutdown never waits on the identity provider).
            rt.shutdown_background();
            code
        }
        Command::Explain { config, query, method, url, offline, json, token } => {
            let (_, config) = match load(config) {
                Ok(x) => x,
                Err(code) => return code,
            };
            let token = match token.as_deref() {
                Some(t) if t != "-" => t.to_string(),
                _ => {
                    let mut buf = String::new();
                    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf) {
                        eprintln!("explain: cannot read the token from standard input: {e}");
                        return ExitCode::from(2);
                    }
                    buf
                }
            };
            // Fetch problems (a skipped JWKS entry, a failed fetch) are logged to stderr.
            crate::telemetry::init(LogFormat::Text, "warn");
            let query = query.map(|q| q.strip_prefix('?').map(str::to_string).unwrap_or(q));
            let request = crate::explain::Request { token, query, method: method.to_ascii_uppercase(), url, offline };
            let now = crate::gate::unix_now();
            match runtime().block_on(crate::explain::explain(config, request, now)) {
                Ok(report) => {
                    let text = if json {
                        serde_json::to_string_pretty(&report.to_json()).expect("JSON") + "\n"
                    } else {
                        report.to_text(now)
                    };
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
                    ExitCode::from(report.exit_code())
                }
                Err(e) => {
                    eprintln!("explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Demo { listen, issuer_listen, log_format } => {
            let format = if log_format == "json" { LogFormat::Json } else { LogFormat::Text };
            crate::telemetry::init(format, "info");
            runtime().block_on(demo(listen, issuer_listen))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

async fn serve(path: PathBuf, config: Config) -> ExitCode {
    let listen = config.listen;
    for line in config.summary() {
        tracing::info!(config = %path.display(), "{line}");
    }
    let gate = match Gate::new(config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{}: invalid configuration:\n  {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, version = env!("CARGO_PKG_VERSION"), "jwtgate listening");
    match crate::shutdown::serve(listener, gate, crate::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// The configuration `demo` runs with: one issuer (the development one), all three algorithms.
pub fn demo_config(issuer: &str, listen: SocketAddr) -> Config {
    let yaml = format!(
        r#"
listen: "{listen}"
issuers:
  - name: demo
    issuer: "{issuer}"
    audiences: ["demo-api"]
    algorithms: ["RS256", "ES256", "EdDSA"]
claims_to_headers:
  - {{claim: sub, header: X-Auth-Subject}}
  - {{claim: iss, header: X-Auth-Issuer}}
  - {{claim: email, header: X-Auth-Email}}
  - {{claim: realm_access.roles, header: X-Auth-Roles}}
jwks:
  min_refresh_interval_seconds: 1
shutdown:
  grace_seconds: 2
"#
    );
    Config::from_yaml(&yaml).expect("the demo config is valid")
}

async fn demo(listen: SocketAddr, issuer_listen: SocketAddr) -> ExitCode {
    let issuer = match crate::dev_issuer::DevIssuer::start(issuer_listen).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("demo: cannot start the development issuer on {issuer_listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: cannot listen on {listen}: {e} (choose another with --listen 127.0.0.1:PORT)");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let gate = Gate::new(demo_config(&issuer.issuer(), addr)).expect("demo gate");
    let server = tokio::spawn(crate::shutdown::serve(listener, gate.clone(), crate::shutdown::signal()));
    // Print the lines to try only once they work: the gate has fetched the issuer's keys.
    for _ in 0..500 {
        if gate.ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let mut claims = issuer.claims("demo-user", "demo-api", 3600);
    claims["email"] = "demo@example.com".into();
    claims["scope"] = "orders:read".into();
    claims["realm_access"] = serde_json::json!({"roles": ["viewer", "editor"]});
    let token = issuer.sign("eddsa-1", &claims);
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = "someone-else".into();
    let wrong = issuer.sign("rs256-1", &wrong_aud);

    println!("jwtgate demo: development issuer at {} (keys: RS256, ES256, EdDSA)", issuer.issuer());
    println!("gate listening on http://{addr}  (Ctrl-C to stop)\n");
    println!("A token valid for one hour (EdDSA, aud demo-api, scope orders:read):\n\n{token}\n");
    println!("Try it:\n");
    println!("  # 200 with X-Auth-Subject, X-Auth-Email, X-Auth-Roles");
    println!("  curl -i -H 'Authorization: Bearer {token}' http://{addr}/verify\n");
    println!("  # 401: no token");
    println!("  curl -i http://{addr}/verify\n");
    println!("  # 401: wrong audience");
    println!("  curl -i -H 'Authorization: Bearer {wrong}' http://{addr}/verify\n");
    println!("  # 403: the Ingress asks for a scope the token lacks");
    println!("  curl -i -H 'Authorization: Bearer {token}' 'http://{addr}/verify?scope=orders:write'\n");
    println!("  # readiness and metrics");
    println!("  curl -s http://{addr}/readyz; curl -s http://{addr}/metrics | grep jwtgate_decisions_total\n");

    match server.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
