//! Named authorization policies: the config's `policies:`, CEL expressions (Common Expression
//! Language, as in Envoy and Kubernetes) over `claims` and `request`, referenced from an
//! `auth-url` as `?policy=name`.
//!
//! Every expression is compiled when the config loads: parsed, and checked to refer to no
//! variable but `claims` and `request` (and the variables its own macros bind) and to no function
//! outside CEL's standard library as this build provides it ([`STANDARD_FUNCTIONS`]). At request
//! time only `true` allows; any other result, and any evaluation error (a missing claim, a wrong
//! type), denies.
//!
//! The claims set is converted to CEL values once per request that names policies
//! ([`CelClaims`]) and lent to each evaluation; `request` is built only when a policy reads it.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::Key;
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::Value;

use crate::claims::Claims;

/// Functions a policy may call: CEL's standard definitions that this build of the `cel` crate
/// implements (a unit test runs each). Operators (`_==_`, `@in`, `!_`, ...) are always allowed.
/// Not here, so refused at load: `duration`/`timestamp` and their accessors (jwtgate builds `cel`
/// without `chrono`; compare `claims.auth_time` as a number instead) and the optional-value
/// extension.
pub const STANDARD_FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "dyn",
    "type",
];

/// Identifiers that name CEL types (`type(x) == string`): allowed besides the two variables.
const TYPE_NAMES: &[&str] = &["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"];

/// One compiled policy.
pub struct NamedPolicy {
    pub name: Box<str>,
    pub source: Box<str>,
    program: Program,
    /// Refers to `request`: its decision holds for this request only (never cached by nginx).
    pub reads_request: bool,
    /// The top-level claims it reads (`claims.x`, `claims["x"]`, `has(claims.x)`), or `None`
    /// when it uses `claims` as a whole (`size(claims)`, `"x" in claims`): only these are
    /// converted to CEL values for an evaluation.
    pub claims_read: Option<Box<[Box<str>]>>,
}

/// Every policy of the config, compiled, in the order written.
#[derive(Default)]
pub struct Policies {
    env: Arc<Env>,
    list: Vec<NamedPolicy>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.list.iter().map(|p| (&p.name, &p.source))).finish()
    }
}

impl Policies {
    /// Compiles `policies:` entries (name, expression). Every problem is returned with the key
    /// path `policies.<name>`.
    pub fn compile<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Policies, Vec<String>> {
        let env = Arc::new(Env::stdlib());
        let mut list = Vec::new();
        let mut errs = Vec::new();
        for (name, source) in entries {
            match compile_one(&env, source) {
                Ok((program, refs)) => list.push(NamedPolicy {
                    name: name.into(),
                    source: source.into(),
                    program,
                    reads_request: refs.request,
                    claims_read: (!refs.all_claims).then(|| {
                        let mut names: Vec<Box<str>> = refs.claims.into_iter().map(Box::from).collect();
                        names.sort();
                        names.dedup();
                        names.into()
                    }),
                }),
                Err(why) => errs.push(format!("policies.{name}: {why}")),
            }
        }
        if errs.is_empty() { Ok(Policies { env, list }) } else { Err(errs) }
    }

