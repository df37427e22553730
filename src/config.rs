//! The configuration file: loading, validation and defaults.
//!
//! YAML is read into a generic value first and then walked by hand, so that every problem
//! (unknown key, wrong type, bad value) is collected with its key path and reported in one
//! pass: users fix everything at once, and a typo can never silently disable a check.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde_json::{Map, Value};
use url::Url;

use crate::algorithm::Algorithm;
use crate::claims::ClaimPath;
use crate::headers::ClaimHeader;
use crate::rules::Policies;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub issuers: Vec<IssuerConfig>,
    pub claims_to_headers: Vec<ClaimHeader>,
    /// Named CEL policies (`policies:`), compiled; referenced from an `auth-url` as `?policy=`.
    pub policies: Arc<Policies>,
    pub jwks: JwksConfig,
    pub token: TokenConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub server: ServerConfig,
    /// DPoP proof verification (RFC 9449).
    pub dpop: crate::dpop::DpopConfig,
}

/// One trusted identity provider.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// `[a-z0-9_-]{1,64}`: used by `?issuer=` and as the metrics label.
    pub name: String,
    /// Must equal the token's `iss` exactly.
    pub issuer: String,
    /// Where the keys are; `None` means OIDC discovery.
    pub jwks_uri: Option<Url>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway_seconds: u64,
    /// A PEM bundle trusted, in addition to the system roots, for this issuer's endpoints.
    pub ca_file: Option<PathBuf>,
    /// The claim holding the audience: `aud` (default), or e.g. `client_id` for Cognito access tokens.
    pub audience_claim: String,
    /// Claims consulted, in order, for granted scopes (`scope` and `scp` by default).
    pub scope_claims: Vec<String>,
    /// Refuse tokens whose `exp` is further than this ahead of now.
    pub max_token_lifetime_seconds: Option<u64>,
    /// Require this JOSE `typ` (compared case-insensitively, `application/` prefix ignored; RFC 8725 §3.11).
    pub required_typ: Option<String>,
}

/// Key-set lifecycle knobs (contract section "Key-set lifecycle").
#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    pub max_stale: Duration,
    pub fetch_timeout: Duration,
    /// Cap on a discovery or JWKS response body.
    pub max_response_bytes: usize,
    /// Cap on the number of keys taken from one JWKS.
    pub max_keys: usize,
}

/// Where tokens come from and how big they may be.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub max_bytes: usize,
    /// Also read the token from this cookie when there is no `Authorization` header.
    pub cookie: Option<String>,
}

/// The verified-token cache, and the cap on how long nginx may cache an allow.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub max_entries: u64,
    /// Estimated memory the cached identities (claims sets included) may hold.
    pub max_bytes: u64,
    pub max_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// After SIGTERM, keep serving (with `/readyz` at 503) this long so endpoints can be withdrawn.
    pub drain_delay: Duration,
    /// Then wait at most this long for in-flight requests.
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a connection may wait for (the whole head of) its next request: the idle
    /// keep-alive timeout, longer than nginx's default upstream `keepalive_timeout` (60 s) so
    /// that nginx, not jwtgate, closes idle connections and never reuses one being closed.
    pub idle_timeout: Duration,
}

/// Headers an identity header may never be: they would change how nginx or the upstream
/// handles the request itself, or they are jwtgate's own response headers.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "cookie",
    "set-cookie",
    "cache-control",
    "expires",
    "x-accel-expires",
    "x-accel-redirect",
    "location",
];

/// Every problem found in a config file, each naming its key path.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        Config::from_yaml(&text)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        // Duplicate keys are refused: with two `audiences:` one of them would silently lose.
        let value = crate::json::strict_value(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|e| ConfigErrors(vec![format!("config is not valid YAML: {e}")]))?;
        let mut errs = Vec::new();
        let config = read_config(&value, &mut errs);
        match config {
            Some(c) if errs.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errs)),
        }
    }

    /// One line per issuer, for `check-config` and the startup log.
    pub fn summary(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| {
                let keys = match &i.jwks_uri {
                    Some(u) => format!("jwks_uri {u}"),
                    None => "jwks_uri by discovery".to_string(),
                };
                let algs: Vec<&str> = i.algorithms.iter().map(|a| a.name()).collect();
                format!(
                    "issuer {}: {} ({keys}; audiences {}; algorithms {}; leeway {}s)",
                    i.name,
                    i.issuer,
                    i.audiences.join(","),
                    algs.join(","),
                    i.leeway_seconds
                )
            })
            .collect()
    }
}

