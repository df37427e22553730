#!/usr/bin/env bash
# Static checks for the jwtgate Helm chart (helm/jwtgate) and the Dockerfile.
# Offline apart from the first tool install (scripts/install-chart-tools.sh).
#
#   1. helm lint --strict             defaults and ci/all-on-values.yaml
#   2. helm template                  both value sets, for Kubernetes 1.33 and 1.29
#   3. negative checks                values the chart must refuse (schema + template guards)
#   4. kubernetes-validate --strict   every built-in kind, against 1.33 and 1.29
#   5. CRD objects + wiring           ServiceMonitor/PrometheusRule (no offline schema):
#                                     structure, PromQL parses; selectors/ports/config agree;
#                                     `jwtgate check-config` on the rendered config (the
#                                     binary of this checkout, built if needed)
#   6. values documentation           every value has a "# --" comment and a README row;
#                                     config keys in values.schema.json == keys src/config.rs reads
#   7. checkov (kubernetes)           rendered manifests
#   8. checkov (dockerfile)           Dockerfile
#   9. README install                 the README's "Install on Kubernetes": its helm install
#                                     line with --dry-run=client and its values file; image,
#                                     annotations and check-config on the rendered config
#  10. dashboard + alerts (promtool) every PromQL of the Grafana dashboard (variables substituted,
#                                     as recording rules) and of the PrometheusRule passes
#                                     `promtool check rules` and names only metrics a live
#                                     `jwtgate demo` exports; `promtool test rules` proves each
#                                     alert fires on a synthetic series and stays quiet on a
#                                     healthy one (scripts/promtool/jwtgate-alerts.test.yaml)
#
# Exits non-zero if any check fails; a summary of all checks is printed last.
# Env: JWTGATE_TOOLS (tool dir, see install-chart-tools.sh), KEEP_RENDERS=1
# (keep the rendered manifests and logs and print their directory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="${ROOT}/helm/jwtgate"
ALL_ON="${CHART}/ci/all-on-values.yaml"
RELEASE="jwtgate"
# Render into a real namespace: checkov CKV_K8S_21 flags the default namespace.
NAMESPACE="jwtgate"
KUBE_VERSIONS=(1.33 1.29)

# checkov checks skipped for the DEFAULT values render only; the all-on
# render (digests set, NetworkPolicy on) must pass every check with no skip.
# Justifications: helm/jwtgate/README.md, section "Security scan (checkov)".
CHECKOV_SKIP_DEFAULT="CKV_K8S_15,CKV_K8S_43,CKV2_K8S_6"
CHECKOV_SKIP_ALL_ON=""
CHECKOV_SKIP_DOCKERFILE=""