    /// The index of a policy by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|p| &*p.name == name)
    }

    /// The policy at an index from [`Policies::position`].
    pub fn get(&self, index: usize) -> &NamedPolicy {
        &self.list[index]
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Evaluates policy `index`: `Ok(true)` allows, `Ok(false)` denies, `Err` (evaluation error or a
    /// non-boolean result, described for the log) denies too.
    pub fn evaluate(&self, index: usize, claims: &CelClaims, request: Option<&RequestVars>) -> Result<bool, String> {
        let policy = &self.list[index];
        let vars = Vars { claims: claims.0.as_ref(), request: request.map(|r| r.value.as_ref()) };
        let mut context = Context::with_env(self.env.clone());
        context.set_variable_resolver(&vars);
        match policy.program.execute(&context) {
            Ok(CelValue::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("evaluated to {}, not a bool", other.type_of())),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// An evaluation error for the log: what went wrong and where, never a claim value (the `cel`
/// crate's own messages can quote the values it compared).
fn describe(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    let shown = crate::claims::shown;
    match e {
        E::NoSuchKey(k) => format!("no such key `{}`", shown(k)),
        E::UndeclaredReference(n) => format!("undeclared reference `{}`", shown(n)),
        E::UnexpectedType { got, want } => format!("unexpected type: got {got}, want {want}"),
        E::NoSuchOverload(o) => shown(&o.to_string()),
        E::FunctionError { function, .. } => format!("function `{}` failed", shown(function)),
        E::ValuesNotComparable(..) => "values cannot be compared".into(),
        E::UnsupportedBinaryOperator(op, ..) => format!("operator `{op}` does not apply to these types"),
        E::DivisionByZero(_) | E::RemainderByZero(_) => "division by zero".into(),
        E::Overflow(op, ..) => format!("overflow in `{op}`"),
        E::IndexOutOfBounds(_) => "index out of bounds".into(),
        E::UnsupportedIndex(..) | E::UnsupportedKeyType(_) => "unsupported index".into(),
        E::NotSupportedAsMethod { method, .. } => format!("`{}` is not a method of this type", shown(method)),
        _ => "evaluation error".into(),
    }
}

/// Parses one expression and checks what it refers to.
fn compile_one(env: &Env, source: &str) -> Result<(Program, Refs), String> {
    let program = env.compile(source).map_err(|e| {
        // The parser's report spans lines (a snippet and a caret); the config error is one line.
        e.to_string().lines().next().unwrap_or("does not parse").replace("<input>", "expression")
    })?;
    let mut refs = Refs::default();
    walk(program.expression(), &mut Vec::new(), &mut refs)?;
    Ok((program, refs))
}

/// What an expression reads of its variables.
#[derive(Default)]
struct Refs {
    request: bool,
    /// Top-level claims read by name.
    claims: Vec<String>,
    /// `claims` is used other than by naming a member.
    all_claims: bool,
}

/// The member a `claims.x`, `has(claims.x)` or `claims["x"]` names, when `e` is one of those.
fn claims_member<'e>(e: &'e IdedExpr, bound: &[&str]) -> Option<&'e str> {
    let is_claims = |x: &IdedExpr| matches!(&x.expr, Expr::Ident(n) if n == "claims") && !bound.contains(&"claims");
    match &e.expr {
        Expr::Select(s) if is_claims(&s.operand) => Some(&s.field),
        Expr::Call(c) if c.func_name == "_[_]" && c.target.is_none() && c.args.len() == 2 && is_claims(&c.args[0]) => {
            match &c.args[1].expr {
                Expr::Literal(LiteralValue::String(name)) => Some(name.inner()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Walks the expression with the variables its comprehensions bind in scope.
fn walk<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>, refs: &mut Refs) -> Result<(), String> {
    if let Some(member) = claims_member(e, bound) {
        refs.claims.push(member.to_string());
        return Ok(());
    }
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => Ok(()),
        Expr::Ident(name) => match name.as_str() {
            n if bound.contains(&n) => Ok(()),
            "claims" => {
                refs.all_claims = true;
                Ok(())
            }
            "request" => {
                refs.request = true;
                Ok(())
            }
            n if n.starts_with('@') || TYPE_NAMES.contains(&n) => Ok(()),
            n => Err(format!("unknown variable `{n}` (only `claims` and `request` exist)")),
        },
        Expr::Select(s) => walk(&s.operand, bound, refs),
        Expr::Call(call) => {
            let f = call.func_name.as_str();
            let operator = f.starts_with('_') || f.starts_with('@') || f.starts_with('!') || f.starts_with('-');
            if !operator && !STANDARD_FUNCTIONS.contains(&f) {
                return Err(format!("unknown function `{f}` (not in CEL's standard library as jwtgate builds it)"));
            }
            if let Some(t) = &call.target {
                walk(t, bound, refs)?;
            }
            call.args.iter().try_for_each(|a| walk(a, bound, refs))
        }
        Expr::List(l) => l.elements.iter().try_for_each(|x| walk(x, bound, refs)),
        Expr::Map(m) => m.entries.iter().try_for_each(|x| walk_entry(&x.expr, bound, refs)),
        Expr::Struct(s) => {
            if !s.type_name.is_empty() {
                return Err(format!("unknown type `{}`", s.type_name));
            }
            s.entries.iter().try_for_each(|x| walk_entry(&x.expr, bound, refs))
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, refs)?;
            let before = bound.len();
            bound.push(&c.accu_var);
            walk(&c.accu_init, bound, refs)?;
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            let r = [&c.loop_cond, &c.loop_step, &c.result].into_iter().try_for_each(|x| walk(x, bound, refs));
            bound.truncate(before);
            r
        }
    }
}

fn walk_entry<'e>(e: &'e EntryExpr, bound: &mut Vec<&'e str>, refs: &mut Refs) -> Result<(), String> {
    match e {
        EntryExpr::StructField(f) => walk(&f.value, bound, refs),
        EntryExpr::MapEntry(m) => {
            walk(&m.key, bound, refs)?;
            walk(&m.value, bound, refs)
        }
    }
}

/// Lends `claims` and `request` to an evaluation without copying them.
struct Vars<'a> {
    claims: &'a dyn Val,
    request: Option<&'a dyn Val>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "claims" => Some(CowVal::Borrowed(self.claims)),
            "request" => self.request.map(CowVal::Borrowed),
            _ => None,
        }
    }
}