/// A view of one YAML mapping that remembers which keys were read, to report the rest as unknown.
struct Section<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
    seen: Vec<&'static str>,
}

impl<'a> Section<'a> {
    fn new(path: &str, value: Option<&'a Value>, errs: &mut Vec<String>) -> Self {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                errs.push(format!("{}: must be a mapping", display_path(path)));
                None
            }
        };
        Section { path: path.to_string(), map, seen: Vec::new() }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str, errs: &mut Vec<String>) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errs.push(format!("{}: must be a string", self.key_path(key)));
                None
            }
        }
    }

    fn required_string(&mut self, key: &'static str, errs: &mut Vec<String>) -> Option<String> {
        let path = self.key_path(key);
        match self.get(key) {
            None => {
                errs.push(format!("{path}: required"));
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                errs.push(format!("{path}: must not be empty"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errs.push(format!("{path}: must be a string"));
                None
            }
        }
    }

    /// A non-negative integer within `min..=max`, or the default.
    fn integer(&mut self, key: &'static str, default: u64, min: u64, max: u64, errs: &mut Vec<String>) -> u64 {
        let path = self.key_path(key);
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => v,
                _ => {
                    errs.push(format!("{path}: must be an integer from {min} to {max}"));
                    default
                }
            },
            Some(_) => {
                errs.push(format!("{path}: must be an integer"));
                default
            }
        }
    }

    fn string_list(&mut self, key: &'static str, errs: &mut Vec<String>) -> Option<Vec<String>> {
        let path = self.key_path(key);
        match self.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.is_empty() => out.push(s.clone()),
                        _ => errs.push(format!("{path}[{i}]: must be a non-empty string")),
                    }
                }
                Some(out)
            }
            _ => {
                errs.push(format!("{path}: must be a list of strings"));
                None
            }
        }
    }

    /// Reports every key of this mapping that was never asked for.
    fn finish(self, errs: &mut Vec<String>) {
        if let Some(map) = self.map {
            for key in map.keys() {
                if !self.seen.contains(&key.as_str()) {
                    errs.push(format!("{}: unknown key", self.key_path(key)));
                }
            }
        }
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

fn read_config(root: &Value, errs: &mut Vec<String>) -> Option<Config> {
    if !root.is_object() {
        errs.push("(top level): must be a mapping with at least `issuers`".to_string());
        return None;
    }
    let mut top = Section::new("", Some(root), errs);

    let listen = match top.string("listen", errs) {
        None => SocketAddr::from(([0, 0, 0, 0], 8080)),
        Some(s) => s.parse().unwrap_or_else(|_| {
            errs.push(format!("listen: `{s}` is not an address:port"));
            SocketAddr::from(([0, 0, 0, 0], 8080))
        }),
    };

    let issuers = read_issuers(top.get("issuers"), errs);
    let claims_to_headers = read_claims_to_headers(top.get("claims_to_headers"), errs);
    let policies = read_policies(top.get("policies"), errs);

    let mut j = Section::new("jwks", top.get("jwks"), errs);
    let refresh = j.integer("refresh_interval_seconds", 300, 1, 7 * 86400, errs);
    let min_refresh = j.integer("min_refresh_interval_seconds", 10, 1, 86400, errs);
    let max_stale = j.integer("max_stale_seconds", 86400, 0, 30 * 86400, errs);
    let fetch_timeout = j.integer("fetch_timeout_seconds", 5, 1, 120, errs);
    let max_response_bytes = j.integer("max_response_bytes", 1 << 20, 1024, 64 << 20, errs);
    let max_keys = j.integer("max_keys", 100, 1, 10_000, errs);
    if min_refresh > refresh {
        errs.push("jwks.min_refresh_interval_seconds: must not exceed jwks.refresh_interval_seconds".into());
    }
    j.finish(errs);

    let mut t = Section::new("token", top.get("token"), errs);
    let max_bytes = t.integer("max_bytes", 8192, 256, 1 << 20, errs);
    let cookie = t.string("cookie", errs);
    if let Some(c) = &cookie
        && (c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
    {
        errs.push("token.cookie: must be a valid cookie name".into());
    }
    t.finish(errs);

    let mut c = Section::new("cache", top.get("cache"), errs);
    let max_entries = c.integer("max_entries", 30_000, 0, 100_000_000, errs);
    let cache_max_bytes = c.integer("max_bytes", 32 << 20, 1 << 20, 64 << 30, errs);
    let max_ttl = c.integer("max_ttl_seconds", 300, 0, 86400, errs);
    c.finish(errs);

    let mut l = Section::new("log", top.get("log"), errs);
    let format = match l.string("format", errs).as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            errs.push(format!("log.format: `{other}` is not one of json, text"));
            LogFormat::Json
        }
    };
    let level = l.string("level", errs).unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errs.push(format!("log.level: `{level}` is not a valid level or filter"));
    }
    l.finish(errs);

    let mut s = Section::new("shutdown", top.get("shutdown"), errs);
    let drain_delay = s.integer("drain_delay_seconds", 0, 0, 300, errs);
    let grace = s.integer("grace_seconds", 20, 0, 600, errs);
    s.finish(errs);

    let mut v = Section::new("server", top.get("server"), errs);
    let idle_timeout = v.integer("idle_timeout_seconds", 75, 1, 3600, errs);
    v.finish(errs);

    let dpop = read_dpop(top.get("dpop"), errs);

    top.finish(errs);

    Some(Config {
        listen,
        issuers: issuers?,
        claims_to_headers,
        policies: Arc::new(policies),
        jwks: JwksConfig {
            refresh_interval: Duration::from_secs(refresh),
            min_refresh_interval: Duration::from_secs(min_refresh),
            max_stale: Duration::from_secs(max_stale),
            fetch_timeout: Duration::from_secs(fetch_timeout),
            max_response_bytes: max_response_bytes as usize,
            max_keys: max_keys as usize,
        },
        token: TokenConfig { max_bytes: max_bytes as usize, cookie },
        cache: CacheConfig { max_entries, max_bytes: cache_max_bytes, max_ttl: Duration::from_secs(max_ttl) },
        log: LogConfig { format, level },
        shutdown: ShutdownConfig { drain_delay: Duration::from_secs(drain_delay), grace: Duration::from_secs(grace) },
        server: ServerConfig { idle_timeout: Duration::from_secs(idle_timeout) },
        dpop,
    })
}