section() { printf '\n==== %s ====\n' "$*"; }
declare -a RESULTS=()
failures=0
ok()   { RESULTS+=("PASS  $*"); printf 'PASS: %s\n' "$*"; }
bad()  { RESULTS+=("FAIL  $*"); printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
skip() { RESULTS+=("SKIP  $*"); printf 'SKIP: %s\n' "$*"; }

# ---------------------------------------------------------------------------
section "0. tools"
TOOLS="$("${ROOT}/scripts/install-chart-tools.sh")"
export PATH="${TOOLS}/bin:${TOOLS}/venv/bin:${PATH}"
PY="${TOOLS}/venv/bin/python"
echo "helm $(helm version --short), kubernetes-validate $(kubernetes-validate --version), checkov $(checkov --version)"

WORK="$(mktemp -d)"
if [[ "${KEEP_RENDERS:-0}" == "1" ]]; then
  trap 'echo "renders and logs kept in ${WORK}"' EXIT
else
  trap 'rm -rf "${WORK}"' EXIT
fi

# Python helpers (PyYAML and promql_parser come with the tools venv).
cat > "${WORK}/chartcheck.py" <<'PY'
"""Helpers for check-chart.sh. Subcommands:
  split RENDER CORE_OUT            write built-in kinds to CORE_OUT, list the CRD objects
  crds-wiring RENDER CONTAINERPORT structural checks on CRD objects + cross-object wiring
  values-doc VALUES README         every value documented with "# --" and listed in README
  config-keys SCHEMA CONFIG_RS     config keys in values.schema.json == keys read by jwtgate
"""
import re
import sys

import yaml

CRD_GROUPS = ("monitoring.coreos.com/",)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(d):
    return f"{d['kind']}/{d['metadata']['name']}"


def split(render, core_out):
    docs = load(render)
    core = [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)]
    crds = [d for d in docs if d["apiVersion"].startswith(CRD_GROUPS)]
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    for d in crds:
        print(f"  skipped (CRD {d['apiVersion']}, no offline schema; checked in step 5): {kn(d)}")
    print(f"  {len(core)} built-in objects to validate, {len(crds)} CRD objects set aside")
    if not core:
        sys.exit("no built-in objects rendered: refusing to pass vacuously")


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def crds_wiring(render, container_port):
    import promql_parser

    docs = load(render)
    errors, notes = [], []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def one(kind):
        items = by_kind.get(kind, [])
        return items[0] if items else None

    dep, svc = one("Deployment"), one("Service")
    # The config ConfigMap (the Grafana dashboard is a ConfigMap too).
    cm = next((d for d in by_kind.get("ConfigMap", []) if "config.yaml" in d.get("data", {})), None)
    if not (dep and svc and cm):
        sys.exit("render lacks the Deployment, Service or ConfigMap")
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

    # Service -> pods, port names.
    if not selector_matches(svc["spec"]["selector"], pod_labels):
        errors.append("Service selector does not match the Deployment's pod labels")
    if not selector_matches(dep["spec"]["selector"]["matchLabels"], pod_labels):
        errors.append("Deployment selector does not match its own pod labels")
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in ports:
            errors.append(f"Service targetPort {p['targetPort']} is not a container port name")
    # The helm test pod must never be selected by the Service / PDB / NetworkPolicy.
    for test_pod in by_kind.get("Pod", []):
        if selector_matches(svc["spec"]["selector"], test_pod["metadata"].get("labels", {})):
            errors.append(f"Service selector also selects {kn(test_pod)}")
    # Config: listen port == containerPort, shutdown budget.
    config = yaml.safe_load(cm["data"]["config.yaml"])
    listen_port = int(str(config["listen"]).rsplit(":", 1)[1])
    if listen_port != ports.get("http") or listen_port != int(container_port):
        errors.append(f"config listen {config['listen']} != container port {ports.get('http')}")
    shutdown = config.get("shutdown", {})
    budget = shutdown.get("drain_delay_seconds", 0) + shutdown.get("grace_seconds", 20)
    pre_stop = (container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}) or {}).get("seconds", 0)
    if pod["spec"]["terminationGracePeriodSeconds"] <= budget + pre_stop:
        errors.append("terminationGracePeriodSeconds does not exceed preStop + drain + grace")
    if "checksum/config" not in pod["metadata"].get("annotations", {}):
        errors.append("pod template lacks the checksum/config annotation")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe not in container:
            errors.append(f"container lacks {probe}")
    # Optional objects point at the right things.
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            errors.append(f"{kn(pdb)} selector does not match the pods")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
            errors.append(f"{kn(hpa)} targets another Deployment")
        if "replicas" in dep["spec"]:
            errors.append("Deployment sets replicas although an HPA manages it")
    for np in by_kind.get("NetworkPolicy", []):
        sel = np["spec"]["podSelector"]["matchLabels"]
        targets = [p for p in [pod["metadata"]] + [t["metadata"] for t in by_kind.get("Pod", [])]
                   if selector_matches(sel, p.get("labels", {}))]
        if not targets:
            errors.append(f"{kn(np)} selects no pod of the chart")

    # CRD objects (no schema offline): structure + PromQL.
    for sm in by_kind.get("ServiceMonitor", []):
        spec = sm["spec"]
        if not selector_matches(spec["selector"]["matchLabels"], svc["metadata"]["labels"]):
            errors.append(f"{kn(sm)} selector does not match the Service labels")
        if svc["metadata"]["namespace"] not in spec["namespaceSelector"]["matchNames"]:
            errors.append(f"{kn(sm)} namespaceSelector misses the Service namespace")
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        for ep in spec["endpoints"]:
            if ep.get("port") not in svc_ports:
                errors.append(f"{kn(sm)} endpoint port {ep.get('port')!r} is not a Service port name")
        notes.append(f"{kn(sm)}: selector, namespace and port match the Service")
    for pr in by_kind.get("PrometheusRule", []):
        n_rules = 0
        for group in pr["spec"]["groups"]:
            if not group.get("rules"):
                errors.append(f"{kn(pr)} group {group.get('name')} has no rules")
            for rule in group.get("rules") or []:
                n_rules += 1
                name = rule.get("alert") or rule.get("record")
                if not name or "expr" not in rule:
                    errors.append(f"{kn(pr)}: rule without alert/record name or expr: {rule}")
                    continue
                try:
                    promql_parser.parse(str(rule["expr"]))
                except Exception as e:  # noqa: BLE001 - report any parser error
                    errors.append(f"{kn(pr)} {name}: PromQL does not parse: {e}")
                if "alert" in rule and "severity" not in rule.get("labels", {}):
                    errors.append(f"{kn(pr)} {name}: no severity label")
        notes.append(f"{kn(pr)}: {n_rules} rules, every expr parses as PromQL")

    for n in notes:
        print(f"  ok: {n}")
    for e in errors:
        print(f"  ERROR: {e}")
    counted = sum(len(v) for v in by_kind.values())
    print(f"  wiring checked across {counted} objects: {len(errors)} error(s)")
    sys.exit(1 if errors else 0)


def config_keys(schema_path, config_rs):
    """The config part of values.schema.json must accept exactly the keys jwtgate
    reads (src/config.rs reads every key through Section::get and friends)."""
    import json
    schema = json.load(open(schema_path))["properties"]["config"]

    def walk(node):
        keys = set()
        for k, v in (node.get("properties") or {}).items():
            keys.add(k)
            keys |= walk(v)
        if "items" in node:
            keys |= walk(node["items"])
        return keys

    in_schema = walk(schema) | {"listen"}  # listen: set by the chart, refused in values
    src = open(config_rs).read()
    in_src = set(re.findall(
        r'(?:Section::new|\.integer|\.string_list|\.required_string|\.string|\.get)\(\s*"([a-z_]+)"', src))
    if len(in_src) < 10:
        sys.exit(f"  ERROR: found only {len(in_src)} keys in {config_rs}: has the parser changed shape?")
    only_src, only_schema = sorted(in_src - in_schema), sorted(in_schema - in_src)
    for k in only_src:
        print(f"  ERROR: jwtgate reads config key {k!r} but values.schema.json rejects it")
    for k in only_schema:
        print(f"  ERROR: values.schema.json accepts config key {k!r} that jwtgate does not read")
    print(f"  {len(in_src)} keys in {config_rs.rsplit('/', 1)[-1]}, {len(in_schema)} in the schema, "
          f"{len(only_src) + len(only_schema)} mismatch(es)")
    sys.exit(1 if (only_src or only_schema) else 0)