/// A claims set as CEL values: made once per request that names policies, and lent to each.
pub struct CelClaims(Box<dyn Val>);

impl CelClaims {
    /// The whole claims set.
    pub fn new(claims: &Claims) -> CelClaims {
        CelClaims::from_value(to_cel(claims.json()))
    }

    /// Only the top-level claims `names` (those that exist): all that policies reading only
    /// them can see, at a fraction of the cost of converting every claim.
    pub fn only(claims: &Claims, names: &[Box<str>]) -> CelClaims {
        let map: HashMap<Key, CelValue> =
            names.iter().filter_map(|n| claims.get(n).map(|v| (Key::from(n.to_string()), to_cel(v)))).collect();
        CelClaims::from_value(CelValue::from(map))
    }

    fn from_value(v: CelValue) -> CelClaims {
        CelClaims(v.try_into().expect("JSON values convert to CEL values"))
    }
}

/// JSON to CEL: integral numbers (within i64) are `int`, other numbers `double`.
fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => CelValue::Int(i),
            None => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<Key, CelValue> = m.iter().map(|(k, v)| (Key::from(k.clone()), to_cel(v))).collect();
            CelValue::from(map)
        }
    }
}

/// The `request` variable: `method`, `url`, `host` and `path` of the original request, from
/// `X-Original-Method` and `X-Original-URL`. A header that is missing leaves its fields out, so a
/// policy reading them fails to evaluate and denies.
pub struct RequestVars {
    value: Box<dyn Val>,
}

impl RequestVars {
    /// From the header values nginx sent (`None` when absent or not visible ASCII).
    pub fn new(method: Option<&str>, url: Option<&str>) -> RequestVars {
        let mut map: HashMap<Key, CelValue> = HashMap::with_capacity(4);
        let mut put = |k: &str, v: &str| {
            map.insert(Key::from(k.to_string()), CelValue::String(Arc::new(v.to_string())));
        };
        if let Some(m) = method {
            put("method", &m.to_ascii_uppercase());
        }
        if let Some(u) = url {
            put("url", u);
            let (host, path) = split_url(u);
            if let Some(h) = host {
                put("host", &h.to_ascii_lowercase());
            }
            put("path", path);
        }
        RequestVars { value: CelValue::from(map).try_into().expect("strings convert to CEL values") }
    }
}