/// The `dpop:` block; every key optional, defaults from the contract.
fn read_dpop(value: Option<&Value>, errs: &mut Vec<String>) -> crate::dpop::DpopConfig {
    use crate::dpop::{DpopConfig, ProofAlg};
    let defaults = DpopConfig::default();
    let mut d = Section::new("dpop", value, errs);
    let algorithms = match d.string_list("algorithms", errs) {
        None => defaults.algorithms,
        Some(list) if list.is_empty() => {
            errs.push("dpop.algorithms: must not be empty".into());
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, a)| {
                let alg = ProofAlg::parse(a);
                if alg.is_none() {
                    let names: Vec<&str> = ProofAlg::ALL.iter().map(|(n, _)| *n).collect();
                    errs.push(format!("dpop.algorithms[{j}]: `{a}` is not one of {}", names.join(", ")));
                }
                alg
            })
            .collect(),
    };
    let max_age_seconds = d.integer("max_age_seconds", defaults.max_age_seconds, 1, 3600, errs);
    let leeway_seconds = d.integer("leeway_seconds", defaults.leeway_seconds, 0, 600, errs);
    let external_scheme = d.string("external_scheme", errs);
    if let Some(s) = &external_scheme
        && !matches!(s.as_str(), "https" | "http")
    {
        errs.push(format!("dpop.external_scheme: `{s}` is not one of https, http"));
    }
    let replay_cache_bytes =
        d.integer("replay_cache_bytes", defaults.replay_cache_bytes as u64, 64 * 1024, 1 << 30, errs) as usize;
    d.finish(errs);
    DpopConfig { algorithms, max_age_seconds, leeway_seconds, external_scheme, replay_cache_bytes }
}