KEY_RE = re.compile(r"^( *)([A-Za-z0-9_.-]+):(\s|$)")


def values_doc(values_path, readme_path):
    """helm-docs rule: each key has its own "# --" comment, or an ancestor has one
    (free-form blocks such as config or probes), or it only groups documented keys."""
    lines = open(values_path).read().splitlines()
    entries = []  # (indent, key, documented, line_no)
    comment_block = []
    for i, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        if not stripped:
            comment_block = []
            continue
        m = KEY_RE.match(line)
        if m:
            entries.append((len(m.group(1)), m.group(2), any(c.startswith("# --") for c in comment_block), i))
        comment_block = []
    # Build paths; skip keys nested in list items (inside documented blocks anyway).
    stack, nodes = [], []
    for indent, key, doc, line_no in entries:
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([s[1] for s in stack] + [key])
        ancestor_doc = any(s[2] for s in stack)
        nodes.append({"path": path, "indent": indent, "doc": doc, "covered": doc or ancestor_doc, "line": line_no})
        stack.append((indent, key, doc))
    paths = {n["path"] for n in nodes}
    undocumented = []
    for n in nodes:
        if n["covered"]:
            continue
        children = [c for c in nodes if c["path"].startswith(n["path"] + ".")]
        if children and all(c["covered"] for c in children):
            continue  # grouping key whose children are all documented
        if not children:
            undocumented.append(n)
    for n in undocumented:
        print(f"  ERROR: values.yaml:{n['line']}: {n['path']} has no '# --' comment")
    documented = sorted(n["path"] for n in nodes if n["doc"])
    readme = open(readme_path).read()
    missing = [p for p in documented if f"`{p}`" not in readme]
    for p in missing:
        print(f"  ERROR: README.md has no row for `{p}`")
    print(f"  {len(documented)} documented values, {len(undocumented)} undocumented, "
          f"{len(missing)} missing from README.md ({len(paths)} keys scanned)")
    sys.exit(1 if (undocumented or missing or not documented) else 0)


