"""Helpers for tests/e2e/run.sh: a webhook receiver, configuration writers, and the checks.

Every check raises SystemExit with a message saying what was expected and what was found.
Only the standard library and PyYAML (from tests/e2e/tools/requirements.txt).
"""

import argparse
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def fail(message):
    raise SystemExit(f"FAIL: {message}")


def say(message):
    print(message, flush=True)


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def http_text(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


# --- small tools -------------------------------------------------------------------------


def cmd_free_port(_args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_webhook(args):
    """Alertmanager webhook receiver: appends {"path", "body"} per request to a JSON-lines file."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            with open(args.log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"path": self.path, "body": body}) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


# --- the exporter's metrics --------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def unescape(value):
    """A label value from the exposition format with its escapes (backslash, quote, newline) undone."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def scrape(url):
    samples = []
    for line in http_text(url).splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            fail(f"unparsable exposition line from {url}: {line!r}")
        labels = {k: unescape(v) for k, v in LABEL.findall(m.group(3) or "")}
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def one(samples, name, **labels):
    found = [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items())]
    if len(found) != 1:
        fail(f"expected one {name}{labels}, found {len(found)}")
    return found[0]


def cmd_e2e_config(args):
    """Writes the configuration of the e2e exporter: the demo's payer account, through the demo's
    simulator, with budgets placed around what the demo serves for the same account."""
    demo = yaml.safe_load(open(args.demo_config, encoding="utf-8"))
    payer = next(i for i in demo["integrations"] if i["name"] == "payer")
    samples = scrape(args.demo_metrics)
    mtd = one(samples, "aws_cost_budget_month_to_date_usd", integration="payer", budget="organization")
    forecast = one(samples, "aws_cost_budget_month_forecast_usd", integration="payer", budget="organization")
    unfiltered = [b for b in payer["budgets"] if b["name"] == "organization"]
    if not unfiltered or "accounts" in unfiltered[0] or "services" in unfiltered[0] or "cost_basis" in unfiltered[0]:
        fail("examples/demo.yaml: the payer's `organization` budget is no longer an unfiltered budget on the first cost basis")
    # Forecast over budget, not yet spent: a budget halfway between. On a month's last day the
    # forecast is the month to date and there is no such budget.
    gap = forecast - mtd
    budgets = {
        "e2e-spent": round(mtd / 2, 2),
        "e2e-within": round(forecast * 2, 2),
    }
    if gap >= 2:
        budgets["e2e-forecast"] = round(mtd + gap / 2, 2)
    config = {
        "refresh_interval": "1h",
        "integrations": [{
            "name": "e2e",
            "account_id": payer["account_id"],
            "access_key_id": payer["access_key_id"],
            "secret_access_key": payer["secret_access_key"],
            "endpoint_url": args.endpoint,
            "cost_basis": [payer["cost_basis"][0]],
            "budgets": [{"name": n, "monthly_usd": v} for n, v in budgets.items()],
        }],
    }
    with open(args.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    with open(args.expect, "w", encoding="utf-8") as f:
        json.dump({"month_to_date": mtd, "forecast": forecast, "budgets": budgets}, f)
    say(f"  demo payer month to date {mtd:.2f} USD, forecast {forecast:.2f} USD; e2e budgets {budgets}")


def cmd_am_config(args):
    """The example Alertmanager configuration with every receiver pointed at the local webhook,
    at a path naming the receiver; routes and inhibition unchanged."""
    config = yaml.safe_load(open(args.source, encoding="utf-8"))
    names = [r["name"] for r in config["receivers"]]
    config["receivers"] = [
        {"name": n, "webhook_configs": [{"url": f"{args.webhook}/{n}", "send_resolved": True}]}
        for n in names
    ]
    with open(args.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)


# --- step 2: the alerts, live -------------------------------------------------------------


def webhook_alerts(log):
    """(receiver, alert) for every alert the webhook received."""
    try:
        lines = open(log, encoding="utf-8").read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        entry = json.loads(line)
        for alert in entry["body"].get("alerts", []):
            out.append((entry["path"].strip("/"), entry["body"], alert))
    return out


def check_equal(what, got, want):
    if got != want:
        fail(f"{what}: expected {want!r}, got {got!r}")


def cmd_expect_alerts(args):
    expect = json.load(open(args.expect, encoding="utf-8"))
    mtd, forecast, budgets = expect["month_to_date"], expect["forecast"], expect["budgets"]
    deadline = time.monotonic() + args.timeout

    def e2e(alert, name, budget):
        return (alert["labels"].get("alertname") == name
                and alert["labels"].get("integration") == "e2e"
                and alert["labels"].get("budget") == budget
                and alert["status"] == "firing")

    wanted = [("AwsCostBudgetExceeded", "e2e-spent")]
    if "e2e-forecast" in budgets:
        wanted.append(("AwsCostBudgetForecastOverBudget", "e2e-forecast"))
    else:
        say("  NOTE: today is the last day of the UTC month: the forecast is the month to date, so no "
            "budget can be forecast over without being spent; the forecast alert is checked at "
            "Alertmanager (inhibited by the spent one) instead of at the webhook")
    received = {}
    while time.monotonic() < deadline:
        for receiver, body, alert in webhook_alerts(args.webhook_log):
            for name, budget in wanted:
                if e2e(alert, name, budget):
                    received[(name, budget)] = (receiver, body, alert)
        if len(received) == len(wanted):
            break
        time.sleep(1)
    missing = [w for w in wanted if w not in received]
    if missing:
        try:
            rules = http_json(f"{args.prometheus}/api/v1/alerts")["data"]["alerts"]
        except (urllib.error.URLError, OSError) as e:
            rules = f"(Prometheus did not answer: {e})"
        fail(f"within {args.timeout}s the webhook did not receive {missing}; Prometheus alerts: {json.dumps(rules)[:3000]}")
    say(f"  webhook received {sorted(received)} after {args.timeout - (deadline - time.monotonic()):.0f}s")

    for (name, budget), (receiver, body, alert) in received.items():
        amount = budgets[budget]
        labels = alert["labels"]
        check_equal(f"{name} receiver", receiver, "finops")
        check_equal(f"{name} job", labels.get("job"), "aws-cost-exporter")
        check_equal(f"{name} category", labels.get("category"), "budget")
        check_equal(f"{name} group labels", body["groupLabels"], {"alertname": name, "integration": "e2e", "budget": budget})
        notes = alert["annotations"]
        check_equal(f"{name} budget_usd", notes.get("budget_usd"), f"{amount:.2f}")
        if name == "AwsCostBudgetForecastOverBudget":
            check_equal(f"{name} severity", labels.get("severity"), "warning")
            check_equal(f"{name} summary", notes.get("summary"),
                        f"AWS budget {budget} (e2e) is forecast to exceed its monthly budget")
            check_equal(f"{name} forecast_usd", notes.get("forecast_usd"), f"{forecast:.2f}")
            check_equal(f"{name} description", notes.get("description"),
                        f"The forecast for this month within budget {budget} of integration e2e is "
                        f"{forecast:.2f} USD, over the budget of {amount:.2f} USD ({mtd:.2f} USD spent so far).")
        else:
            check_equal(f"{name} severity", labels.get("severity"), "critical")
            check_equal(f"{name} summary", notes.get("summary"), f"AWS budget {budget} (e2e) is spent")
            check_equal(f"{name} month_to_date_usd", notes.get("month_to_date_usd"), f"{mtd:.2f}")
            check_equal(f"{name} description", notes.get("description"),
                        f"{mtd:.2f} USD have been spent this month within budget {budget} of integration "
                        f"e2e, over the budget of {amount:.2f} USD.")
        say(f"  {name} {budget}: receiver {receiver}, labels and annotations as expected")

    # What must not have arrived: anything about the budget within its limits, the spent
    # budget's forecast warning (inhibited), and exporter health alerts.
    for receiver, _, alert in webhook_alerts(args.webhook_log):
        labels = alert["labels"]
        if labels.get("budget") == "e2e-within":
            fail(f"an alert for the budget within its limits reached {receiver}: {labels}")
        if labels.get("integration") == "e2e" and labels.get("budget") == "e2e-spent" \
                and labels.get("alertname") == "AwsCostBudgetForecastOverBudget":
            fail(f"the spent budget's forecast warning was not inhibited: it reached {receiver}")
        if labels.get("category") == "exporter":
            fail(f"an exporter health alert reached {receiver}: {labels}")

    # Alertmanager holds the spent budget's forecast warning, suppressed by the spent alert.
    query = urllib.parse.urlencode({"filter": ['integration="e2e"', 'budget="e2e-spent"',
                                               'alertname="AwsCostBudgetForecastOverBudget"']}, doseq=True)
    held = http_json(f"{args.alertmanager}/api/v2/alerts?{query}")
    if len(held) != 1 or held[0]["status"]["state"] != "suppressed" or not held[0]["status"]["inhibitedBy"]:
        fail(f"Alertmanager should hold e2e-spent's forecast warning as inhibited; it has {json.dumps(held)[:2000]}")
    say("  e2e-spent's forecast warning is at Alertmanager, inhibited by AwsCostBudgetExceeded")

    # Prometheus: nothing for the budget within limits, no exporter health alert in any state.
    alerts = http_json(f"{args.prometheus}/api/v1/alerts")["data"]["alerts"]
    for alert in alerts:
        labels = alert["labels"]
        if labels.get("budget") == "e2e-within":
            fail(f"Prometheus has an alert for the budget within its limits: {alert}")
        if labels.get("category") == "exporter":
            fail(f"Prometheus has an exporter health alert ({alert['state']}): {labels}")
    say(f"  Prometheus: no alert for e2e-within, no exporter health alert ({len(alerts)} alerts in all)")


# --- step 3: the dashboard's queries ------------------------------------------------------

VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def interpolate(text, values):
    def replace(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            fail(f"query refers to ${name}, which the dashboard does not define: {text}")
        return values[name]
    return VARIABLE.sub(replace, text)


def prom_regex_escape(value):
    # What Grafana's Prometheus data source does with a multi-value selection.
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def prom_query(prometheus, path, params):
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        body = http_json(url, timeout=30)
    except urllib.error.HTTPError as e:
        fail(f"{params}: HTTP {e.code}: {e.read().decode()[:500]}")
    if body.get("status") != "success":
        fail(f"{params}: {body}")
    return body["data"]


def panels_of(panels):
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))


def cmd_dashboard(args):
    dashboard = json.load(open(args.dashboard, encoding="utf-8"))
    prometheus = args.prometheus
    names = set(prom_query(prometheus, "/api/v1/label/__name__/values", {}))
    values = {}
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        if variable["type"] == "datasource":
            check_equal(f"variable {name} query", variable["query"], "prometheus")
            values[name] = "prometheus"
            continue
        check_equal(f"variable {name} type", variable["type"], "query")
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        m = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", query.strip())
        if not m:
            fail(f"variable {name}: not a label_values() query: {query}")
        params = {"match[]": [interpolate(m.group(1), values)]} if m.group(1) else {}
        options = prom_query(prometheus, f"/api/v1/label/{m.group(2)}/values", params)
        if not options:
            fail(f"variable {name}: {query} has no values")
        current = variable.get("current", {}).get("value")
        if variable.get("includeAll") and current in ("$__all", ["$__all"]):
            values[name] = variable.get("allValue") or "(" + "|".join(prom_regex_escape(o) for o in options) + ")"
        else:
            if current not in options:
                fail(f"variable {name}: its default {current!r} is not among {options}")
            values[name] = current
        say(f"  variable {name}: {len(options)} values {options[:6]}{'...' if len(options) > 6 else ''} -> {values[name]}")

    now = time.time()
    count = 0
    for panel in panels_of(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or fail(f"panel {panel['title']!r} has no query")
        for target in targets:
            expr = interpolate(target["expr"], values)
            for metric in set(re.findall(r"\b(aws_cost_[a-z_]+|up)\b(?!\s*\()", expr)):
                if metric not in names:
                    fail(f"panel {panel['title']!r} refers to {metric}, which Prometheus does not have")
            if target.get("instant"):
                data = prom_query(prometheus, "/api/v1/query", {"query": expr, "time": now})
                series = data["result"]
            else:
                data = prom_query(prometheus, "/api/v1/query_range",
                                  {"query": expr, "start": now - 600, "end": now, "step": 15})
                series = [s for s in data["result"] if s["values"]]
            if not series:
                fail(f"panel {panel['title']!r} query {target['refId']} returned no data: {expr}")
            # The labels the panel shows (legend) and groups by must be on every series: a
            # misspelt label still returns data, aggregated into one unlabelled series.
            wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                wanted.update(label.strip() for label in group.split(",") if label.strip())
            for s in series:
                missing = sorted(label for label in wanted if label not in s["metric"])
                if missing:
                    fail(f"panel {panel['title']!r} query {target['refId']}: a series lacks {missing}: {s['metric']} ({expr})")
            count += 1
            say(f"  {panel['title']} [{target['refId']}]: {len(series)} series")
    say(f"  {count} queries of the dashboard answered with data")


# --- step 4: rendered manifests -----------------------------------------------------------

CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def cmd_split(args):
    """Splits a manifest stream into Kubernetes' own kinds (for kubernetes-validate) and the
    Prometheus Operator's (for its published CRD models)."""
    docs = [d for d in yaml.safe_load_all(open(args.manifests, encoding="utf-8")) if d]
    if not docs:
        fail(f"{args.manifests}: no objects")
    native = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CUSTOM_RESOURCES]
    custom = [d for d in docs if (d.get("apiVersion"), d.get("kind")) in CUSTOM_RESOURCES]
    with open(args.native, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(native, f, sort_keys=False)
    with open(args.custom, "w", encoding="utf-8") as f:
        json.dump(custom, f)
    kinds = sorted(d["kind"] for d in docs)
    check_equal(f"{args.manifests} kinds", kinds, sorted(args.kinds.split(",")))
    say(f"  {args.manifests}: {', '.join(kinds)}")


def cmd_chart_sources(args):
    """The rendered chart carries deploy/'s rules and dashboard unchanged, and its configuration
    file is written out for --config.check."""
    docs = [d for d in yaml.safe_load_all(open(args.manifests, encoding="utf-8")) if d]
    for d in docs:
        if d["kind"] == "PrometheusRule":
            rules = yaml.safe_load(open(args.rules, encoding="utf-8"))
            check_equal("PrometheusRule spec.groups against the rules file", d["spec"]["groups"], rules["groups"])
            say("  PrometheusRule groups equal deploy/prometheus/aws-cost-exporter.rules.yml")
        if d["kind"] == "ConfigMap" and "aws-cost-exporter.json" in d.get("data", {}):
            check_equal("dashboard ConfigMap against the dashboard file",
                        json.loads(d["data"]["aws-cost-exporter.json"]), json.load(open(args.dashboard, encoding="utf-8")))
            say("  dashboard ConfigMap equals deploy/grafana/aws-cost-exporter.json")
        if d["kind"] == "ConfigMap" and "aws-cost-exporter.yaml" in d.get("data", {}):
            with open(args.config_out, "w", encoding="utf-8") as f:
                f.write(d["data"]["aws-cost-exporter.yaml"])


# --- step 0: the image -----------------------------------------------------------------------


def cmd_image_config(args):
    image = json.load(open(args.image, encoding="utf-8"))
    config = image["OCIv1"]["config"]
    check_equal("image user", config.get("User"), "65534:65534")
    check_equal("image entrypoint", config.get("Entrypoint"), ["/aws-cost-exporter"])
    check_equal("image cmd", config.get("Cmd"), ["--config.file=/etc/aws-cost-exporter/aws-cost-exporter.yaml"])
    check_equal("image exposed ports", config.get("ExposedPorts"), {"10067/tcp": {}})
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    check_equal("image HOME", env.get("HOME"), "/home/exporter")
    check_equal("image SSL_CERT_FILE", env.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt")
    labels = config.get("Labels") or {}
    check_equal("image licence label", labels.get("org.opencontainers.image.licenses"), "Apache-2.0")
    check_equal("image version label", labels.get("org.opencontainers.image.version"), args.version)
    check_equal("image revision label", labels.get("org.opencontainers.image.revision"), args.revision)
    if not labels.get("org.opencontainers.image.source"):
        fail("the image has no org.opencontainers.image.source label")
    layers = image["OCIv1"]["rootfs"]["diff_ids"]
    check_equal("image layers (scratch, then one root filesystem)", len(layers), 1)
    say("  image config: user 65534:65534, entrypoint /aws-cost-exporter, port 10067, HOME and "
        f"SSL_CERT_FILE, OCI labels (version {args.version}, Apache-2.0); one layer on scratch")


def cmd_image_command(args):
    config = json.load(open(args.image, encoding="utf-8"))["OCIv1"]["config"]
    print("\n".join(config["Entrypoint"] + config["Cmd"]))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("free-port"); p.set_defaults(func=cmd_free_port)
    p = sub.add_parser("webhook"); p.add_argument("port", type=int); p.add_argument("log"); p.set_defaults(func=cmd_webhook)
    p = sub.add_parser("e2e-config")
    for a in ("demo_config", "demo_metrics", "endpoint", "out", "expect"):
        p.add_argument(a)
    p.set_defaults(func=cmd_e2e_config)
    p = sub.add_parser("am-config")
    for a in ("source", "webhook", "out"):
        p.add_argument(a)
    p.set_defaults(func=cmd_am_config)
    p = sub.add_parser("expect-alerts")
    for a in ("expect", "webhook_log", "prometheus", "alertmanager"):
        p.add_argument(a)
    p.add_argument("--timeout", type=float, default=180)
    p.set_defaults(func=cmd_expect_alerts)
    p = sub.add_parser("image-config")
    for a in ("image", "version", "revision"):
        p.add_argument(a)
    p.set_defaults(func=cmd_image_config)
    p = sub.add_parser("image-command"); p.add_argument("image"); p.set_defaults(func=cmd_image_command)
    p = sub.add_parser("dashboard"); p.add_argument("prometheus"); p.add_argument("dashboard"); p.set_defaults(func=cmd_dashboard)
    p = sub.add_parser("split")
    for a in ("manifests", "native", "custom", "kinds"):
        p.add_argument(a)
    p.set_defaults(func=cmd_split)
    p = sub.add_parser("chart-sources")
    for a in ("manifests", "rules", "dashboard", "config_out"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_sources)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