fn valid_issuer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn read_issuers(value: Option<&Value>, errs: &mut Vec<String>) -> Option<Vec<IssuerConfig>> {
    let items = match value {
        None => {
            errs.push("issuers: required (at least one issuer)".into());
            return None;
        }
        Some(Value::Array(items)) if items.is_empty() => {
            errs.push("issuers: must list at least one issuer".into());
            return None;
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errs.push("issuers: must be a list".into());
            return None;
        }
    };
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut iss_values = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("issuers[{i}]");
        let mut s = Section::new(&path, Some(item), errs);
        let name = s.required_string("name", errs);
        if let Some(n) = &name {
            if !valid_issuer_name(n) {
                errs.push(format!("{path}.name: `{n}` must match [a-z0-9_-]{{1,64}}"));
            } else if !names.insert(n.clone()) {
                errs.push(format!("{path}.name: `{n}` is used by another issuer"));
            }
        }
        let issuer = s.required_string("issuer", errs);
        if let Some(iss) = &issuer {
            match Url::parse(iss) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => {}
                _ => errs.push(format!("{path}.issuer: `{iss}` must be an http(s) URL")),
            }
            if !iss_values.insert(iss.clone()) {
                errs.push(format!("{path}.issuer: `{iss}` is configured twice"));
            }
        }
        let jwks_uri = s.string("jwks_uri", errs).and_then(|u| match Url::parse(&u) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => Some(url),
            _ => {
                errs.push(format!("{path}.jwks_uri: `{u}` must be an http(s) URL"));
                None
            }
        });
        let audiences = match s.string_list("audiences", errs) {
            None => {
                errs.push(format!("{path}.audiences: required"));
                Vec::new()
            }
            Some(a) if a.is_empty() => {
                errs.push(format!("{path}.audiences: must not be empty"));
                a
            }
            Some(a) => a,
        };
        let algorithms = match s.string_list("algorithms", errs) {
            None => vec![Algorithm::RS256],
            Some(list) if list.is_empty() => {
                errs.push(format!("{path}.algorithms: must not be empty"));
                vec![]
            }
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(j, a)| {
                    let alg = Algorithm::parse(a);
                    if alg.is_none() {
                        let names: Vec<&str> = crate::algorithm::NAMES.iter().map(|(n, _)| *n).collect();
                        errs.push(format!("{path}.algorithms[{j}]: `{a}` is not one of {}", names.join(", ")));
                    }
                    alg
                })
                .collect(),
        };
        let leeway_seconds = s.integer("leeway_seconds", 30, 0, 600, errs);
        let ca_file = s.string("ca_file", errs).map(PathBuf::from);
        // Read and parsed here, so `check-config` refuses what `serve` would (no network needed).
        if let Some(file) = &ca_file
            && let Err(e) = read_ca_file(file)
        {
            errs.push(format!("{path}.ca_file: {}: {e}", file.display()));
        }
        let audience_claim = s.string("audience_claim", errs).unwrap_or_else(|| "aud".into());
        let scope_claims = match s.string_list("scope_claims", errs) {
            None => vec!["scope".into(), "scp".into()],
            Some(l) if l.is_empty() => {
                errs.push(format!("{path}.scope_claims: must not be empty"));
                l
            }
            Some(l) => l,
        };
        let max_life = s.integer("max_token_lifetime_seconds", 0, 0, 365 * 86400, errs);
        let required_typ = s.string("required_typ", errs);
        s.finish(errs);
        if let (Some(name), Some(issuer)) = (name, issuer) {
            out.push(IssuerConfig {
                name,
                issuer,
                jwks_uri,
                audiences,
                algorithms,
                leeway_seconds,
                ca_file,
                audience_claim,
                scope_claims,
                max_token_lifetime_seconds: (max_life > 0).then_some(max_life),
                required_typ,
            });
        }
    }
    Some(out)
}