/// The host (without userinfo and port) and the path (as sent, without query and fragment) of an
/// absolute URL (`https://h:443/p?q`) or an origin-form target (`/p?q`). An empty path is `/`
/// (RFC 9110 §4.2.3).
pub fn split_url(url: &str) -> (Option<&str>, &str) {
    let (host, rest) = match url.split_once("://") {
        Some((_, after)) => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let authority = &after[..end];
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = if let Some(v6) = hostport.strip_prefix('[') {
                // An IPv6 literal keeps its brackets (RFC 3986 §3.2.2).
                v6.find(']').map_or(hostport, |i| &hostport[..i + 2])
            } else {
                hostport.split_once(':').map_or(hostport, |(h, _)| h)
            };
            (Some(host), &after[end..])
        }
        None => (None, url),
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = &rest[..end];
    (host, if path.is_empty() { "/" } else { path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(source: &str) -> Policies {
        Policies::compile([("p", source)]).unwrap_or_else(|e| panic!("{source}: {e:?}"))
    }

    fn eval(source: &str, claims: Value, request: Option<&RequestVars>) -> Result<bool, String> {
        one(source).evaluate(0, &CelClaims::new(&Claims::new(claims)), request)
    }

    fn keycloak() -> Value {
        json!({
            "sub": "alice",
            "realm_access": {"roles": ["admin", "user"]},
            "groups": ["editor"],
            "email_verified": true,
            "auth_time": 1_800_000_000,
            "ratio": 0.5,
        })
    }

    #[test]
    fn the_contracts_examples_evaluate() {
        assert_eq!(eval(r#"claims.realm_access.roles.exists(r, r == "admin")"#, keycloak(), None), Ok(true));
        let get = RequestVars::new(Some("GET"), Some("https://a.example/x"));
        let post = RequestVars::new(Some("POST"), Some("https://a.example/x"));
        let src = r#"request.method in ["GET", "HEAD"] || "editor" in claims.groups"#;
        assert_eq!(eval(src, json!({"groups": []}), Some(&get)), Ok(true));
        assert_eq!(eval(src, json!({"groups": []}), Some(&post)), Ok(false));
        assert_eq!(eval(src, keycloak(), Some(&post)), Ok(true));
    }

    #[test]
    fn integral_numbers_are_int_and_others_double() {
        assert_eq!(eval("claims.auth_time > 1700000000", keycloak(), None), Ok(true));
        assert_eq!(eval("type(claims.auth_time) == int", keycloak(), None), Ok(true));
        assert_eq!(eval("type(claims.ratio) == double", keycloak(), None), Ok(true));
        assert_eq!(eval("claims.email_verified", keycloak(), None), Ok(true));
    }

    #[test]
    fn a_missing_claim_or_a_wrong_type_is_an_evaluation_error() {
        let missing = eval(r#"claims.nope == "x""#, keycloak(), None).unwrap_err();
        assert!(missing.contains("nope"), "{missing}");
        let wrong = eval(r#"claims.sub > 3"#, keycloak(), None).unwrap_err();
        // The log line says what failed, never the claim's value.
        assert!(!wrong.contains("alice"), "{wrong}");
        let compared = eval(r#"claims.sub < claims.realm_access"#, keycloak(), None).unwrap_err();
        assert!(!compared.contains("alice") && !compared.contains("admin"), "{compared}");
        // `has()` is how a policy asks about an optional claim without failing.
        assert_eq!(eval(r#"has(claims.nope) && claims.nope == "x""#, keycloak(), None), Ok(false));
    }

    #[test]
    fn a_result_other_than_a_bool_is_an_error_and_false_is_a_denial() {
        assert!(eval("claims.sub", keycloak(), None).unwrap_err().contains("not a bool"));
        assert_eq!(eval("claims.email_verified == false", keycloak(), None), Ok(false));
    }

    #[test]
    fn request_fields_come_from_the_original_method_and_url() {
        let r = RequestVars::new(Some("get"), Some("https://User@Api.Example.COM:8443/a%2Fb/c?x=1#f"));
        let check = |src: &str| eval(src, json!({}), Some(&r));
        assert_eq!(check(r#"request.method == "GET""#), Ok(true));
        assert_eq!(check(r#"request.host == "api.example.com""#), Ok(true));
        assert_eq!(check(r#"request.path == "/a%2Fb/c""#), Ok(true));
        assert_eq!(check(r#"request.url == "https://User@Api.Example.COM:8443/a%2Fb/c?x=1#f""#), Ok(true));
        // Without X-Original-URL the fields are absent: reading them denies, never allows.
        let bare = RequestVars::new(Some("GET"), None);
        assert!(eval(r#"request.path.startsWith("/admin") == false"#, json!({}), Some(&bare)).is_err());
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(split_url("https://h.example/p/q?x#y"), (Some("h.example"), "/p/q"));
        assert_eq!(split_url("http://h.example:80"), (Some("h.example"), "/"));
        assert_eq!(split_url("http://h.example?x=1"), (Some("h.example"), "/"));
        assert_eq!(split_url("http://[::1]:8080/x"), (Some("[::1]"), "/x"));
        assert_eq!(split_url("/only/path?q"), (None, "/only/path"));
    }

    #[test]
    fn compile_errors_name_the_policy() {
        let errs =
            Policies::compile([("good", "true"), ("broken", "claims.roles.exists(r, "), ("other", "1 +")]).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("policies.broken: "), "{errs:?}");
        assert!(errs[1].starts_with("policies.other: "), "{errs:?}");
        assert!(!errs[0].contains('\n'));
    }

    #[test]
    fn unknown_variables_and_functions_are_compile_errors() {
        for (src, want) in [
            ("user.admin == true", "unknown variable `user`"),
            (r#"claims.roles.exists(r, x == "a")"#, "unknown variable `x`"),
            ("now() > 3", "unknown function `now`"),
            ("claims.sub.lowerAscii() == 'a'", "unknown function `lowerAscii`"),
            ("timestamp('2020-01-01T00:00:00Z') > timestamp('2019-01-01T00:00:00Z')", "unknown function `timestamp`"),
        ] {
            let errs = Policies::compile([("p", src)]).unwrap_err();
            assert!(errs[0].contains(want), "{src}: {errs:?}");
        }
    }

    #[test]
    fn comprehension_variables_are_in_scope_only_inside_their_macro() {
        one(r#"claims.groups.all(g, g.startsWith("team-")) && claims.groups.exists(g, g == "team-a")"#);
        one(r#"claims.groups.map(g, g + "!").filter(h, h == "x!").size() == 0"#);
        assert!(Policies::compile([("p", r#"claims.groups.exists(g, true) && g == "a""#)]).is_err());
    }

    #[test]
    fn the_claims_a_policy_reads_are_known_at_load() {
        let reads = |src: &str| {
            let p = one(src);
            p.get(0).claims_read.as_ref().map(|n| n.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(reads(r#"claims.realm_access.roles.exists(r, r == "admin")"#), Some(vec!["realm_access".into()]));
        assert_eq!(
            reads(r#"has(claims.email) && claims["https://x/roles"].size() > 0 && claims.email != """#),
            Some(vec!["email".into(), "https://x/roles".into()])
        );
        assert_eq!(reads("request.method == 'GET'"), Some(vec![]));
        // `claims` as a whole, or indexed by a computed key: every claim is converted.
        assert_eq!(reads(r#"size(claims) > 3"#), None);
        assert_eq!(reads(r#""sub" in claims"#), None);
        assert_eq!(reads(r#"claims[request.method] == "x""#), None);
        // A macro variable named `claims` is not the claims set.
        assert_eq!(reads(r#"[1, 2].exists(claims, claims > 1)"#), Some(vec![]));
    }

    #[test]
    fn evaluating_with_only_the_claims_read_gives_the_same_answers() {
        let claims = Claims::new(keycloak());
        for src in [
            r#"claims.realm_access.roles.exists(r, r == "admin")"#,
            r#"has(claims.nope) || claims.sub == "alice""#,
            r#"claims["groups"][0] == "editor" && claims.email_verified"#,
        ] {
            let p = one(src);
            let names = p.get(0).claims_read.clone().expect("reads named claims only");
            let full = p.evaluate(0, &CelClaims::new(&claims), None);
            let narrow = p.evaluate(0, &CelClaims::only(&claims, &names), None);
            assert_eq!(full, narrow, "{src}");
            assert_eq!(full, Ok(true), "{src}");
        }
        // A claim it reads that the token lacks is an evaluation error either way.
        let p = one(r#"claims.department == "x""#);
        let names = p.get(0).claims_read.clone().unwrap();
        assert!(p.evaluate(0, &CelClaims::only(&claims, &names), None).unwrap_err().contains("department"));
    }

    #[test]
    fn only_policies_that_name_request_read_it() {
        let p = Policies::compile([("a", "claims.sub == 'x'"), ("b", "request.method == 'GET'")]).unwrap();
        assert!(!p.get(p.position("a").unwrap()).reads_request);
        assert!(p.get(p.position("b").unwrap()).reads_request);
        assert_eq!(p.position("c"), None);
    }

    #[test]
    fn every_allowed_standard_function_is_implemented() {
        // A name on the allow-list that this `cel` build lacks would pass `check-config` and then
        // deny every request: each one runs here.
        let claims = json!({"s": "Hello", "n": 3, "l": [1, 2]});
        let uses = [
            r#"size(claims.s) == 5 && claims.l.size() == 2"#,
            r#"claims.s.contains("ell")"#,
            r#"claims.s.startsWith("He")"#,
            r#"claims.s.endsWith("lo")"#,
            r#"claims.s.matches("^H.*o$")"#,
            r#"int("7") == 7"#,
            r#"uint(claims.n) == 3u"#,
            r#"double(claims.n) == 3.0"#,
            r#"string(claims.n) == "3""#,
            r#"bool("true")"#,
            r#"bytes("a") == b"a""#,
            r#"dyn(claims.n) == 3"#,
            r#"type(claims.s) == string"#,
        ];
        for f in STANDARD_FUNCTIONS {
            assert!(uses.iter().any(|u| u.contains(&format!("{f}("))), "no use of `{f}` below");
        }
        for u in uses {
            assert_eq!(eval(u, claims.clone(), None), Ok(true), "{u}");
        }
    }
}