def readme_blocks(readme_path, heading):
    """The fenced blocks (language, text) of one `## heading` section of the README."""
    text = open(readme_path).read()
    start = text.index("\n## " + heading + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def readme_install(readme_path, outdir):
    """Writes the README's values file to OUTDIR, prints its helm install command (one line)."""
    blocks = readme_blocks(readme_path, "Install on Kubernetes")
    values = [b for lang, b in blocks if lang == "yaml" and b.startswith("# jwtgate-values.yaml\n")]
    if len(values) != 1:
        sys.exit("README 'Install on Kubernetes' needs exactly one ```yaml block starting '# jwtgate-values.yaml'")
    with open(f"{outdir}/jwtgate-values.yaml", "w") as f:
        f.write(values[0])
    annotations = [b for lang, b in blocks if lang == "yaml" and "auth-url" in b]
    if len(annotations) != 1:
        sys.exit("README 'Install on Kubernetes' needs exactly one ```yaml block with the annotations")
    with open(f"{outdir}/annotations.yaml", "w") as f:
        f.write(annotations[0])
    commands = []
    for lang, b in blocks:
        if lang != "sh":
            continue
        joined = re.sub(r"\\\n\s*", " ", b)
        commands += [l.split("  #")[0].strip() for l in joined.splitlines()]
    installs = [c for c in commands if c.startswith("helm install ")]
    builds = [c for c in commands if c.startswith("docker build ")]
    pushes = [c for c in commands if c.startswith("docker push ")]
    if len(installs) != 1 or len(builds) != 1 or len(pushes) != 1:
        sys.exit(f"README needs one docker build, docker push and helm install: {commands}")
    built = re.search(r"-t (\S+)", builds[0]).group(1)
    pushed = pushes[0].split()[2]
    repo = re.search(r"image\.repository=(\S+)", installs[0]).group(1)
    tag = re.search(r"image\.tag=(\S+)", installs[0]).group(1)
    if not (built == pushed == f"{repo}:{tag}"):
        sys.exit(f"README: built {built}, pushed {pushed}, installed {repo}:{tag}: they must be one image")
    with open(f"{outdir}/image", "w") as f:
        f.write(f"{repo}:{tag}")
    print(installs[0])


def install_check(output, outdir):
    """Checks a `helm install --dry-run` output against the README's image and annotations."""
    text = open(output).read()
    if "\nMANIFEST:\n" not in text:
        sys.exit("no MANIFEST in the helm install output")
    manifest = text.split("\nMANIFEST:\n", 1)[1].split("\nNOTES:\n", 1)
    notes = manifest[1] if len(manifest) > 1 else ""
    docs = [d for d in yaml.safe_load_all(manifest[0]) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    errors = []
    image = open(f"{outdir}/image").read()
    dep = by_kind["Deployment"][0]
    got = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    if got != image:
        errors.append(f"Deployment image {got} is not the README's pushed image {image}")
    if "WARNING" in notes:
        errors.append("NOTES.txt warns on the README's install: " + notes[notes.index("WARNING"):][:200])
    svc = by_kind["Service"][0]
    ns = svc["metadata"].get("namespace", "")
    port = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "http"][0]
    want_host = f"http://{svc['metadata']['name']}.{ns}.svc.cluster.local:{port}/verify"
    ann = yaml.safe_load(open(f"{outdir}/annotations.yaml"))
    url = ann["nginx.ingress.kubernetes.io/auth-url"]
    if url.split("?")[0] != want_host:
        errors.append(f"README auth-url {url} does not name the rendered Service ({want_host})")
    cm = [d for d in by_kind["ConfigMap"] if "config.yaml" in d.get("data", {})][0]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    mapping = config.get("claims_to_headers") or [{"header": "X-Auth-Subject"}, {"header": "X-Auth-Issuer"}]
    want_headers = ",".join(m["header"] for m in mapping)
    got_headers = ann["nginx.ingress.kubernetes.io/auth-response-headers"]
    if got_headers != want_headers:
        errors.append(f"README auth-response-headers {got_headers} != claims_to_headers {want_headers}")
    if notes and url.split("?")[0] not in notes:
        errors.append("NOTES.txt does not print the README's auth-url")
    with open(f"{outdir}/config.yaml", "w") as f:
        f.write(cm["data"]["config.yaml"])
    for e in errors:
        print("  " + e)
    print(f"  image {got}; auth-url {url}; headers {got_headers}; {len(docs)} objects")
    sys.exit(1 if errors else 0)


DASHBOARD_VARS = {
    # Grafana's built-in interval variables, as a 30 s scrape interval would give them.
    "$__rate_interval": "2m", "${__rate_interval}": "2m",
    "$__interval": "1m", "${__interval}": "1m",
    "$__range": "1h", "${__range}": "1h",
    # The dashboard's own variables (multi-value, "All" = .*).
    "${namespace}": ".*", "$namespace": ".*",
    "${issuer}": ".*", "$issuer": ".*",
}


def substitute(expr):
    for k in sorted(DASHBOARD_VARS, key=len, reverse=True):
        expr = expr.replace(k, DASHBOARD_VARS[k])
    if "$" in expr:
        raise ValueError(f"unsubstituted Grafana variable in {expr!r}")
    return expr


def dashboard_promql(render, outdir):
    """From a render with the dashboard and the PrometheusRule: the dashboard's PromQL (variables
    substituted) as recording rules, the alert rules (as rendered, and without annotations for
    promtool test rules), every expression for the metric-name check, and the panel list."""
    import json

    docs = load(render)
    errors = []
    cms = [d for d in docs if d["kind"] == "ConfigMap"
           and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if len(cms) != 1:
        sys.exit(f"expected one ConfigMap labelled grafana_dashboard: \"1\", found {len(cms)}")
    dash = json.loads(cms[0]["data"]["jwtgate.json"])
    exprs, rules, panels = [], [], []

    def walk(items):
        for p in items:
            if p.get("type") == "row":
                walk(p.get("panels", []))
                continue
            panels.append(p)
    walk(dash["panels"])
    for p in panels:
        targets = [t for t in p.get("targets", []) if t.get("expr")]
        if not p.get("title") or not targets:
            errors.append(f"panel {p.get('id')} has no title or no PromQL target")
        for t in targets:
            try:
                e = substitute(t["expr"])
            except ValueError as err:
                errors.append(f"panel {p['title']!r}: {err}")
                continue
            exprs.append((f"dashboard panel {p['title']!r} {t['refId']}", e))
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": e})
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
        if v.get("type") == "query":
            if not m:
                errors.append(f"variable {v['name']}: not a label_values(selector, label) query")
                continue
            e = substitute(m.group(1))
            exprs.append((f"dashboard variable {v['name']}", e))
            rules.append({"record": f"dashboard:variable_{v['name']}", "expr": e})
    prs = [d for d in docs if d["kind"] == "PrometheusRule"]
    if len(prs) != 1:
        sys.exit(f"expected one PrometheusRule, found {len(prs)}")
    groups = prs[0]["spec"]["groups"]
    stripped = []
    for g in groups:
        for r in g["rules"]:
            exprs.append((f"alert {r.get('alert') or r.get('record')}", str(r["expr"])))
        stripped.append({"name": g["name"], "rules": [
            {k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]})
    with open(f"{outdir}/dashboard-rules.yaml", "w") as f:
        yaml.safe_dump({"groups": [{"name": "jwtgate-dashboard", "rules": rules}]}, f, sort_keys=False)
    with open(f"{outdir}/alert-rules.yaml", "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    with open(f"{outdir}/jwtgate-alerts.rules.yaml", "w") as f:
        yaml.safe_dump({"groups": stripped}, f, sort_keys=False)
    with open(f"{outdir}/exprs.json", "w") as f:
        json.dump(exprs, f)
    for p in panels:
        print(f"  panel {p['id']:>2} {p['type']:<10} {p['title']} ({len(p.get('targets', []))} queries)")
    for e in errors:
        print("  " + e)
    print(f"  {len(panels)} panels, {len(rules)} dashboard expressions, "
          f"{sum(len(g['rules']) for g in groups)} alert rules")
    sys.exit(1 if errors or not panels else 0)


def selector_names(node, out):
    """Metric names of every vector selector in a promql_parser AST."""
    cls = type(node).__name__
    if cls == "VectorSelector":
        if not node.name:
            raise ValueError("a selector without a metric name")
        out.add(node.name)
    elif cls == "MatrixSelector":
        selector_names(node.vector_selector, out)
    elif cls == "BinaryExpr":
        selector_names(node.lhs, out)
        selector_names(node.rhs, out)
    elif cls in ("AggregateExpr",):
        selector_names(node.expr, out)
        if node.param is not None:
            selector_names(node.param, out)
    elif cls in ("ParenExpr", "UnaryExpr", "SubqueryExpr"):
        selector_names(node.expr, out)
    elif cls == "Call":
        for a in node.args:
            selector_names(a, out)
    elif cls not in ("NumberLiteral", "StringLiteral"):
        raise ValueError(f"unhandled PromQL node {cls}")
    return out


def metric_names(exprs_path, metrics_path):
    """Every metric an expression names is exported by the live gate whose /metrics is given."""
    import json
    import promql_parser

    exported = set()
    for line in open(metrics_path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            name, kind = m.groups()
            exported.add(name)
            if kind == "histogram":
                exported.update(name + s for s in ("_bucket", "_sum", "_count"))
            if kind == "summary":
                exported.update(name + s for s in ("_sum", "_count"))
    if len(exported) < 5:
        sys.exit(f"the live gate exported only {sorted(exported)}: refusing to pass vacuously")
    errors, used = [], set()
    for source, expr in json.load(open(exprs_path)):
        try:
            names = selector_names(promql_parser.parse(expr), set())
        except Exception as err:  # parse errors and unhandled nodes alike
            errors.append(f"{source}: {err}")
            continue
        used |= names
        for n in sorted(names - exported):
            errors.append(f"{source}: names {n}, which jwtgate does not export")
    for e in errors:
        print("  " + e)
    print(f"  {len(used)} metrics used ({len(errors)} problems), {len(exported)} exported by the live gate: "
          f"{', '.join(sorted(used))}")
    sys.exit(1 if errors or not used else 0)


def alert_tests(rules_path, tests_path):
    """Every alert has a promtool test where it fires and one where it stays quiet."""
    rules = yaml.safe_load(open(rules_path))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(open(tests_path))
    firing, quiet = set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
    errors = [f"alert {a}: no test where it fires" for a in sorted(alerts - firing)]
    errors += [f"alert {a}: no test where it stays quiet" for a in sorted(alerts - quiet)]
    for e in errors:
        print("  " + e)
    print(f"  {len(alerts)} alerts, each with a firing and a quiet case: {', '.join(sorted(alerts))}")
    sys.exit(1 if errors or not alerts else 0)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"split": split, "crds-wiring": crds_wiring, "values-doc": values_doc,
     "config-keys": config_keys, "readme-install": readme_install,
     "install-check": install_check, "dashboard-promql": dashboard_promql,
     "metric-names": metric_names, "alert-tests": alert_tests}[cmd](*args)
PY
chartcheck() { "${PY}" "${WORK}/chartcheck.py" "$@"; }

# ---------------------------------------------------------------------------
section "1. helm lint --strict"
for set in defaults all-on; do
  args=()
  [[ "${set}" == "all-on" ]] && args=(-f "${ALL_ON}")
  if helm lint --strict "${CHART}" --namespace "${NAMESPACE}" "${args[@]}" > "${WORK}/lint-${set}.log" 2>&1; then
    ok "helm lint --strict (${set}): $(grep -E 'chart\(s\) linted' "${WORK}/lint-${set}.log")"
  else
    cat "${WORK}/lint-${set}.log"
    bad "helm lint --strict (${set})"
  fi
done

# ---------------------------------------------------------------------------
section "2. helm template"
# render <name> <kube-version> [helm args...]
render() {
  local name="$1" kv="$2"; shift 2
  local out="${WORK}/${name}.yaml"
  if helm template "${RELEASE}" "${CHART}" --namespace "${NAMESPACE}" \
       --kube-version "${kv}.0" "$@" > "${out}" 2> "${WORK}/${name}.err"; then
    local kinds
    kinds="$(grep -E '^kind: ' "${out}" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')"
    ok "helm template ${name}: $(grep -c '^kind: ' "${out}") objects (${kinds})"
  else
    cat "${WORK}/${name}.err"
    bad "helm template ${name}"
    : > "${out}"
  fi
}
for kv in "${KUBE_VERSIONS[@]}"; do
  render "defaults-${kv}" "${kv}"
  if [[ "${kv}" == "1.29" ]]; then
    # lifecycle.preStopSleep needs Kubernetes >= 1.30 and the chart refuses it
    # below that (checked in step 3), so the 1.29 all-on render turns it off.
    echo "note: all-on-1.29 renders with lifecycle.preStopSleep.enabled=false (needs Kubernetes >= 1.30)"
    render "all-on-${kv}" "${kv}" -f "${ALL_ON}" --set lifecycle.preStopSleep.enabled=false
  else
    render "all-on-${kv}" "${kv}" -f "${ALL_ON}"
  fi
done

# ---------------------------------------------------------------------------
section "3. negative checks (must be refused)"
# must_fail <description> <expected error regex> <helm subcommand> [args...]
must_fail() {
  local what="$1" expect="$2"; shift 2
  local log="${WORK}/neg.log"
  if "$@" > "${log}" 2>&1; then
    bad "${what}: was accepted"
  elif grep -Eq -- "${expect}" "${log}"; then
    ok "${what}: refused ($(grep -Eo -m1 -- "${expect}" "${log}"))"
  else
    cat "${log}"
    bad "${what}: failed, but not with /${expect}/"
  fi
}
must_fail "schema: replicaCount=two (helm lint)" "replicaCount.*(got string, want integer)" \
  helm lint --strict "${CHART}" --set replicaCount=two
must_fail "schema: replicaCount=two (helm template)" "replicaCount.*(got string, want integer)" \
  helm template "${RELEASE}" "${CHART}" --set replicaCount=two
must_fail "schema: unknown config key config.bogus" "additional properties 'bogus' not allowed" \
  helm template "${RELEASE}" "${CHART}" --set config.bogus=1
must_fail "schema: config.listen is owned by the chart" "additional properties 'listen' not allowed" \
  helm template "${RELEASE}" "${CHART}" --set config.listen=0.0.0.0:9090
must_fail "schema: bad issuer name" "/config/issuers/0/name': 'Main Issuer' does not match pattern" \
  helm template "${RELEASE}" "${CHART}" --set 'config.issuers[0].name=Main Issuer' \
  --set 'config.issuers[0].issuer=https://idp' --set 'config.issuers[0].audiences[0]=a'
must_fail "schema: malformed image digest" "/image/digest': 'latest' does not match pattern" \
  helm template "${RELEASE}" "${CHART}" --set image.digest=latest
must_fail "template: terminationGracePeriodSeconds <= drain + grace" "must exceed" \
  helm template "${RELEASE}" "${CHART}" --set terminationGracePeriodSeconds=25
must_fail "template: preStopSleep on Kubernetes 1.29" "needs Kubernetes >= 1.30" \
  helm template "${RELEASE}" "${CHART}" --kube-version 1.29.0 --set lifecycle.preStopSleep.enabled=true

# ---------------------------------------------------------------------------
section "4. kubernetes-validate --strict"
for kv in "${KUBE_VERSIONS[@]}"; do
  for set in defaults all-on; do
    name="${set}-${kv}"
    core="${WORK}/${name}.core.yaml"
    echo "-- ${name}.yaml"
    if ! chartcheck split "${WORK}/${name}.yaml" "${core}"; then
      bad "kubernetes-validate ${name}: nothing to validate"
      continue
    fi
    expected="$("${PY}" -c 'import sys,yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "${core}")"
    log="${WORK}/kv-${name}.log"
    rc=0
    kubernetes-validate --strict -k "${kv}" "${core}" > "${log}" 2>&1 || rc=$?
    passed="$(grep -c ' passed for resource ' "${log}" || true)"
    grep -Ev ' passed for resource ' "${log}" || true
    # WARN = no schema for a kind; kubernetes-validate still exits 0 then.
    if [[ ${rc} -ne 0 ]] || grep -q '^WARN' "${log}" || [[ "${passed}" -ne "${expected}" ]]; then
      bad "kubernetes-validate --strict -k ${kv} ${name}: ${passed}/${expected} passed (rc=${rc})"
    else
      ok "kubernetes-validate --strict -k ${kv} ${name}: ${passed}/${expected} passed"
    fi
  done
done

# ---------------------------------------------------------------------------
section "5. CRD objects (ServiceMonitor, PrometheusRule) and wiring"
container_port="$(helm show values "${CHART}" | awk '/^containerPort:/{print $2}')"
for name in defaults-1.33 all-on-1.33 all-on-1.29; do
  echo "-- ${name}.yaml"
  if chartcheck crds-wiring "${WORK}/${name}.yaml" "${container_port}"; then
    ok "CRD structure/PromQL + wiring ${name}"
  else
    bad "CRD structure/PromQL + wiring ${name}"
  fi
done

# ---------------------------------------------------------------------------
section "5b. jwtgate check-config on the rendered config.yaml"
# Uses $JWTGATE_BIN, else builds (a no-op after `cargo test`) and uses target/debug/jwtgate,
# so the rendered config is always checked by the code of this checkout.
jwtgate_bin="${JWTGATE_BIN:-}"
if [[ -z "${jwtgate_bin}" ]]; then
  (cd "${ROOT}" && cargo build --locked --quiet --bin jwtgate)
  jwtgate_bin="${ROOT}/target/debug/jwtgate"
fi
if [[ ! -x "${jwtgate_bin}" ]]; then
  bad "jwtgate check-config: no jwtgate binary at ${jwtgate_bin}"
else
  echo "using ${jwtgate_bin}"
  # check-config reads and parses every issuer's ca_file (as serve does). The rendered paths are
  # the pod's mounts, absent here: point them at a throwaway CA certificate made for this check.
  test_ca="${WORK}/check-config-ca.pem"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj /CN=jwtgate-check-chart -days 1 -out "${test_ca}" 2>/dev/null
  for name in defaults-1.33 all-on-1.33; do
    cfg="${WORK}/${name}.config.yaml"
    "${PY}" -c 'import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1]))
        if d and d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
text = docs[0]["data"]["config.yaml"]
sys.stdout.write(re.sub(r"^(\s*(?:- )?ca_file:).*$", lambda m: m.group(1) + " " + sys.argv[2], text, flags=re.M))' "${WORK}/${name}.yaml" "${test_ca}" > "${cfg}"
    if "${jwtgate_bin}" check-config --config "${cfg}" > "${WORK}/check-config-${name}.log" 2>&1; then
      sed 's/^/  /' "${WORK}/check-config-${name}.log"
      ok "jwtgate check-config ${name}: $(head -n1 "${WORK}/check-config-${name}.log")"
    else
      sed 's/^/  /' "${WORK}/check-config-${name}.log"
      bad "jwtgate check-config ${name}"
    fi
  done
fi

# ---------------------------------------------------------------------------
section "6. values documentation (# -- comments, README table)"
if chartcheck values-doc "${CHART}/values.yaml" "${CHART}/README.md"; then
  ok "every value documented in values.yaml and README.md"
else
  bad "values documentation"
fi

section "6b. config keys: values.schema.json vs src/config.rs"
if [[ -f "${ROOT}/src/config.rs" ]]; then
  if chartcheck config-keys "${CHART}/values.schema.json" "${ROOT}/src/config.rs"; then
    ok "values.schema.json config keys match src/config.rs"
  else
    bad "values.schema.json config keys differ from src/config.rs"
  fi
else
  bad "src/config.rs not found: cannot compare the config schema with jwtgate"
fi

# ---------------------------------------------------------------------------
# run_checkov <label> <skip list> <checkov args...>
run_checkov() {
  local label="$1" skips="$2"; shift 2
  local log="${WORK}/checkov-${label// /_}.log" rc=0
  local skip_args=()
  [[ -n "${skips}" ]] && skip_args=(--skip-check "${skips}")
  checkov --skip-download --compact --quiet "${skip_args[@]}" "$@" > "${log}" 2>&1 || rc=$?
  local summary
  summary="$(grep -E 'Passed checks: [0-9]+, Failed checks: [0-9]+' "${log}" | head -n1 || true)"
  # Failed checks (if any) are listed after the summary with --quiet.
  sed -n '/Failed checks: [1-9]/,$p' "${log}"
  local passed failed
  passed="$(sed -E -n 's/.*Passed checks: ([0-9]+).*/\1/p' <<< "${summary}")"
  failed="$(sed -E -n 's/.*Failed checks: ([0-9]+).*/\1/p' <<< "${summary}")"
  if [[ -z "${summary}" ]]; then
    cat "${log}"
    bad "checkov ${label}: no result summary (rc=${rc})"
  elif [[ ${rc} -ne 0 || "${failed}" != "0" || "${passed}" == "0" ]]; then
    bad "checkov ${label}: ${summary} (rc=${rc})"
  else
    ok "checkov ${label}: ${summary}${skips:+ [--skip-check ${skips}]}"
  fi
}

section "7. checkov --framework kubernetes (rendered manifests)"
for set in defaults all-on; do
  dir="${WORK}/checkov-${set}"
  mkdir -p "${dir}"
  cp "${WORK}/${set}-1.33.yaml" "${dir}/${set}.yaml"
  skips="${CHECKOV_SKIP_DEFAULT}"
  [[ "${set}" == "all-on" ]] && skips="${CHECKOV_SKIP_ALL_ON}"
  run_checkov "kubernetes ${set}" "${skips}" --framework kubernetes -d "${dir}"
  # Resource-scoped skips (checkov.io/skipN annotations) are counted as skipped.
  grep -h -o 'checkov.io/skip[0-9]*: [A-Z0-9_]*' "${dir}/${set}.yaml" | sort | uniq -c | sed 's/^/  annotation skip: /' || true
done

section "8. checkov --framework dockerfile"
run_checkov "dockerfile" "${CHECKOV_SKIP_DOCKERFILE}" --framework dockerfile -f "${ROOT}/Dockerfile"

# ---------------------------------------------------------------------------
section "9. README \"Install on Kubernetes\": helm install --dry-run=client"
install_dir="${WORK}/readme-install"
mkdir -p "${install_dir}"
ln -s "${ROOT}/helm" "${install_dir}/helm"
if install_cmd="$(chartcheck readme-install "${ROOT}/README.md" "${install_dir}")"; then
  echo "  ${install_cmd} --dry-run=client"
  if (cd "${install_dir}" && bash -c "${install_cmd} --dry-run=client") > "${WORK}/install.out" 2>&1; then
    if chartcheck install-check "${WORK}/install.out" "${install_dir}" \
       && "${jwtgate_bin}" check-config --config "${install_dir}/config.yaml" > "${WORK}/install-cc.log" 2>&1; then
      ok "README install: helm install --dry-run=client, image, annotations, check-config"
    else
      cat "${WORK}/install-cc.log" 2>/dev/null || true
      bad "README install: the rendered release does not match the README"
    fi
  else
    cat "${WORK}/install.out"
    bad "README install: helm install --dry-run=client failed"
  fi
else
  bad "README install: the section's commands or values file are missing"
fi
# Installing the chart as shipped must say, at install time, that its image does not exist.
if helm install "${RELEASE}" "${CHART}" --namespace "${NAMESPACE}" --dry-run=client 2>&1 \
   | grep -q 'WARNING: image.repository is the placeholder'; then
  ok "NOTES.txt warns when image.repository is the unpublished placeholder"
else
  bad "NOTES.txt does not warn about the placeholder image.repository"
fi

# ---------------------------------------------------------------------------
section "10. Grafana dashboard and alerts: promtool, metric names from a live gate"
prom_dir="${WORK}/promtool"
mkdir -p "${prom_dir}"
prom_render="${WORK}/dashboard-alerts.yaml"
if helm template "${RELEASE}" "${CHART}" --namespace "${NAMESPACE}" \
     --set grafanaDashboard.enabled=true --set prometheusRule.enabled=true > "${prom_render}" 2>&1 \
   && chartcheck dashboard-promql "${prom_render}" "${prom_dir}"; then
  ok "dashboard: every panel has PromQL, variables substituted"
else
  bad "dashboard: panels or PromQL"
fi
for rules in dashboard-rules alert-rules; do
  if promtool check rules "${prom_dir}/${rules}.yaml" > "${WORK}/promtool-${rules}.log" 2>&1; then
    ok "promtool check rules ${rules}: $(grep -Eo '[0-9]+ rules found' "${WORK}/promtool-${rules}.log")"
  else
    cat "${WORK}/promtool-${rules}.log"
    bad "promtool check rules ${rules}"
  fi
done
# The all-on render too (its additionalRules are the user's, so only syntax is checked there).
"${PY}" -c 'import sys, yaml
d = [x for x in yaml.safe_load_all(open(sys.argv[1])) if x and x["kind"] == "PrometheusRule"][0]
yaml.safe_dump({"groups": d["spec"]["groups"]}, open(sys.argv[2], "w"))' "${WORK}/all-on-1.33.yaml" "${prom_dir}/all-on-rules.yaml"
if promtool check rules "${prom_dir}/all-on-rules.yaml" > "${WORK}/promtool-all-on.log" 2>&1; then
  ok "promtool check rules all-on PrometheusRule: $(grep -Eo '[0-9]+ rules found' "${WORK}/promtool-all-on.log")"
else
  cat "${WORK}/promtool-all-on.log"
  bad "promtool check rules all-on PrometheusRule"
fi
# A live gate: the development issuer and a gate trusting it, a few decisions, one scrape.
demo_log="${WORK}/demo.out"
"${jwtgate_bin}" demo --listen 127.0.0.1:0 --issuer-listen 127.0.0.1:0 > "${demo_log}" 2> "${WORK}/demo.err" &
demo_pid=$!
for _ in $(seq 1 200); do
  grep -q '^Try it' "${demo_log}" && break
  kill -0 "${demo_pid}" 2>/dev/null || break
  sleep 0.1
done
gate="$(sed -n 's|^gate listening on \(http://[0-9.:]*\).*|\1|p' "${demo_log}")"
token="$(sed -n '/valid for one hour/{n;n;p}' "${demo_log}")"
if [[ -n "${gate}" && -n "${token}" ]]; then
  curl -s -o /dev/null -H "Authorization: Bearer ${token}" "${gate}/verify"
  curl -s -o /dev/null "${gate}/verify"
  curl -s -o /dev/null -H "Authorization: Bearer ${token}" "${gate}/verify?scope=orders:write"
  curl -s -o /dev/null "${gate}/verify?bogus=1"
  curl -s "${gate}/metrics" > "${prom_dir}/metrics.txt"
fi
kill "${demo_pid}" 2>/dev/null || true
wait "${demo_pid}" 2>/dev/null || true
if [[ -s "${prom_dir}/metrics.txt" ]] && chartcheck metric-names "${prom_dir}/exprs.json" "${prom_dir}/metrics.txt"; then
  ok "dashboard and alert PromQL name only metrics a live jwtgate exports"
else
  cat "${demo_log}" "${WORK}/demo.err" 2>/dev/null | tail -n 20
  bad "dashboard and alert PromQL: metric names (live gate at ${gate:-none})"
fi
cp "${ROOT}/scripts/promtool/jwtgate-alerts.test.yaml" "${prom_dir}/"
if chartcheck alert-tests "${prom_dir}/jwtgate-alerts.rules.yaml" "${prom_dir}/jwtgate-alerts.test.yaml" \
   && promtool test rules "${prom_dir}/jwtgate-alerts.test.yaml" > "${WORK}/promtool-test.log" 2>&1; then
  ok "promtool test rules: every alert fires on a synthetic series and stays quiet on a healthy one"
else
  cat "${WORK}/promtool-test.log" 2>/dev/null || true
  bad "promtool test rules"
fi

# ---------------------------------------------------------------------------
section "summary"
printf '%s\n' "${RESULTS[@]}"
if [[ ${failures} -gt 0 ]]; then
  printf '\n%d check(s) FAILED\n' "${failures}"
  exit 1
fi
printf '\nall %d checks passed\n' "${#RESULTS[@]}"