/// A policy name as `?policy=` lists it: never a comma, nothing that needs encoding in a query.
fn valid_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// `policies:` — a mapping of name to CEL expression, each compiled now (see [`crate::rules`]).
fn read_policies(value: Option<&Value>, errs: &mut Vec<String>) -> Policies {
    let map = match value {
        None => return Policies::default(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            errs.push("policies: must be a mapping of name to CEL expression".into());
            return Policies::default();
        }
    };
    let mut entries = Vec::with_capacity(map.len());
    for (name, expr) in map {
        if !valid_policy_name(name) {
            errs.push(format!("policies.{name}: the name must match [A-Za-z0-9_.-]{{1,64}}"));
            continue;
        }
        match expr {
            Value::String(s) if !s.trim().is_empty() => entries.push((name.as_str(), s.as_str())),
            _ => errs.push(format!("policies.{name}: must be a non-empty string (a CEL expression)")),
        }
    }
    Policies::compile(entries).unwrap_or_else(|e| {
        errs.extend(e);
        Policies::default()
    })
}

/// Reads an issuer's `ca_file`: a PEM bundle of at least one certificate, each of which must
/// parse as an X.509 trust anchor (checked by building a client that trusts only them, offline).
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("not a PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    reqwest::Client::builder().tls_certs_only(certs.clone()).build().map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        format!("not a usable CA certificate{cause}")
    })?;
    Ok(certs)
}

fn read_claims_to_headers(value: Option<&Value>, errs: &mut Vec<String>) -> Vec<ClaimHeader> {
    let default = || {
        vec![
            ClaimHeader { claim: ClaimPath::parse("sub").unwrap(), header: HeaderName::from_static("x-auth-subject") },
            ClaimHeader { claim: ClaimPath::parse("iss").unwrap(), header: HeaderName::from_static("x-auth-issuer") },
        ]
    };
    let items = match value {
        None => return default(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errs.push("claims_to_headers: must be a list".into());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("claims_to_headers[{i}]");
        let mut s = Section::new(&path, Some(item), errs);
        let claim = s.required_string("claim", errs).and_then(|c| match ClaimPath::parse(&c) {
            Ok(p) => Some(p),
            Err(why) => {
                errs.push(format!("{path}.claim: `{c}` {why}"));
                None
            }
        });
        let header = s.required_string("header", errs).and_then(|h| match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) if RESERVED_HEADERS.contains(&name.as_str()) => {
                errs.push(format!("{path}.header: `{h}` is reserved and cannot carry a claim"));
                None
            }
            Ok(name) => {
                if !seen.insert(name.clone()) {
                    errs.push(format!("{path}.header: `{h}` is used twice"));
                }
                Some(name)
            }
            Err(_) => {
                errs.push(format!("{path}.header: `{h}` is not a valid header name"));
                None
            }
        });
        s.finish(errs);
        if let (Some(claim), Some(header)) = (claim, header) {
            out.push(ClaimHeader { claim, header });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
issuers:
  - name: main
    issuer: "https://idp.example.com/realms/main"
    audiences: ["orders-api"]
"#;

    #[test]
    fn minimal_config_gets_the_contract_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.issuers[0].algorithms, vec![Algorithm::RS256]);
        assert_eq!(c.issuers[0].leeway_seconds, 30);
        assert_eq!(c.jwks.refresh_interval, Duration::from_secs(300));
        assert_eq!(c.jwks.min_refresh_interval, Duration::from_secs(10));
        assert_eq!(c.jwks.max_stale, Duration::from_secs(86400));
        assert_eq!(c.jwks.fetch_timeout, Duration::from_secs(5));
        assert_eq!(c.token.max_bytes, 8192);
        // Above nginx's default upstream keepalive_timeout (60 s): nginx closes idle connections.
        assert!(c.server.idle_timeout > Duration::from_secs(60));
        let headers: Vec<&str> = c.claims_to_headers.iter().map(|h| h.header.as_str()).collect();
        assert_eq!(headers, ["x-auth-subject", "x-auth-issuer"]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let bad = r#"
listen: "nowhere"
issuers:
  - name: "Bad Name"
    issuer: "not a url"
    audiences: []
    algorithms: ["HS256", "none"]
    leeway_second: 5
  - name: ok
    issuer: "https://a.example"
jwks:
  refresh_interval_seconds: "soon"
claims_to_headers:
  - claim: sub
    header: Authorization
  - claim: email
    header: "bad header"
unknown_top: 1
"#;
        let errs = Config::from_yaml(bad).unwrap_err().0;
        let expect = [
            "listen:",
            "issuers[0].name:",
            "issuers[0].issuer:",
            "issuers[0].audiences: must not be empty",
            "issuers[0].algorithms[0]:",
            "issuers[0].algorithms[1]:",
            "issuers[0].leeway_second: unknown key",
            "issuers[1].audiences: required",
            "jwks.refresh_interval_seconds: must be an integer",
            "claims_to_headers[0].header:",
            "claims_to_headers[1].header:",
            "unknown_top: unknown key",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x.starts_with(e)), "missing `{e}` in {errs:#?}");
        }
    }

    #[test]
    fn duplicate_issuer_names_are_refused() {
        let y = r#"
issuers:
  - {name: a, issuer: "https://a.example", audiences: [x]}
  - {name: a, issuer: "https://b.example", audiences: [x]}
"#;
        let errs = Config::from_yaml(y).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with("issuers[1].name:")), "{errs:?}");
    }

    #[test]
    fn hop_by_hop_and_reserved_headers_are_refused() {
        for h in ["Host", "Connection", "Content-Length", "Transfer-Encoding", "Upgrade", "Cache-Control"] {
            let y = format!("{MINIMAL}claims_to_headers:\n  - {{claim: sub, header: {h}}}\n");
            let errs = Config::from_yaml(&y).unwrap_err().0;
            assert!(errs[0].contains("reserved"), "{h}: {errs:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let y = format!("{MINIMAL}    audiences: [other]\n");
        let errs = Config::from_yaml(&y).unwrap_err().0;
        assert!(errs[0].contains("duplicate"), "{errs:?}");
    }

    #[test]
    fn server_idle_timeout_is_configurable_and_bounded() {
        let ok = Config::from_yaml(&format!("{MINIMAL}server:\n  idle_timeout_seconds: 120\n")).unwrap();
        assert_eq!(ok.server.idle_timeout, Duration::from_secs(120));
        let bad = Config::from_yaml(&format!("{MINIMAL}server:\n  idle_timeout_seconds: 0\n  idle: 1\n")).unwrap_err();
        assert!(bad.0.iter().any(|e| e.contains("server.idle_timeout_seconds")), "{bad}");
        assert!(bad.0.iter().any(|e| e.contains("server.idle")), "{bad}");
    }

    #[test]
    fn dpop_block_defaults_to_the_contract_and_reports_bad_values_with_their_paths() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.dpop.algs(), "ES256 ES384 ES512 EdDSA Ed25519 RS256 PS256");
        assert_eq!((c.dpop.max_age_seconds, c.dpop.leeway_seconds), (300, 30));
        assert_eq!(c.dpop.external_scheme, None);
        assert_eq!(c.dpop.replay_cache_bytes, 16 << 20);
        let c = Config::from_yaml(&format!(
            "{MINIMAL}dpop:\n  algorithms: [ES256]\n  max_age_seconds: 60\n  leeway_seconds: 5\n  external_scheme: https\n  replay_cache_bytes: 1048576\n"
        ))
        .unwrap();
        assert_eq!(c.dpop.algs(), "ES256");
        assert_eq!((c.dpop.max_age_seconds, c.dpop.leeway_seconds), (60, 5));
        assert_eq!(c.dpop.external_scheme.as_deref(), Some("https"));
        assert_eq!(c.dpop.replay_cache_bytes, 1 << 20);
        let errs = Config::from_yaml(&format!(
            "{MINIMAL}dpop:\n  algorithms: [HS256]\n  max_age_seconds: 0\n  external_scheme: ftp\n  replay_cache_bytes: 10\n  nonce: true\n"
        ))
        .unwrap_err()
        .0;
        for want in [
            "dpop.algorithms[0]",
            "dpop.max_age_seconds",
            "dpop.external_scheme",
            "dpop.replay_cache_bytes",
            "dpop.nonce: unknown key",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(want)), "{want} not in {errs:?}");
        }
    }

    #[test]
    fn empty_file_is_an_error_not_a_default() {
        assert!(Config::from_yaml("").is_err());
        assert!(Config::from_yaml("issuers: []").is_err());
    }
}
