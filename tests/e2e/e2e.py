"""Helpers for tests/e2e/run.sh: a webhook receiver, configuration writers, and the checks.

Every check raises SystemExit with a message saying what was expected and what was found.
Only the standard library and PyYAML (from tests/e2e/tools/requirements.txt).
"""

import argparse
import base64
import datetime
import http.client
import itertools
import json
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
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
        # Thresholds of its own: half spent, so over 25% of the spend and not over 95%, and a
        # forecast threshold well above the forecast.
        "e2e-thresholds": round(mtd * 2, 2),
    }
    if gap >= 2:
        budgets["e2e-forecast"] = round(mtd + gap / 2, 2)
    low = 25
    high_forecast = int(forecast / budgets["e2e-thresholds"] * 100) + 50
    thresholds = {"e2e-thresholds": [{"percent": low, "on": "actual"}, {"percent": 95, "on": "actual"},
                                     {"percent": high_forecast, "on": "forecast"}]}
    config = {
        "refresh_interval": "1h",
        "integrations": [{
            "name": "e2e",
            "account_id": payer["account_id"],
            "access_key_id": payer["access_key_id"],
            "secret_access_key": payer["secret_access_key"],
            "endpoint_url": args.endpoint,
            "cost_basis": [payer["cost_basis"][0]],
            "budgets": [dict({"name": n, "monthly_usd": v}, **({"thresholds": thresholds[n]} if n in thresholds else {}))
                        for n, v in budgets.items()],
        }],
    }
    with open(args.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    with open(args.expect, "w", encoding="utf-8") as f:
        json.dump({"month_to_date": mtd, "forecast": forecast, "budgets": budgets, "low": low}, f)
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


def humanize_percentage(ratio):
    """Prometheus' humanizePercentage for shares of at least 1%."""
    return "%.4g%%" % (ratio * 100)


def cmd_expect_alerts(args):
    expect = json.load(open(args.expect, encoding="utf-8"))
    mtd, forecast, budgets, low = expect["month_to_date"], expect["forecast"], expect["budgets"], expect["low"]
    deadline = time.monotonic() + args.timeout
    name = "AwsCostBudgetThresholdExceeded"

    def key(alert):
        labels = alert["labels"]
        if labels.get("alertname") != name or labels.get("integration") != "e2e" or alert["status"] != "firing":
            return None
        return (labels.get("budget"), labels.get("on"), labels.get("percent"))

    wanted = [("e2e-spent", "actual", "100"), ("e2e-thresholds", "actual", str(low))]
    if "e2e-forecast" in budgets:
        wanted.append(("e2e-forecast", "forecast", "100"))
    else:
        say("  NOTE: today is the last day of the UTC month: the forecast is the month to date, so no "
            "budget can be forecast over without being spent; the forecast threshold is checked at "
            "Alertmanager (inhibited by the spent one) instead of at the webhook")
    received = {}
    while time.monotonic() < deadline:
        for receiver, body, alert in webhook_alerts(args.webhook_log):
            if key(alert) in wanted:
                received[key(alert)] = (receiver, body, alert)
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

    for (budget, on, percent), (receiver, body, alert) in received.items():
        what = f"{name} {budget} {on} {percent}%"
        amount = budgets[budget]
        labels = alert["labels"]
        check_equal(f"{what} receiver", receiver, "finops")
        check_equal(f"{what} job", labels.get("job"), "aws-cost-exporter")
        check_equal(f"{what} category", labels.get("category"), "budget")
        check_equal(f"{what} severity", labels.get("severity"), "warning")
        check_equal(f"{what} instance", labels.get("instance"), None)
        check_equal(f"{what} group labels", body["groupLabels"], {"alertname": name, "integration": "e2e", "budget": budget})
        notes = alert["annotations"]
        figure = forecast if on == "forecast" else mtd
        ratio = figure / amount
        check_equal(f"{what} budget_usd", notes.get("budget_usd"), f"{amount:.2f}")
        check_equal(f"{what} ratio", notes.get("ratio"), f"{ratio:.4f}")
        check_equal(f"{what} runbook_url", notes.get("runbook_url"),
                    "https://github.com/aws-cost-exporter/aws-cost-exporter/blob/main/docs/runbooks.md#awscostbudgetthresholdexceeded")
        verb = "is forecast at" if on == "forecast" else "has spent"
        check_equal(f"{what} summary", notes.get("summary"),
                    f"AWS budget {budget} (e2e) {verb} {humanize_percentage(ratio)} of its monthly budget, "
                    f"over its {percent}% threshold")
        subject = "The forecast for this month" if on == "forecast" else "The spend so far this month"
        check_equal(f"{what} description", notes.get("description"),
                    f"{subject} within budget {budget} of integration e2e is {figure:.2f} USD, "
                    f"{humanize_percentage(ratio)} of the budget of {amount:.2f} USD, over the {percent}% "
                    f"threshold on the {on} spend ({mtd:.2f} USD spent so far).")
        say(f"  {what}: receiver {receiver}, labels and annotations as expected")

    # What must not have arrived: anything about the budget within its limits, the thresholds
    # not crossed, the spent budget's forecast threshold (inhibited), and exporter health alerts.
    for receiver, _, alert in webhook_alerts(args.webhook_log):
        labels = alert["labels"]
        if labels.get("budget") == "e2e-within":
            fail(f"an alert for the budget within its limits reached {receiver}: {labels}")
        if labels.get("integration") == "e2e" and labels.get("budget") == "e2e-thresholds" \
                and labels.get("percent") != str(low):
            fail(f"a threshold of e2e-thresholds that is not crossed reached {receiver}: {labels}")
        if labels.get("integration") == "e2e" and labels.get("budget") == "e2e-spent" \
                and labels.get("on") == "forecast":
            fail(f"the spent budget's forecast threshold was not inhibited: it reached {receiver}")
        if labels.get("category") == "exporter":
            fail(f"an exporter health alert reached {receiver}: {labels}")

    # Alertmanager holds the spent budget's forecast threshold, suppressed by the spent one.
    query = urllib.parse.urlencode({"filter": ['integration="e2e"', 'budget="e2e-spent"', 'on="forecast"',
                                               f'alertname="{name}"']}, doseq=True)
    held = http_json(f"{args.alertmanager}/api/v2/alerts?{query}")
    if len(held) != 1 or held[0]["status"]["state"] != "suppressed" or not held[0]["status"]["inhibitedBy"]:
        fail(f"Alertmanager should hold e2e-spent's forecast threshold as inhibited; it has {json.dumps(held)[:2000]}")
    say("  e2e-spent's 100% forecast threshold is at Alertmanager, inhibited by its 100% actual one")

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


def go_quote(value):
    # Go's %q for the label values Prometheus returns (printable text).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def js_regex(pattern, where):
    # Grafana's stringToJsRegex: /pattern/flags as written, anything else anchored.
    if not pattern.startswith("/"):
        return re.compile("^" + pattern + "$")
    m = re.fullmatch(r"/(.*?)/(i?)", pattern)
    if not m:
        fail(f"panel {where}: regex {pattern!r}: flags other than i are not modelled")
    return re.compile(m.group(1), re.IGNORECASE if m.group(2) else 0)


def js_replacement(template, match):
    # JavaScript's String.prototype.replace: $1..$99 (unmatched: empty), $& and $$.
    def one(m):
        token = m.group(0)
        if token == "$$":
            return "$"
        if token == "$&":
            return match.group(0)
        n = int(token[1:])
        if n > (match.re.groups or 0):
            return token
        return match.group(n) or ""
    return re.sub(r"\$\$|\$&|\$\d{1,2}", one, template)


def series_names(panel, target, series, where):
    """The names a panel gives a query's series, where the Prometheus data source names them (a
    legend template, or "" for the verbose {label="value", ...}), after the panel's renameByRegex
    transformations; None for __auto, which Grafana's front end names. Each must be distinct and
    not empty, and no series may fall back to the query's expression (Grafana's name for a
    series without labels under the verbose legend)."""
    legend_format = target.get("legendFormat", "")
    if legend_format == "__auto":
        return None
    result = []
    for s in series:
        labels = dict(s["metric"])
        if legend_format:
            name = re.sub(r"\{\{\s*(.+?)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend_format)
        else:
            metric = labels.pop("__name__", "")
            pairs = ", ".join(f"{k}={go_quote(v)}" for k, v in sorted(labels.items()))
            name = f"{metric}{{{pairs}}}" if pairs or not metric else metric
            if name == "{}":
                fail(f"panel {where}: a series without labels, which Grafana names by the query's expression")
        for transformation in panel.get("transformations", []):
            if transformation["id"] != "renameByRegex":
                continue
            regex = js_regex(transformation["options"]["regex"], where)
            m = regex.search(name)
            if m:
                name = name[:m.start()] + js_replacement(transformation["options"]["renamePattern"], m) + name[m.end():]
        result.append(name)
    if "" in result:
        fail(f"panel {where}: a series is named by an empty string: {[s['metric'] for s in series]}")
    duplicates = sorted({n for n in result if result.count(n) > 1})
    if duplicates:
        fail(f"panel {where}: series share the names {duplicates}")
    return result


def panels_of(panels):
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))


def cmd_dashboard(args):
    dashboard = json.load(open(args.dashboard, encoding="utf-8"))
    prometheus = args.prometheus
    names = set(prom_query(prometheus, "/api/v1/label/__name__/values", {}))
    values = {}
    each = {}  # variables without a default: every option
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
        if name in SCOPE_VARIABLES:
            # Hidden, All by default, and All matches series without the label (.* matches "").
            for key, want in (("hide", 2), ("includeAll", True), ("allValue", ".*")):
                check_equal(f"variable {name} {key}", variable.get(key), want)
            check_equal(f"variable {name} default", variable.get("current", {}).get("value"), ["$__all"])
        if not options and not (variable.get("includeAll") and variable.get("allValue")):
            fail(f"variable {name}: {query} has no values")
        if "current" not in variable:
            # No default: Grafana selects the first option, in the variable's order, and the user
            # any other; the queries that use it are run with each of them.
            if variable.get("multi") or variable.get("includeAll"):
                fail(f"variable {name}: no default, but multi-value or with All (Grafana's choice is not modelled)")
            sort = variable.get("sort", 0)
            if sort == 1:
                options = sorted(options)  # alphabetical, ascending
            elif sort != 0:
                fail(f"variable {name}: sort {sort} is not modelled")
            values[name] = options[0]
            each[name] = options
            say(f"  variable {name}: {len(options)} values {options[:6]}{'...' if len(options) > 6 else ''}, no default -> {values[name]}; its queries run with each")
            continue
        current = variable["current"].get("value")
        if variable.get("includeAll") and current in ("$__all", ["$__all"]):
            values[name] = variable.get("allValue") or "(" + "|".join(prom_regex_escape(o) for o in options) + ")"
        else:
            if current not in options:
                fail(f"variable {name}: its default {current!r} is not among {options}")
            values[name] = current
        say(f"  variable {name}: {len(options)} values {options[:6]}{'...' if len(options) > 6 else ''} -> {values[name]}")

    check_scoped(dashboard)
    # The defaults select every exporter Prometheus scrapes, with a cluster label or without.
    everything = prom_query(prometheus, "/api/v1/query", {"query": "count(aws_cost_exporter_build_info)"})["result"]
    scoped = prom_query(prometheus, "/api/v1/query", {"query": interpolate(
        f"count(aws_cost_exporter_build_info{{{SCOPE}}})", values)})["result"]
    check_equal("exporters selected by the default job and cluster", scoped and scoped[0]["value"][1],
                everything and everything[0]["value"][1])
    say(f"  job and cluster: the defaults select all {everything[0]['value'][1]} exporter targets")

    now = time.time()
    count = 0
    differing = []
    for panel in panels_of(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or fail(f"panel {panel['title']!r} has no query")
        for target in targets:
            used = sorted({m.group(1) or m.group(2) or m.group(3) for m in VARIABLE.finditer(target["expr"])} & set(each))
            for choice in itertools.product(*(each[name] for name in used)):
                chosen = dict(zip(used, choice))
                expr = interpolate(target["expr"], {**values, **chosen})
                where = f"{panel['title']!r} query {target['refId']}" + "".join(f" {k}={v}" for k, v in chosen.items())
                try:
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
                        fail(f"panel {where} returned no data: {expr}")
                    # The labels the panel shows (legend) and groups by must be on every series: a
                    # misspelt label still returns data, aggregated into one unlabelled series.
                    wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                        wanted.update(label.strip() for label in group.split(",") if label.strip())
                    for s in series:
                        missing = sorted(label for label in wanted if label not in s["metric"])
                        if missing:
                            fail(f"panel {where}: a series lacks {missing}: {s['metric']} ({expr})")
                    legend = series_names(panel, target, series, where)
                    count += 1
                    shown = f"; legend {legend[:4]}{'...' if len(legend) > 4 else ''}" if legend else ""
                    if args.replicas:
                        problem, kind = check_replicas(prometheus, target, {**values, **chosen}, now, args.replicas)
                        if problem:
                            differing.append(f"panel {where}: {problem}")
                            shown += f"; REPLICAS DIFFER ({kind})"
                        else:
                            shown += f"; {kind}"
                    say(f"  {panel['title']} [{target['refId']}]{''.join(f' {k}={v}' for k, v in chosen.items())}: {len(series)} series{shown}")
                except SystemExit as e:
                    # With replicas every failing query is listed at the end, so that one run
                    # shows all of them (a join the replicas make many-to-many fails here).
                    if not args.replicas:
                        raise
                    message = str(e).removeprefix("FAIL: ")
                    differing.append(message if message.startswith("panel ") else f"panel {where}: {message}")
                    say(f"  {panel['title']} [{target['refId']}]{''.join(f' {k}={v}' for k, v in chosen.items())}: FAILED")
    say(f"  {count} queries of the dashboard answered with data")
    if args.replicas:
        if differing:
            fail(f"{len(differing)} queries fail, or answer differently with the replicas "
                 f"{args.replicas} than with one of them alone:\n  " + "\n  ".join(differing))
        say(f"  every query answers with both replicas ({', '.join(args.replicas)}) what it answers "
            f"with each alone (the exporter's own per-replica series: one per replica, or added up)")
    if args.source:
        check_request_bill(dashboard, prometheus, values, args.source, now)


# --- replicas: two pods serving the same records ------------------------------------------

# Series of the exporter's process itself rather than of the records the replicas share: each
# replica's `up`, and the AWS requests each replica made (only the one holding an integration's
# lease refreshes it). The dashboard shows these per replica or adds them up; every other series
# is the same on every replica and must be counted once.
PER_REPLICA = {"up", "aws_cost_api_requests_total"}
REPLICA_LABEL = "pod"
# Relative tolerance for sums added up in another order (as check_request_bill's).
TOLERANCE = 1e-9


def with_matcher(expr, matcher):
    """expr with matcher added to every metric selector."""
    def add(m):
        inner = (m.group(2) or "{}")[1:-1].strip()
        return m.group(1) + "{" + (inner + ", " if inner else "") + matcher + "}"
    return SELECTOR.sub(add, expr)


def query_points(prometheus, expr, instant, now):
    """{label set: {timestamp: value}} of expr, at now or over the test's range."""
    if instant:
        result = prom_query(prometheus, "/api/v1/query", {"query": expr, "time": now})["result"]
        return {frozenset(s["metric"].items()): {s["value"][0]: float(s["value"][1])} for s in result}
    result = prom_query(prometheus, "/api/v1/query_range", {"query": expr, "start": now - 600, "end": now, "step": 15})["result"]
    return {frozenset(s["metric"].items()): {t: float(v) for t, v in s["values"]} for s in result if s["values"]}


def close(a, b):
    return a == b or abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def show(key):
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in sorted(key)) + "}"


def compare_replicas(got, alone, per_replica):
    """None when got (the query over every replica) is what the replicas alone give: for series
    they share, the same series with the same values as each replica alone (a timestamp one
    replica has no sample at yet aside); for per-replica series, each replica's series, added up
    where they have the same labels. Else what differs."""
    if per_replica:
        want = {}
        for points in alone:
            for key, values in points.items():
                for t, v in values.items():
                    want.setdefault(key, {})
                    want[key][t] = want[key].get(t, 0.0) + v
    else:
        keys = [set(points) for points in alone]
        for i, k in enumerate(keys[1:], 1):
            if k != keys[0]:
                return (f"replica {i + 1} alone gives other series than replica 1 alone: "
                        f"{sorted(map(show, k ^ keys[0]))[:4]}")
        want = {}
        for points in alone:
            for key, values in points.items():
                for t, v in values.items():
                    if t in want.setdefault(key, {}) and not close(want[key][t], v):
                        return f"the replicas alone disagree on {show(key)} at {t}: {want[key][t]} and {v}"
                    want[key][t] = v
    if set(got) != set(want):
        return (f"series {sorted(map(show, set(got) - set(want)))[:4]} with the replicas, "
                f"{sorted(map(show, set(want) - set(got)))[:4]} with one alone")
    for key, values in want.items():
        if set(got[key]) != set(values):
            return f"{show(key)}: samples at {len(got[key])} timestamps with the replicas, {len(values)} alone"
        for t, v in sorted(values.items()):
            if not close(got[key][t], v):
                return f"{show(key)} at {t}: {got[key][t]} with the replicas, {v} {'added up ' if per_replica else ''}alone"
    return None


def check_replicas(prometheus, target, values, now, replicas):
    """A query over several replicas of each exporter (targets of one job differing in instance
    and pod, serving the same lines) against the same query over each replica alone (the pod
    matcher in every selector: what a Prometheus scraping that one target sees). Retried a few
    times: a refresh between two replicas' scrapes changes one before the other. Returns (what
    differs or None, the kind of query)."""
    template = target["expr"]
    metrics = set(re.findall(r"\b(aws_cost_[a-z_]+|up)\b(?!\s*\()", template))
    per_replica = bool(metrics & PER_REPLICA)
    if per_replica and metrics - PER_REPLICA:
        fail(f"{template}: per-replica series ({sorted(metrics & PER_REPLICA)}) with shared ones: not modelled")
    instant = bool(target.get("instant"))
    for attempt in range(3):
        got = query_points(prometheus, interpolate(template, values), instant, now)
        alone = [query_points(prometheus, interpolate(with_matcher(template, f'{REPLICA_LABEL}="{pod}"'), values), instant, now)
                 for pod in replicas]
        empty = [pod for pod, points in zip(replicas, alone) if not points]
        problem = f"no data with {REPLICA_LABEL} {empty} alone" if empty else compare_replicas(got, alone, per_replica)
        if not problem or attempt == 2:
            break
        time.sleep(6)
        now = time.time()
    return problem, ("per replica" if per_replica else "as one replica")


SCOPE_VARIABLES = ("job", "cluster")
SCOPE = 'job=~"$job", cluster=~"$cluster"'
SELECTOR = re.compile(r'(?<![\w:"])(aws_cost_[a-z_]+|up)\b(?!\s*\()(\{[^}]*\})?')


def check_scoped(dashboard):
    """Every metric selector of every query and variable (but job's and cluster's own) carries
    job=~"$job" and cluster=~"$cluster"."""
    exprs = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query" and variable["name"] not in SCOPE_VARIABLES:
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            exprs.append((f"variable {variable['name']}", query))
    for panel in panels_of(dashboard["panels"]):
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r} query {target['refId']}", target["expr"]))
    for where, expr in exprs:
        for m in SELECTOR.finditer(expr):
            matchers = m.group(2) or ""
            if 'job=~"$job"' not in matchers or 'cluster=~"$cluster"' not in matchers:
                fail(f"{where}: {m.group(0)} lacks {SCOPE}: {expr}")
    say(f"  every selector of the {len(exprs)} queries carries {SCOPE}")


# --- the exporter's own bill: which operations are billed --------------------------------

# The AWS clients the exporter counts requests on (aws_cost_api_requests_total), by crate:
# Cost Explorer bills every request (src/api_budget.rs); STS and Organizations are free.
BILLED_CRATES = {"aws_sdk_costexplorer"}
FREE_CRATES = {"aws_sdk_sts", "aws_sdk_organizations"}
# The shared storage's client (--storage.path s3://...): S3's requests are not AWS API requests
# of an integration, and are not counted in aws_cost_api_requests_total.
STORAGE_CRATES = {"aws_sdk_s3"}
# An operation call on a client: `client.op()`, `self.client().op()`, `self.sts.op()`, with
# the fluent method of an operation (snake case of its name: at least two words).
CLIENT_CALL = re.compile(r"\b(client(?:\(\))?|sts|organizations)\s*\.\s*([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\(\)")


def source_operations(source):
    """{operation: billed} for every AWS operation the exporter's source calls, each classified
    by its client: the sts and organizations receivers are STS and Organizations; a client
    receiver by the one AWS SDK crate its file uses."""
    operations = {}
    for path in sorted(pathlib.Path(source).rglob("*.rs")):
        text = re.sub(r"//[^\n]*", "", path.read_text(encoding="utf-8"))
        used = set(re.findall(r"\b(aws_sdk_[a-z0-9]+)\b", text))
        if used and used <= STORAGE_CRATES:
            continue
        crates = used & (BILLED_CRATES | FREE_CRATES)
        for m in CLIENT_CALL.finditer(text):
            receiver, method = m.group(1), m.group(2)
            if receiver == "sts":
                crate = "aws_sdk_sts"
            elif receiver == "organizations":
                crate = "aws_sdk_organizations"
            elif len(crates) == 1:
                crate = next(iter(crates))
            else:
                fail(f"{path}: {m.group(0)}: cannot tell which AWS client it is on (the file uses {sorted(crates) or 'none'})")
            operation = "".join(word.capitalize() for word in method.split("_"))
            billed = crate in BILLED_CRATES
            if operations.get(operation, billed) != billed:
                fail(f"{path}: {operation} is called on a billed and on a free client; the operation label cannot tell them apart")
            operations[operation] = billed
    if not any(operations.values()) or all(operations.values()):
        fail(f"{source}: expected billed and free operations, found {operations}")
    return operations


def scraped_bill(prometheus, values, billed):
    """0.01 USD per billed request counted on the pages of the exporters Prometheus scrapes that the
    job and cluster variables select, for the integrations the integration variable selects."""
    total = 0.0
    targets = prom_query(prometheus, "/api/v1/targets", {"state": "active"})["activeTargets"]
    for target in targets:
        labels = target["labels"]
        if not all(re.fullmatch(values[name], labels.get(name, "")) for name in SCOPE_VARIABLES):
            continue
        for name, sample_labels, value in scrape(target["scrapeUrl"]):
            if name == "aws_cost_api_requests_total" and sample_labels["operation"] in billed \
                    and re.fullmatch(values["integration"], sample_labels["integration"]):
                total += value
    return total * 0.01


def label_matches(op, pattern, value):
    # Prometheus's matchers: regular expressions fully anchored.
    return {"=": value == pattern, "!=": value != pattern,
            "=~": re.fullmatch(pattern, value) is not None,
            "!~": re.fullmatch(pattern, value) is None}[op]


def check_request_bill(dashboard, prometheus, values, source, now):
    """Every query that prices the exporter's requests (aws_cost_api_requests_total times 0.01)
    counts exactly the billed operations: every Cost Explorer operation the source calls, and
    neither STS's nor Organizations'; and, in Prometheus, its value is the sum of the billed
    operations' counters computed independently."""
    operations = source_operations(source)
    billed = sorted(o for o, b in operations.items() if b)
    free = sorted(o for o, b in operations.items() if not b)
    say(f"  the source's billed operations: {billed}; free: {free}")

    seen = {s["metric"]["operation"]: float(s["value"][1]) for s in prom_query(
        prometheus, "/api/v1/query", {"query": "sum by (operation) (aws_cost_api_requests_total)", "time": now})["result"]}
    unknown = sorted(set(seen) - set(operations))
    if unknown:
        fail(f"Prometheus counts requests of {unknown}, which the source reader did not find: update source_operations")
    for name, group in (("billed", billed), ("free", free)):
        missing = sorted(set(group) - set(seen))
        if missing:
            say(f"  NOTE: no {name} request of {missing} in Prometheus (the demo does not make it)")
    if not [o for o in free if seen.get(o)]:
        fail(f"no free request in Prometheus ({seen}): the exclusion of free operations is not exercised")

    checked = 0
    for panel in panels_of(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "aws_cost_api_requests_total" not in expr or not re.search(r"\*\s*0\.01\b", expr):
                continue
            where = f"panel {panel['title']!r} query {target['refId']}"
            selectors = re.findall(r"aws_cost_api_requests_total(\{[^}]*\})", expr)
            if len(selectors) != 1:
                fail(f"{where}: expected one aws_cost_api_requests_total selector: {expr}")
            matchers = re.findall(r'\boperation\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', selectors[0])
            counted = [o for o in operations if all(label_matches(op, pat, o) for op, pat in matchers)]
            wrong = sorted(o for o in operations if (o in counted) != operations[o])
            if wrong:
                fail(f"{where}: counts {sorted(counted)}, but the billed operations are {billed} "
                     f"(free: {free}); wrong for {wrong}: {expr}")
            # In Prometheus: the operations the panel's selector picks, and its value against the
            # same expression over the billed operations named one by one.
            got_ops = {s["metric"].get("operation") for s in prom_query(prometheus, "/api/v1/query", {
                "query": interpolate(f"group by (operation) (aws_cost_api_requests_total{selectors[0]})", values),
                "time": now})["result"]}
            check_equal(f"{where}: operations it counts in Prometheus", sorted(got_ops),
                        sorted(o for o in billed if o in seen))
            others = [m.group(0) for m in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"', selectors[0])
                      if m.group(1) != "operation"]
            reference = expr.replace(selectors[0], "{" + ", ".join(others + [f'operation=~"{"|".join(billed)}"']) + "}")
            got = prom_query(prometheus, "/api/v1/query", {"query": interpolate(expr, values), "time": now})["result"]
            want = prom_query(prometheus, "/api/v1/query", {"query": interpolate(reference, values), "time": now})["result"]
            if len(got) != 1 or len(want) != 1:
                fail(f"{where}: expected one value each: {got} against {want} ({reference})")
            g, w = float(got[0]["value"][1]), float(want[0]["value"][1])
            if abs(g - w) > 1e-9 * max(1.0, abs(w)):
                fail(f"{where}: {g} against {w} from the billed operations' counters ({reference})")
            # The counters themselves (the increase over the test's few minutes is usually 0): the
            # panel's expression without increase(), against the exporters' own pages.
            counter_expr, n = re.subn(r"increase\((aws_cost_api_requests_total\{[^}]*\})\[[^\]]+\]\)", r"\1", expr)
            if n != 1:
                fail(f"{where}: expected increase(aws_cost_api_requests_total{{...}}[range]): {expr}")
            for attempt in range(5):
                before = prom_query(prometheus, "/api/v1/query", {"query": interpolate(counter_expr, values)})["result"]
                scraped = scraped_bill(prometheus, values, billed)
                after = prom_query(prometheus, "/api/v1/query", {"query": interpolate(counter_expr, values)})["result"]
                if len(before) == 1 and before == after or attempt == 4:
                    break
                time.sleep(6)  # a scrape or refresh in between: once more
            if len(before) != 1:
                fail(f"{where}: expected one value: {before} ({counter_expr})")
            c = float(before[0]["value"][1])
            if not c > 0 or abs(c - scraped) > 1e-9 * max(1.0, scraped):
                fail(f"{where}: its expression on the counters gives {c} USD in Prometheus, the billed "
                     f"operations' counters on the exporters' pages {scraped} USD ({counter_expr})")
            all_ops = prom_query(prometheus, "/api/v1/query", {"query": interpolate(
                counter_expr.replace(selectors[0], "{" + ", ".join(others) + "}"), values)})["result"]
            say(f"  {panel['title']} [{target['refId']}]: {g:.2f} USD, the same over the billed operations "
                f"{w:.2f}; on the counters {c:.2f} USD, from the exporters' pages {scraped:.2f} "
                f"(every operation, free ones included: {float(all_ops[0]['value'][1]):.2f})")
            checked += 1
    if not checked:
        fail("no dashboard query prices the exporter's requests (aws_cost_api_requests_total * 0.01)")


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


# --- step 4: the chart's values, the README's commands, the image reference -------------------


def load_docs(path):
    return [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]


def only(docs, kind, where):
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        fail(f"{where}: expected one {kind}, found {len(found)}")
    return found[0]


def check(what, ok):
    if not ok:
        fail(what)


def exporter_container(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "exporter")


def cmd_chart_values(args):
    """Every value of ci/full-values.yaml that the chart's later additions read lands where it
    should in the rendered manifests."""
    docs = load_docs(args.manifests)
    values = yaml.safe_load(open(args.values, encoding="utf-8"))
    deployment = only(docs, "Deployment", args.manifests)
    pod = deployment["spec"]["template"]
    container = exporter_container(deployment)
    service = only(docs, "Service", args.manifests)
    fullname = deployment["metadata"]["name"]
    namespace = deployment["metadata"]["namespace"]

    # commonLabels: on every object, the pod template included, never on selectors.
    for d in docs + [pod]:
        labels = d["metadata"].get("labels", {})
        for k, v in values["commonLabels"].items():
            check_equal(f"commonLabels {k} on {d.get('kind', 'pod template')}/{d['metadata'].get('name', '')}", labels.get(k), v)
    for k in values["commonLabels"]:
        check(f"commonLabels {k} must not be in the Deployment's selector", k not in deployment["spec"]["selector"]["matchLabels"])
        check(f"commonLabels {k} must not be in the Service's selector", k not in service["spec"]["selector"])
    say(f"  commonLabels on all {len(docs)} objects and the pod template, not on selectors")

    # extraArgs after the chart's own flags; extraEnv, extraEnvFrom; extra volumes and mounts.
    check_equal("the container's last args (extraArgs)", container["args"][-len(values["extraArgs"]):], values["extraArgs"])
    for e in values["extraEnv"]:
        check(f"extraEnv {e} in the container's env", e in container.get("env", []))
    check_equal("envFrom (credentials.existingSecret, then extraEnvFrom)", container["envFrom"],
                [{"secretRef": {"name": values["credentials"]["existingSecret"]}}] + values["extraEnvFrom"])
    for v in values["extraVolumes"]:
        check(f"extraVolumes {v['name']} in the pod's volumes", v in pod["spec"]["volumes"])
    for m in values["extraVolumeMounts"]:
        check(f"extraVolumeMounts {m['name']} in the container's volumeMounts", m in container["volumeMounts"])
    check_equal("podAnnotations (and no checksum of the configuration)", pod["metadata"].get("annotations"), values["podAnnotations"])
    check_equal("topologySpreadConstraints", pod["spec"].get("topologySpreadConstraints"), values["topologySpreadConstraints"])
    say("  extraArgs, extraEnv, extraEnvFrom, extraVolumes, extraVolumeMounts, podAnnotations (no checksum), topologySpreadConstraints in the Deployment")

    # storage on the PersistentVolumeClaim the chart creates.
    pvc_values = values["storage"]["persistentVolumeClaim"]
    pvc = only(docs, "PersistentVolumeClaim", args.manifests)
    check_equal("PVC name", pvc["metadata"]["name"], f"{fullname}-storage")
    check_equal("PVC size", pvc["spec"]["resources"]["requests"]["storage"], pvc_values["size"])
    check_equal("PVC storageClassName", pvc["spec"].get("storageClassName"), pvc_values["storageClassName"])
    check_equal("PVC accessModes", pvc["spec"]["accessModes"], pvc_values.get("accessModes", ["ReadWriteOnce"]))
    for k, v in pvc_values["annotations"].items():
        check_equal(f"PVC annotation {k}", pvc["metadata"].get("annotations", {}).get(k), v)
    storage = next(v for v in pod["spec"]["volumes"] if v["name"] == "storage")
    check_equal("the storage volume", storage, {"name": "storage", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}})
    mount = next(m for m in container["volumeMounts"] if m["name"] == "storage")
    check(f"--storage.path={mount['mountPath']} in the args", f"--storage.path={mount['mountPath']}" in container["args"])
    say(f"  storage: PersistentVolumeClaim {pvc['metadata']['name']} ({pvc_values['size']}, {pvc_values['storageClassName']}) mounted at --storage.path")

    # ServiceMonitor: namespace, jobLabel, relabelings, metricRelabelings.
    sm_values = values["serviceMonitor"]
    sm = only(docs, "ServiceMonitor", args.manifests)
    check_equal("ServiceMonitor namespace", sm["metadata"]["namespace"], sm_values["namespace"])
    check_equal("ServiceMonitor namespaceSelector (the Service's namespace)", sm["spec"]["namespaceSelector"], {"matchNames": [namespace]})
    check_equal("ServiceMonitor jobLabel", sm["spec"].get("jobLabel"), sm_values["jobLabel"])
    job = service["metadata"]["labels"].get(sm_values["jobLabel"])
    check(f"the Service has the jobLabel {sm_values['jobLabel']} and its value keeps aws-cost-exporter (AwsCostExporterDown): {job!r}",
          job is not None and "aws-cost-exporter" in job)
    endpoint = sm["spec"]["endpoints"][0]
    check_equal("ServiceMonitor relabelings", endpoint.get("relabelings"), sm_values["relabelings"])
    check_equal("ServiceMonitor metricRelabelings", endpoint.get("metricRelabelings"), sm_values["metricRelabelings"])
    say(f"  ServiceMonitor in {sm_values['namespace']} (selecting the Service in {namespace}), jobLabel {sm_values['jobLabel']} (job={job}), relabelings, metricRelabelings")

    # NetworkPolicy: the exporter's pods, its port only, from the selected peers and helm test's pod.
    np_values = values["networkPolicy"]
    np = only(docs, "NetworkPolicy", args.manifests)
    check_equal("NetworkPolicy podSelector", np["spec"]["podSelector"], {"matchLabels": deployment["spec"]["selector"]["matchLabels"]})
    check_equal("NetworkPolicy policyTypes", np["spec"]["policyTypes"], ["Ingress"])
    check_equal("NetworkPolicy ingress rules", len(np["spec"]["ingress"]), 1)
    rule = np["spec"]["ingress"][0]
    check_equal("NetworkPolicy ports", rule["ports"], [{"port": "http", "protocol": "TCP"}])
    check("the container port the NetworkPolicy names (http) is 10067",
          {"name": "http", "containerPort": 10067, "protocol": "TCP"} in container["ports"])
    peers = rule["from"]
    check_equal("NetworkPolicy first peer (namespaceSelector and podSelector together)", peers[0],
                {"namespaceSelector": np_values["namespaceSelector"], "podSelector": np_values["podSelector"]})
    test_pod = only([d for d in docs if d["kind"] == "Pod"], "Pod", args.manifests)
    test_labels = test_pod["metadata"]["labels"]
    check("NetworkPolicy lets helm test's pod in", any(
        set(p) == {"podSelector"} and all(test_labels.get(k) == v for k, v in p["podSelector"]["matchLabels"].items())
        for p in peers))
    check("helm test's pod is not selected by the Service",
          not all(test_labels.get(k) == v for k, v in service["spec"]["selector"].items()))
    for p in np_values["extraFrom"]:
        check(f"NetworkPolicy extraFrom {p}", p in peers)
    say("  NetworkPolicy: the exporter's pod, port http (10067) only, from namespaceSelector+podSelector, extraFrom and helm test's pod")

    # helm test: the Service's /-/ready, over HTTPS with webConfig.tls, with basic auth.
    t_values = values["tests"]
    check_equal("helm test pod hook", test_pod["metadata"]["annotations"].get("helm.sh/hook"), "test")
    tc = test_pod["spec"]["containers"][0]
    check_equal("helm test image", tc["image"], f"{t_values['image']['repository']}@{t_values['image']['digest']}")
    scheme = "https" if values["webConfig"]["tls"] else "http"
    url = f"{scheme}://{service['metadata']['name']}.{namespace}.svc:{service['spec']['ports'][0]['port']}/-/ready"
    check_equal("helm test URL", tc["args"][-1], url)
    check("helm test --insecure with webConfig.tls", "--insecure" in tc["args"])
    check("helm test --user with tests.basicAuthSecret", "--user" in tc["args"])
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in tc["env"]}
    check_equal("helm test credentials Secret", refs, {t_values["basicAuthSecret"]})
    say(f"  helm test pod: {tc['image']} asks {url} with basic auth from {t_values['basicAuthSecret']}")


def cmd_chart_defaults(args):
    """The chart's defaults (ci/config-values.yaml): storage on an emptyDir, no configuration
    checksum on the pod (the exporter reloads the mounted file), the ConfigMap mounted as a
    directory (a subPath mount never sees updates), helm test over HTTP, no NetworkPolicy."""
    docs = load_docs(args.manifests)
    deployment = only(docs, "Deployment", args.manifests)
    pod = deployment["spec"]["template"]
    container = exporter_container(deployment)
    check("no checksum annotation on the pod", not any(k.startswith("checksum/") for k in (pod["metadata"].get("annotations") or {})))
    storage = next((v for v in pod["spec"].get("volumes", []) if v["name"] == "storage"), None)
    check_equal("the default storage volume", storage, {"name": "storage", "emptyDir": {"sizeLimit": "256Mi"}})
    check("--storage.path=/var/lib/aws-cost-exporter by default", "--storage.path=/var/lib/aws-cost-exporter" in container["args"])
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    check("the ConfigMap is mounted as a directory, without subPath", "subPath" not in config_mount)
    check("the config file is in the ConfigMap's directory",
          f"--config.file={config_mount['mountPath']}/aws-cost-exporter.yaml" in container["args"])
    check("no NetworkPolicy, PersistentVolumeClaim or PodDisruptionBudget by default",
          not [d for d in docs if d["kind"] in ("NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget")])
    check_equal("replicas by default", deployment["spec"]["replicas"], 1)
    check_equal("the update strategy with local storage", deployment["spec"]["strategy"], {"type": "Recreate"})
    check("no topologySpreadConstraints with one replica", "topologySpreadConstraints" not in pod["spec"])
    check("no replica id or S3 flag without storage.s3",
          not [a for a in container["args"] if a.startswith(("--storage.replica-id", "--storage.lease", "--storage.poll", "--storage.path=s3:"))])
    test_pod = only([d for d in docs if d["kind"] == "Pod"], "Pod", args.manifests)
    check("helm test over HTTP by default", test_pod["spec"]["containers"][0]["args"][-1].startswith("http://"))
    say("  defaults: one replica (Recreate), storage on an emptyDir at --storage.path, no checksum/config, the ConfigMap mounted as a directory, helm test over HTTP, no PodDisruptionBudget or topology spread")


def notes_of(install_output):
    """The NOTES of `helm install --dry-run` output."""
    marker = "\nNOTES:\n"
    check("helm install printed NOTES", marker in install_output)
    return install_output.split(marker, 1)[1]


def cmd_chart_ha(args):
    """ci/ha-values.yaml: the HA setup. Its replicas, S3 storage flags (no emptyDir, no claim,
    though one is asked for), the pod name as replica id, region and endpoint as the SDK's
    environment, RollingUpdate, the PodDisruptionBudget and the default topology spread over
    nodes and zones, all selecting the Deployment's pods; the notes print deploy/aws's IAM
    policy with the release's bucket and prefix."""
    docs = load_docs(args.manifests)
    values = yaml.safe_load(open(args.values, encoding="utf-8"))
    s3 = values["storage"]["s3"]
    prefix = s3.get("prefix", "aws-cost-exporter")
    deployment = only(docs, "Deployment", args.manifests)
    pod = deployment["spec"]["template"]
    container = exporter_container(deployment)
    selector = deployment["spec"]["selector"]["matchLabels"]
    check(f"the Deployment's selector {selector} selects its pods",
          all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items()))

    check_equal("replicas", deployment["spec"]["replicas"], values["replicaCount"])
    check_equal("the update strategy with S3 storage", deployment["spec"]["strategy"],
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    storage_args = [a for a in container["args"] if a.startswith("--storage.")]
    check_equal("the storage flags", storage_args, [
        f"--storage.path=s3://{s3['bucket']}/{prefix}",
        "--storage.replica-id=$(POD_NAME)",
        f"--storage.lease-duration={values['storage']['leaseDuration']}",
        f"--storage.poll-interval={values['storage']['pollInterval']}",
    ])
    env = {e["name"]: e for e in container.get("env", [])}
    check_equal("POD_NAME from the downward API", env.get("POD_NAME"),
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    check_equal("AWS_REGION", env.get("AWS_REGION", {}).get("value"), s3["region"])
    check_equal("AWS_ENDPOINT_URL_S3", env.get("AWS_ENDPOINT_URL_S3", {}).get("value"), s3["endpoint"])
    check("no PersistentVolumeClaim with S3 storage (though persistentVolumeClaim.create is true)",
          not [d for d in docs if d["kind"] == "PersistentVolumeClaim"])
    check("no storage volume with S3 storage", not [v for v in pod["spec"].get("volumes", []) if v["name"] == "storage"])
    check("no storage mount with S3 storage", not [m for m in container.get("volumeMounts", []) if m["name"] == "storage"])
    say(f"  ha: {values['replicaCount']} replicas, RollingUpdate, --storage.path=s3://{s3['bucket']}/{prefix} with the pod name as replica id, AWS_REGION and AWS_ENDPOINT_URL_S3; no emptyDir, no claim")

    pdb = only(docs, "PodDisruptionBudget", args.manifests)
    check_equal("PodDisruptionBudget apiVersion", pdb["apiVersion"], "policy/v1")
    check_equal("PodDisruptionBudget spec", pdb["spec"], {"minAvailable": 1, "selector": {"matchLabels": selector}})
    spread = pod["spec"].get("topologySpreadConstraints")
    check_equal("the default topology spread", spread, [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")])
    say("  ha: PodDisruptionBudget (policy/v1, minAvailable 1) and topology spread over kubernetes.io/hostname and topology.kubernetes.io/zone (ScheduleAnyway), selecting the Deployment's pods")

    notes = notes_of(open(args.install, encoding="utf-8").read())
    start, end = notes.index("\n{\n"), notes.index("\n}\n")
    printed = json.loads(notes[start:end + 2])
    policy = json.load(open(args.policy, encoding="utf-8"))
    # deploy/aws's example names the bucket and prefix ci/ha-values.yaml uses.
    check_equal("the IAM policy in the notes against deploy/aws/iam-policy-s3-storage.json", printed, policy)
    statements = {s["Sid"]: s for s in policy["Statement"]}
    check_equal("the policy's object actions", sorted(statements["AwsCostExporterStorageObjects"]["Action"]),
                ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"])
    check_equal("the policy's object resource", statements["AwsCostExporterStorageObjects"]["Resource"],
                f"arn:aws:s3:::{s3['bucket']}/{prefix}/*")
    check_equal("the policy's list statement", {k: v for k, v in statements["AwsCostExporterStorageList"].items() if k != "Sid"},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{s3['bucket']}",
                 "Condition": {"StringLike": {"s3:prefix": f"{prefix}/*"}}})
    check(f"the notes name s3://{s3['bucket']}/{prefix}", f"s3://{s3['bucket']}/{prefix}" in notes)
    say(f"  ha: the notes print deploy/aws/iam-policy-s3-storage.json for {s3['bucket']}/{prefix}")


def cmd_chart_spread(args):
    """Topology spread and the PodDisruptionBudget outside ci/ha-values.yaml's defaults:
    constraints from the values replace the default spread; podDisruptionBudget.enabled false
    makes none; with one replica and S3, RollingUpdate but no budget and no default spread."""
    custom = load_docs(args.custom)
    deployment = only(custom, "Deployment", args.custom)
    check_equal("topologySpreadConstraints from the values replace the default spread",
                deployment["spec"]["template"]["spec"].get("topologySpreadConstraints"), json.loads(args.constraints))
    check("podDisruptionBudget.enabled false: no PodDisruptionBudget",
          not [d for d in custom if d["kind"] == "PodDisruptionBudget"])
    single = load_docs(args.single)
    deployment = only(single, "Deployment", args.single)
    check_equal("one replica with S3: replicas", deployment["spec"]["replicas"], 1)
    check_equal("one replica with S3: RollingUpdate", deployment["spec"]["strategy"]["type"], "RollingUpdate")
    check("one replica with S3: no topology spread", "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"])
    check("one replica with S3: no PodDisruptionBudget or PersistentVolumeClaim",
          not [d for d in single if d["kind"] in ("PodDisruptionBudget", "PersistentVolumeClaim")])
    say("  topologySpreadConstraints replace the default spread; podDisruptionBudget.enabled=false makes none; one replica with S3: RollingUpdate, no budget, no spread, no claim")


def cmd_kustomize_ha(args):
    """components/ha on the base (with another component before it, and the overlay's bucket):
    two replicas, RollingUpdate, the S3 flags in place of the emptyDir's, the pod name as
    replica id, the PodDisruptionBudget and topology spread selecting the Deployment's pods."""
    docs = load_docs(args.manifests)
    deployment = only(docs, "Deployment", args.manifests)
    pod = deployment["spec"]["template"]
    container = exporter_container(deployment)
    selector = deployment["spec"]["selector"]["matchLabels"]
    check_equal("replicas", deployment["spec"]["replicas"], 2)
    check_equal("the update strategy", deployment["spec"]["strategy"],
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    check_equal("the storage flags", [a for a in container["args"] if a.startswith("--storage.")], [
        f"--storage.path={args.storage_path}", "--storage.replica-id=$(POD_NAME)",
        "--storage.lease-duration=2m", "--storage.poll-interval=10s"])
    check_equal("POD_NAME from the downward API", [e for e in container.get("env", []) if e["name"] == "POD_NAME"],
                [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    check("no storage volume", not [v for v in pod["spec"]["volumes"] if v["name"] == "storage"])
    check("no storage mount", not [m for m in container["volumeMounts"] if m["name"] == "storage"])
    pdb = only(docs, "PodDisruptionBudget", args.manifests)
    check_equal("PodDisruptionBudget spec", pdb["spec"], {"minAvailable": 1, "selector": {"matchLabels": selector}})
    check_equal("PodDisruptionBudget namespace", pdb["metadata"].get("namespace"), deployment["metadata"].get("namespace"))
    check_equal("the topology spread", pod["spec"].get("topologySpreadConstraints"), [
        {"labelSelector": {"matchLabels": selector}, "maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway"}
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")])
    say(f"  kustomize ha: 2 replicas, RollingUpdate, --storage.path={args.storage_path} (the overlay's) with the pod name as replica id, no emptyDir; PodDisruptionBudget and topology spread on the Deployment's pods")


def readme_section(text, heading):
    """The text under a Markdown heading (exactly as written, e.g. "### Helm"), up to the next
    heading of the same level or above."""
    level = heading.split(" ")[0]
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        fail(f"README has no heading {heading!r}")
    out = []
    in_code = False
    for line in lines[start + 1:]:
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"#{1,%d} " % len(level), line):
            break
        out.append(line)
    return "\n".join(out)


def code_blocks(section, lang):
    return [textwrap.dedent(m.group(1)) for m in re.finditer(r"^ *```%s\n(.*?)^ *```" % lang, section, re.S | re.M)]


def helm_installs(section):
    """Every `helm install` command in the section's sh blocks, as argv lists."""
    commands = []
    for block in code_blocks(section, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:2] == ["helm", "install"]:
                commands.append(argv)
    return commands


def cmd_chart_readme(args):
    """The README's `helm install` commands (Quick start and Helm), rendered as written with the
    README's my-values.yaml, make the ServiceAccount the IAM trust policy names, annotated with
    the role the README names; the install's notes print that subject."""
    readme = open(args.readme, encoding="utf-8").read()
    helm_section = readme_section(readme, "### Helm")
    iam = readme_section(readme, "### IAM")
    subjects = set(re.findall(r'"(system:serviceaccount:[^"]+)"', iam))
    check_equal("trust-policy subjects in README's IAM", len(subjects), 1)
    subject = subjects.pop()
    values_blocks = [b for b in code_blocks(helm_section, "yaml") if b.startswith("config:")]
    check_equal("my-values.yaml blocks (starting with config:) in README's Helm", len(values_blocks), 1)
    values_file = f"{args.work}/readme-my-values.yaml"
    with open(values_file, "w", encoding="utf-8") as f:
        f.write(values_blocks[0])
    role = yaml.safe_load(values_blocks[0])["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    check(f"README's IAM names the role {role} of my-values.yaml", role in iam)
    chart_name = yaml.safe_load(open(f"{args.chart}/Chart.yaml", encoding="utf-8"))["name"]
    commands = helm_installs(readme_section(readme, "## Quick start on AWS")) + helm_installs(helm_section)
    check("README has helm install commands in Quick start and Helm", len(commands) >= 2)
    for n, argv in enumerate(commands):
        release, chart, rest = argv[2], argv[3], argv[4:]
        check(f"{' '.join(argv)}: the chart is deploy/helm/{chart_name} or oci://.../{chart_name}",
              chart == f"deploy/helm/{chart_name}" or (chart.startswith("oci://") and chart.endswith(f"/{chart_name}")))
        opts, namespace, has_values, i = [], "default", False, 0
        while i < len(rest):
            a = rest[i]
            if a in ("--namespace", "-n"):
                namespace = rest[i + 1]; i += 2
            elif a in ("-f", "--values"):
                check_equal(f"{' '.join(argv)}: values file", rest[i + 1], "my-values.yaml")
                has_values = True; i += 2
            elif a == "--version":
                i += 2
            elif a in ("--set", "--set-string"):
                opts += [a, rest[i + 1]]; i += 2
            else:
                fail(f"{' '.join(argv)}: the test does not know the option {a}")
        check(f"{' '.join(argv)}: -f my-values.yaml", has_values)
        common = [release, args.chart, "--namespace", namespace, "-f", values_file] + opts
        out = f"{args.work}/readme-install-{n}.yaml"
        with open(out, "w", encoding="utf-8") as f:
            subprocess.run([args.helm, "template"] + common, check=True, stdout=f, stderr=subprocess.DEVNULL)
        sa = only(load_docs(out), "ServiceAccount", out)
        rendered = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
        check_equal(f"`{' '.join(argv)}`: the rendered ServiceAccount against README's IAM trust policy", rendered, subject)
        check_equal(f"`{' '.join(argv)}`: the ServiceAccount's role", sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn"), role)
        deployment = only(load_docs(out), "Deployment", out)
        check_equal(f"`{' '.join(argv)}`: the Deployment's serviceAccountName", deployment["spec"]["template"]["spec"]["serviceAccountName"], sa["metadata"]["name"])
        notes = subprocess.run([args.helm, "install", "--dry-run=client"] + common, check=True,
                               capture_output=True, text=True).stdout
        check(f"`{' '.join(argv)}`: helm install's notes print the subject {subject}",
              f"IRSA trust-policy subject (README, \"IAM\"): {subject}" in notes and f"Service account: {sa['metadata']['name']}" in notes)
        say(f"  README: `{' '.join(argv)}` renders ServiceAccount {sa['metadata']['name']} in {namespace} = IAM's {subject} (and the notes say so)")


def cmd_image_refs(args):
    """The chart's default image, the kustomize base's and the README's (Helm) are one reference,
    at the chart's appVersion, also listed in Chart.yaml's artifacthub.io/images."""
    chart = yaml.safe_load(open(f"{args.chart}/Chart.yaml", encoding="utf-8"))
    helm_image = exporter_container(only(load_docs(args.helm_manifests), "Deployment", args.helm_manifests))["image"]
    kustomize_image = exporter_container(only(load_docs(args.kustomize_manifests), "Deployment", args.kustomize_manifests))["image"]
    readme = readme_section(open(args.readme, encoding="utf-8").read(), "### Helm")
    readme_images = set(re.findall(r"`((?:ghcr\.io|docker\.io|quay\.io)/[^`\s:@]*aws-cost-exporter[^`\s:@]*:[^`\s]+)`", readme))
    check_equal("image references in README's Helm section", len(readme_images), 1)
    readme_image = readme_images.pop()
    artifacthub = [i["image"] for i in yaml.safe_load(chart["annotations"]["artifacthub.io/images"]) if i["name"] == chart["name"]]
    check_equal("the chart's default image against the kustomize base's", helm_image, kustomize_image)
    check_equal("the chart's default image against README's", helm_image, readme_image)
    check_equal("the chart's default image against Chart.yaml's artifacthub.io/images", [helm_image], artifacthub)
    check_equal("the default image's tag against the chart's appVersion", helm_image.rsplit(":", 1)[1], str(chart["appVersion"]))
    say(f"  image: {helm_image} in the chart's default, the kustomize base, README (Helm) and artifacthub.io/images")


def cmd_chart_package(args):
    """The packaged chart: the rules and the dashboard as files (not symlinks), the schema, the
    test pod, Artifact Hub metadata; no ci/ values."""
    import tarfile
    with tarfile.open(args.package) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("Chart.yaml", "values.yaml", "values.schema.json", "templates/NOTES.txt",
                     "templates/tests/ready.yaml", "templates/networkpolicy.yaml", "templates/pvc.yaml",
                     "templates/poddisruptionbudget.yaml",
                     "files/aws-cost-exporter.json", "files/aws-cost-exporter.rules.yml"):
            m = members.get(f"{args.name}/{name}")
            check(f"{args.package} holds {name} as a regular file", m is not None and m.isfile() and m.size > 0)
        check(f"{args.package} holds no ci/ values", not [n for n in members if n.startswith(f"{args.name}/ci/")])
        chart = yaml.safe_load(tar.extractfile(f"{args.name}/Chart.yaml"))
    for key in ("home", "sources", "icon", "maintainers"):
        check(f"Chart.yaml has {key}", chart.get(key))
    for key in ("artifacthub.io/license", "artifacthub.io/links", "artifacthub.io/images"):
        check(f"Chart.yaml has the annotation {key}", chart.get("annotations", {}).get(key))
    for key in ("artifacthub.io/links", "artifacthub.io/images"):
        check(f"{key} is a YAML list", isinstance(yaml.safe_load(chart["annotations"][key]), list))
    say(f"  {args.package.rsplit('/', 1)[-1]}: rules and dashboard as files, schema, test pod, no ci/; home, sources, icon, maintainers, Artifact Hub annotations")


# --- step 0: the image -----------------------------------------------------------------------


def cmd_image_config(args):
    image = json.load(open(args.image, encoding="utf-8"))
    check_equal("image architecture", image["OCIv1"].get("architecture"), args.arch)
    check_equal("image os", image["OCIv1"].get("os"), "linux")
    config = image["OCIv1"]["config"]
    check_equal("image user", config.get("User"), "65534:65534")
    check_equal("image entrypoint", config.get("Entrypoint"), ["/aws-cost-exporter"])
    check_equal("image cmd", config.get("Cmd"), ["--config.file=/etc/aws-cost-exporter/aws-cost-exporter.yaml"])
    check_equal("image exposed ports", config.get("ExposedPorts"), {"10067/tcp": {}})
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    check_equal("image HOME", env.get("HOME"), "/home/exporter")
    check_equal("image SSL_CERT_FILE", env.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt")
    labels = config.get("Labels") or {}
    oci = "org.opencontainers.image."
    check_equal("image title label", labels.get(oci + "title"), "aws-cost-exporter")
    check_equal("image licence label", labels.get(oci + "licenses"), "Apache-2.0")
    check_equal("image version label", labels.get(oci + "version"), args.version)
    check_equal("image revision label", labels.get(oci + "revision"), args.revision)
    check_equal("image created label", labels.get(oci + "created"), args.created)
    try:
        datetime.datetime.strptime(args.created, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        fail(f"the created label {args.created!r} is not an RFC 3339 UTC time")
    check_equal("image source label", labels.get(oci + "source"), args.source)
    check_equal("image url label", labels.get(oci + "url"), args.url)
    check_equal("image documentation label", labels.get(oci + "documentation"), args.documentation)
    if not labels.get(oci + "description"):
        fail("the image has no org.opencontainers.image.description label")
    layers = image["OCIv1"]["rootfs"]["diff_ids"]
    check_equal("image layers (scratch, then one root filesystem)", len(layers), 1)
    say(f"  image config ({args.arch}): linux/{args.arch}, user 65534:65534, entrypoint /aws-cost-exporter, "
        f"port 10067, HOME and SSL_CERT_FILE, OCI labels (version {args.version}, revision, created "
        f"{args.created}, source, url {args.url}, documentation, Apache-2.0); one layer on scratch")


def cmd_manifest(args):
    """The manifest list holds exactly the images given, each with its platform."""
    listed = json.load(open(args.manifest, encoding="utf-8"))
    entries = listed.get("manifests") or []
    want = {}
    for pair in args.images:
        arch, path = pair.split("=", 1)
        want[arch] = json.load(open(path, encoding="utf-8"))
    check_equal("manifest list entries", len(entries), len(want))
    seen = {}
    for entry in entries:
        platform = entry.get("platform") or {}
        arch = platform.get("architecture")
        check_equal(f"manifest list entry {entry.get('digest')} os", platform.get("os"), "linux")
        if arch not in want:
            fail(f"manifest list entry for {arch!r}, expected {sorted(want)}")
        if arch in seen:
            fail(f"two manifest list entries for {arch}")
        image = want[arch]
        check_equal(f"manifest list entry {arch}: the image's architecture", image["OCIv1"].get("architecture"), arch)
        check_equal(f"manifest list entry {arch}: the image's manifest digest", entry.get("digest"),
                    image.get("FromImageDigest"))
        seen[arch] = entry["digest"]
    say("  manifest list: " + ", ".join(f"linux/{a} {d[:19]}" for a, d in sorted(seen.items()))
        + " (each the digest of the image built for it, whose config says that architecture)")


ELF_MACHINES = {"amd64": 62, "arm64": 183}


def cmd_elf(args):
    """A 64-bit little-endian ELF executable for ARCH, static: no program interpreter and no
    shared library needed (static-pie has a dynamic section, for its own relocations only)."""
    import struct
    data = open(args.binary, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        fail(f"{args.binary} is not a 64-bit little-endian ELF")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    check_equal(f"{args.binary}: ELF machine", e_machine, ELF_MACHINES[args.arch])
    if e_type not in (2, 3):
        fail(f"{args.binary}: ELF type {e_type}, not an executable")
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    needed = 0
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 3:
            fail(f"{args.binary} has a program interpreter: it is dynamically linked")
        if p_type == 2:
            for j in range(0, p_filesz, 16):
                tag, = struct.unpack_from("<q", data, p_offset + j)
                if tag == 0:
                    break
                needed += tag == 1
    check_equal(f"{args.binary}: shared libraries needed (DT_NEEDED)", needed, 0)
    say(f"  {args.binary}: static ELF for {args.arch} (machine {e_machine}, no interpreter, no DT_NEEDED)")


def cmd_dockerfile_builder(args):
    """The Dockerfile's builder stage runs on the build platform and does what CI does on its
    host: deploy/container/toolchain.sh for the target architecture, then build.sh into /out,
    from which the final stage copies; .ci/run runs the same scripts for both architectures.
    CI cannot pull the stage's base image, so it builds the final stage from its own binaries
    (--build-context builder=...): this keeps the two paths the same commands."""
    lines = open(args.dockerfile, encoding="utf-8").read().replace("\\\n", " ").splitlines()
    stages, stage = {}, None
    for line in lines:
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        word = line.split(" ", 1)[0].upper()
        if word == "FROM":
            stage = line.rsplit(" ", 1)[-1] if " AS " in line.upper() else None
            stages[stage] = {"from": line, "run": [], "copy": []}
        elif word in ("RUN", "COPY") and stage:
            stages[stage][word.lower()].append(line.split(" ", 1)[1])
    builder = stages.get("builder") or fail("the Dockerfile has no builder stage")
    check_equal("builder stage FROM", builder["from"], "FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder")
    check_equal("builder stage RUN commands", builder["run"], [
        'sh deploy/container/toolchain.sh "${TARGETARCH}" && rm -rf /var/lib/apt/lists/*',
        'AWS_COST_EXPORTER_REVISION="${REVISION}" sh deploy/container/build.sh "${TARGETARCH}" /out',
    ])
    runtime = stages.get("runtime") or fail("the Dockerfile has no runtime stage")
    check_equal("runtime stage COPY", runtime["copy"], ["--from=builder /out/ /"])
    ci = open(args.ci, encoding="utf-8").read()
    for command in ("sh deploy/container/toolchain.sh amd64 arm64", "sh deploy/container/build.sh amd64",
                    "sh deploy/container/build.sh arm64"):
        if command not in ci:
            fail(f".ci/run does not run `{command}`, as the Dockerfile's builder stage does")
    say("  Dockerfile builder stage: on $BUILDPLATFORM, toolchain.sh and build.sh for $TARGETARCH into /out, "
        "the commands .ci/run runs for amd64 and arm64")


def cmd_image_command(args):
    config = json.load(open(args.image, encoding="utf-8"))["OCIv1"]["config"]
    print("\n".join(config["Entrypoint"] + config["Cmd"]))

# --- step 5: moto ---------------------------------------------------------------------------
#
# One dataset, a small organization, loaded into moto's Cost Explorer as the queue of canned
# GetCostAndUsage results it answers from (each new distinct request body takes the next
# result), in the exact order the exporter asks (src/cost_explorer.rs, `costs` and
# `discover`), paged as Cost Explorer pages. The served values are then compared with what the
# same dataset says, computed directly from its rows, not from the queue.

MOTO_MANAGEMENT = "210987654321"
MOTO_PRODUCTION = "310987654321"
MOTO_LAKE = "410987654321"
MOTO_STAGING = "510987654321"
# Account names as Cost Explorer's DimensionValueAttributes give them ("description"). Staging
# has none: the exporter then labels it with its id.
MOTO_NAMES = {
    MOTO_MANAGEMENT: "Management",
    MOTO_PRODUCTION: "Production",
    MOTO_LAKE: 'Données "Lake" \\ Analytics',
    MOTO_STAGING: "",
}
EC2 = "Amazon Elastic Compute Cloud - Compute"
S3 = "Amazon Simple Storage Service"
RDS = "Amazon Relational Database Service"
ATHENA = "Amazon Athena"
KMS = "AWS Key Management Service"
# (account, service, record type, the data day's (unblended, amortized), the rest of the
# month's (unblended, amortized)); None: no cost. When the data day is in the current month,
# the month to date is the data day plus the rest; when it is in the previous month (the 1st
# of a month), the month to date is the rest alone.
MOTO_ROWS = [
    (MOTO_MANAGEMENT, EC2, "Usage", ("412.7731904215", "367.1190055410"), ("9203.4410980057", "8120.0039122806")),
    (MOTO_MANAGEMENT, S3, "Usage", ("18.0000000001", "18.0000000001"), ("402.5519230771", "402.5519230771")),
    (MOTO_MANAGEMENT, KMS, "Usage", ("0.1", "0.1"), ("3", "3")),
    (MOTO_MANAGEMENT, "Tax", "Tax", None, ("1203.95", "1203.95")),
    (MOTO_MANAGEMENT, "AWS Support (Business)", "Support", ("12.5", "12.5"), ("287.5", "287.5")),
    (MOTO_MANAGEMENT, EC2, "Credit", ("-25.0000000000", "-25.0000000000"), ("-575", "-575")),
    (MOTO_PRODUCTION, EC2, "Usage", ("1534.2298766501", "1288.7530963861"), ("33752.8572863017", "28352.5681204874")),
    (MOTO_PRODUCTION, RDS, "Usage", ("611.0480129944", "611.0480129944"), ("13443.0562858768", "13443.0562858768")),
    (MOTO_PRODUCTION, S3, "Usage", ("97.3310000007", "97.3310000007"), ("2141.2820000154", "2141.2820000154")),
    (MOTO_PRODUCTION, "Tax", "Tax", None, ("4511.27", "4511.27")),
    (MOTO_PRODUCTION, RDS, "Credit", ("-61.1048012994", "-61.1048012994"), ("-1344.3056285877", "-1344.3056285877")),
    (MOTO_LAKE, ATHENA, "Usage", ("75.5", "75.5"), ("1661.0000000009", "1661.0000000009")),
    (MOTO_LAKE, S3, "Usage", ("230.1234567891", "230.1234567891"), ("5062.7160493602", "5062.7160493602")),
    (MOTO_LAKE, "Tax", "Tax", None, ("394.02", "394.02")),
    (MOTO_STAGING, EC2, "Usage", ("3.2E-9", "3.2E-9"), ("88.4500000007", "71.3100000007")),
    (MOTO_STAGING, EC2, "Credit", ("-3.2E-9", "-3.2E-9"), ("-88.4500000007", "-71.3100000007")),
]
MOTO_BASES = [("unblended", "UnblendedCost"), ("amortized", "AmortizedCost")]
# Groups per page (Cost Explorer counts them across all of a result's periods): small, so that
# discovery and the split queries page, and the exporter's interleaving of the account pages
# with the record-type query is exercised.
MOTO_PAGE_SIZE = 3
# The two identities: static keys (unknown to moto, which files them under its default
# account 123456789012) assuming the management account's role with an external id; and, in
# the image, IRSA-style web identity for a role in the Production account, which sees only its
# own cost. moto's Cost Explorer keeps one queue per account, the account of the key that signs.
MOTO_MODES = {
    "assume-role": {
        "integration": "moto",
        "account": MOTO_MANAGEMENT,
        "role_arn": f"arn:aws:iam::{MOTO_MANAGEMENT}:role/CostExporter",
        "external_id": "moto-e2e-external-id",
        "access_key_id": "AKIAMOTOE2E01EXAMPLE",
        "secret_access_key": "moto-e2e-static-secret-not-real",
        "session_name": "aws-cost-exporter-moto",
    },
    "web-identity": {
        "integration": "irsa",
        "account": MOTO_PRODUCTION,
        "role_arn": f"arn:aws:iam::{MOTO_PRODUCTION}:role/aws-cost-exporter-irsa",
    },
}
DIMENSIONS = ("LINKED_ACCOUNT", "SERVICE", "RECORD_TYPE")
# Dimension::others: the two group keys of a query that filters on the first.
OTHERS = {
    "LINKED_ACCOUNT": ("SERVICE", "RECORD_TYPE"),
    "SERVICE": ("LINKED_ACCOUNT", "RECORD_TYPE"),
    "RECORD_TYPE": ("LINKED_ACCOUNT", "SERVICE"),
}


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


class MotoDates:
    """The dates of a refresh on `today` with `delay` days of data delay (cost_explorer::Period)."""

    def __init__(self, today, delay):
        self.today = today
        self.data_day = today - datetime.timedelta(days=delay)
        self.month_start = today.replace(day=1)
        self.end = today + datetime.timedelta(days=1)
        self.data_day_end = self.data_day + datetime.timedelta(days=1)
        self.query_start = min(self.month_start, self.data_day)


def moto_view(account):
    """The rows an account's Cost Explorer shows: a management account sees its organization's,
    a member its own."""
    return [r for r in MOTO_ROWS if account == MOTO_MANAGEMENT or r[0] == account]


def moto_tables(account, dates):
    """(account, service, record type) -> [Decimal per basis], for the data day and the month
    to date."""
    day, month = {}, {}
    in_month = dates.data_day >= dates.month_start
    for acct, service, record_type, on_day, rest in moto_view(account):
        key = (acct, service, record_type)
        if on_day is not None:
            day[key] = [Decimal(a) for a in on_day]
        amounts = [Decimal(a) for a in rest] if rest is not None else None
        if on_day is not None and in_month:
            amounts = [a + b for a, b in zip(amounts or [Decimal(0)] * len(MOTO_BASES), day[key])]
        if amounts is not None:
            month[key] = amounts
    return day, month


def moto_metrics(amounts):
    return {metric: {"Amount": str(a), "Unit": "USD"} for (_, metric), a in zip(MOTO_BASES, amounts)}


def moto_pages(query_id, request, periods, group_keys, account_names):
    """One query's pages as (request body, GetCostAndUsage result): `periods` is [(start, end,
    estimated, [(keys, amounts)])]; groups are cut into pages of MOTO_PAGE_SIZE counted across
    periods, every page listing every period."""
    flat = [(i, keys, amounts) for i, (_, _, _, groups) in enumerate(periods) for keys, amounts in groups]
    chunks = [flat[i:i + MOTO_PAGE_SIZE] for i in range(0, len(flat), MOTO_PAGE_SIZE)] or [[]]
    pages = []
    for n, chunk in enumerate(chunks):
        result = {
            "GroupDefinitions": [{"Type": "DIMENSION", "Key": k} for k in group_keys],
            "ResultsByTime": [{
                "TimePeriod": {"Start": str(start), "End": str(end)},
                "Total": {},
                "Groups": [{"Keys": list(keys), "Metrics": moto_metrics(amounts)}
                           for i, keys, amounts in chunk if i == p],
                "Estimated": estimated,
            } for p, (start, end, estimated, _) in enumerate(periods)],
            "DimensionValueAttributes": [],
        }
        if "LINKED_ACCOUNT" in group_keys:
            position = group_keys.index("LINKED_ACCOUNT")
            seen = sorted({keys[position] for _, keys, _ in chunk})
            result["DimensionValueAttributes"] = [
                {"Value": a, "Attributes": {"description": account_names[a]}} for a in seen]
        body = dict(request)
        if n > 0:
            body["NextPageToken"] = f"moto-e2e-{query_id}-page-{n + 1}"
        if n + 1 < len(chunks):
            result["NextPageToken"] = f"moto-e2e-{query_id}-page-{n + 2}"
        pages.append({"request": body, "result": result,
                      "first_keys": sorted({keys[0] for _, keys, _ in chunk}),
                      "keys": [tuple(keys) for _, keys, _ in chunk]})
    return pages


def moto_request(granularity, start, end, group_keys, filter_=None):
    """The GetCostAndUsage request body the exporter's SDK sends."""
    body = {
        "TimePeriod": {"Start": str(start), "End": str(end)},
        "Granularity": granularity,
        "Metrics": [metric for _, metric in MOTO_BASES],
        "GroupBy": [{"Type": "DIMENSION", "Key": k} for k in group_keys],
    }
    if filter_:
        body["Filter"] = {"Dimensions": {"Key": filter_[0], "Values": list(filter_[1])}}
    return body


def moto_plan(account, dates):
    """The exporter's requests for a refresh of `account`'s Cost Explorer, in order, each with
    the result moto is to answer: CostExplorer::costs and ::discover, step for step."""
    day, month = moto_tables(account, dates)
    names = {a: MOTO_NAMES[a] for a, _, _ in list(day) + list(month)}
    index = {d: i for i, d in enumerate(DIMENSIONS)}

    def discovery(dimensions):
        # MONTHLY over [min(month start, data day), tomorrow): one result per month touched. In
        # the dataset only the data day has cost before the month.
        def grouped(table):
            totals = {}
            for key, amounts in table.items():
                value = tuple(key[index[d]] for d in dimensions)
                totals[value] = [a + b for a, b in zip(totals.get(value, [Decimal(0)] * len(amounts)), amounts)]
            return sorted(totals.items())
        periods = []
        if dates.data_day < dates.month_start:
            periods.append((dates.data_day, dates.month_start, False, grouped(day)))
        periods.append((dates.month_start, dates.end, True, grouped(month)))
        request = moto_request("MONTHLY", dates.query_start, dates.end, list(dimensions))
        return moto_pages(f"discover-{'-'.join(dimensions)}", request, periods, list(dimensions), names)

    steps = []
    account_pages = discovery(("LINKED_ACCOUNT",))
    steps.append(account_pages[0])
    accounts = set(account_pages[0]["first_keys"])
    fetched = 1
    single = {}
    if len(account_pages) > 1 or len(accounts) > 1:
        services = {}
        for page in discovery(("RECORD_TYPE", "SERVICE")):
            steps.append(page)
            for record_type, service in page["keys"]:
                services.setdefault(record_type, set()).add(service)
        # Record types of a single service share one query per period (two or more of them).
        single = {r: next(iter(s)) for r, s in services.items() if len(s) == 1}
        if len(single) < 2:
            single = {}
        queries = len(services) - len(single) + (1 if single else 0)
        while fetched < len(account_pages) and len(accounts) <= queries:
            steps.append(account_pages[fetched])
            accounts.update(account_pages[fetched]["first_keys"])
            fetched += 1
        if len(accounts) <= queries:
            split, values, single = "LINKED_ACCOUNT", sorted(accounts), {}
        else:
            split, values = "RECORD_TYPE", sorted(r for r in services if r not in single)
    else:
        split, values = "LINKED_ACCOUNT", sorted(accounts)

    def split_queries(name, group_keys, filter_, keep):
        for granularity, table, start, end, estimated in (
                ("MONTHLY", month, dates.month_start, dates.end, True),
                ("DAILY", day, dates.data_day, dates.data_day_end, False)):
            groups = [(tuple(key[index[k]] for k in group_keys), amounts)
                      for key, amounts in sorted(table.items()) if keep(key)]
            request = moto_request(granularity, start, end, group_keys, filter_)
            steps.extend(moto_pages(f"{name}-{granularity}", request,
                                    [(start, end, estimated, groups)], group_keys, names))

    for value in values:
        split_queries(f"{split}-{value}", list(OTHERS[split]), (split, [value]),
                      lambda key, value=value: key[index[split]] == value)
    if single:
        split_queries("RECORD_TYPE-single-service", ["LINKED_ACCOUNT", "RECORD_TYPE"],
                      ("RECORD_TYPE", sorted(single)),
                      lambda key: key[index["RECORD_TYPE"]] in single)
    return steps, split, values


def moto_delay(other_month, today):
    """data_delay_days: the default, 1 (on the 1st of a month the data day is in the previous
    month), or with `other_month` whatever puts the data day in the other month than 1 does: the
    previous month's last day, or today on the 1st. A run with both covers both cases."""
    if not other_month:
        return 1
    return today.day if today.day > 1 else 0


def cmd_moto_plan(args):
    """Loads the queue of one mode's refresh into moto and writes the exporter's configuration
    and the plan (for moto-check)."""
    mode = MOTO_MODES[args.mode]
    if args.mode == "web-identity" and not (args.token and args.env):
        fail("moto-plan web-identity needs --token and --env")
    today = datetime.date.fromisoformat(args.today) if args.today else utc_today()
    delay = moto_delay(args.other_month, today)
    dates = MotoDates(today, delay)
    steps, split, values = moto_plan(mode["account"], dates)
    results = [s["result"] for s in steps]
    request = urllib.request.Request(
        f"{args.moto}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"account_id": mode["account"], "results": results}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    if not args.dry_run:
        with urllib.request.urlopen(request, timeout=10) as response:
            check_equal("moto's answer to the queued results", response.status, 201)
    integration = {"name": mode["integration"], "account_id": mode["account"]}
    if args.mode == "assume-role":
        integration.update({
            "access_key_id": mode["access_key_id"],
            "secret_access_key": mode["secret_access_key"],
            "assumed_role_name": mode["role_arn"].rsplit("/", 1)[1],
            "external_id": mode["external_id"],
            "endpoint_url": args.moto,
            "sts_endpoint_url": args.moto,
        })
    else:
        # No keys, no role to assume: the default chain's web identity provider, which reaches
        # moto's STS through AWS_ENDPOINT_URL_STS.
        integration["endpoint_url"] = args.moto
    integration.update({"cost_basis": [b for b, _ in MOTO_BASES], "forecast": False})
    # Without change detection: this checks moto's answers to the plan's own requests, page by
    # page (tests/change_detection.rs covers the check against the simulator).
    config = {"refresh_interval": "1h", "check_interval": "off", "data_delay_days": delay,
              "integrations": [integration]}
    with open(args.config, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
    if args.mode == "web-identity":
        # What EKS gives a pod for IRSA: the role in AWS_ROLE_ARN, a projected service account
        # token in a file (moto does not verify it; its shape is a JWT's).
        claims = {"aud": ["sts.amazonaws.com"], "sub": "system:serviceaccount:monitoring:aws-cost-exporter",
                  "iss": "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"}
        token = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                         for part in ({"alg": "RS256", "kid": "moto-e2e"}, claims, "not-a-signature"))
        with open(args.token, "w", encoding="utf-8") as f:
            f.write(token)
        with open(args.env, "w", encoding="utf-8") as f:
            f.write(f"AWS_ROLE_ARN={mode['role_arn']}\n")
    plan = {"mode": args.mode, "integration": mode["integration"], "today": str(today), "delay": delay, "data_day": str(dates.data_day),
            "split": split, "values": values, "requests": [s["request"] for s in steps]}
    with open(args.plan, "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=1)
    where = "in the previous month" if dates.data_day < dates.month_start else "in this month"
    say(f"  {args.mode}: today {today}, data_delay_days {delay}: data day {dates.data_day} ({where}); "
        f"{len(results)} results queued in moto for account {mode['account']} (split on {split}: "
        f"{', '.join(values)})")


def moto_expected(account, dates, integration):
    """What the exporter must serve, straight from the dataset: metric -> {labels: value}."""
    day, month = moto_tables(account, dates)
    expected = {"aws_cost_daily_usd": {}, "aws_cost_month_to_date_usd": {}}
    for metric, table in (("aws_cost_daily_usd", day), ("aws_cost_month_to_date_usd", month)):
        for (acct, service, record_type), amounts in table.items():
            for (basis, _), amount in zip(MOTO_BASES, amounts):
                labels = {"integration": integration, "account_id": acct,
                          "account_name": MOTO_NAMES[acct] or acct, "aws_service": service,
                          "charge_type": record_type, "cost_basis": basis}
                expected[metric][frozenset(labels.items())] = float(str(amount))
    accounts = {a for a, _, _ in list(day) + list(month)}
    expected["aws_cost_account_info"] = {
        frozenset({"integration": integration, "account_id": a, "account_name": MOTO_NAMES[a] or a}.items()): 1.0
        for a in accounts}
    return expected


def header(headers, name):
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def recorded(recording):
    """moto's recording: (headers, body text) per request, in arrival order."""
    out = []
    for line in open(recording, encoding="utf-8").read().splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        out.append((entry["headers"], body))
    return out


def signer(headers):
    auth = header(headers, "Authorization") or ""
    m = re.search(r"Credential=([^/]+)/", auth)
    return m.group(1) if m else None


def cmd_moto_check(args):
    """The exporter's metrics against the dataset, exactly; its requests (moto's recording)
    against the plan; the identity moto's STS saw."""
    plan = json.load(open(args.plan, encoding="utf-8"))
    mode = MOTO_MODES[plan["mode"]]
    integration = mode["integration"]
    today = datetime.date.fromisoformat(plan["today"])
    dates = MotoDates(today, plan["delay"])
    # A refresh on another UTC date than the plan's asked other questions: nothing below would
    # hold. run.sh runs the round again (exit status 3).
    samples = scrape(args.metrics)
    if utc_today() != today:
        say(f"  the UTC date changed during the run (planned for {today}, now {utc_today()})")
        sys.exit(3)
    mine = [(n, l, v) for n, l, v in samples if l.get("integration") == integration]
    if one(samples, "aws_cost_refresh_success", integration=integration) != 1:
        fail(f"aws_cost_refresh_success{{integration=\"{integration}\"}} is 0: the refresh against moto failed (the exporter's log says why)")
    data_day = datetime.datetime.combine(dates.data_day, datetime.time(), datetime.timezone.utc).timestamp()
    check_equal("aws_cost_data_day_timestamp_seconds",
                one(samples, "aws_cost_data_day_timestamp_seconds", integration=integration), data_day)
    check_equal("aws_cost_estimated (daily)", one(samples, "aws_cost_estimated", integration=integration, period="daily"), 0.0)
    check_equal("aws_cost_estimated (month_to_date)",
                one(samples, "aws_cost_estimated", integration=integration, period="month_to_date"), 1.0)

    for metric, want in moto_expected(mode["account"], dates, integration).items():
        got = {frozenset(l.items()): v for n, l, v in mine if n == metric}
        missing = [dict(k) for k in want if k not in got]
        extra = [dict(k) for k in got if k not in want]
        wrong = [(dict(k), got[k], v) for k, v in want.items() if k in got and got[k] != v]
        if missing or extra or wrong:
            fail(f"{metric}: {len(missing)} series missing {missing[:3]}, {len(extra)} unexpected "
                 f"{extra[:3]}, {len(wrong)} with other values (labels, served, loaded) {wrong[:3]}")
        say(f"  {metric}: all {len(want)} series, labels and values, equal the dataset's exactly")

    # Requests: one billed GetCostAndUsage per planned page; AssumeRole once when assuming.
    requests = {(l["operation"], l["outcome"]): v for n, l, v in mine if n == "aws_cost_api_requests_total"}
    want_requests = {("GetCostAndUsage", "success"): float(len(plan["requests"]))}
    if plan["mode"] == "assume-role":
        want_requests[("AssumeRole", "success")] = 1.0
    check_equal("aws_cost_api_requests_total by (operation, outcome)", requests, want_requests)
    say(f"  aws_cost_api_requests_total: {', '.join(f'{o} {u} {v:.0f}' for (o, u), v in sorted(requests.items()))}")

    # What moto received, in order.
    log = recorded(args.recording)
    ce = [(h, b) for h, b in log if header(h, "X-Amz-Target") == "AWSInsightsIndexService.GetCostAndUsage"]
    for i, ((_, body), want) in enumerate(zip(ce, plan["requests"])):
        check_equal(f"GetCostAndUsage request {i + 1} of {len(plan['requests'])}", json.loads(body), want)
    check_equal("GetCostAndUsage requests received by moto", len(ce), len(plan["requests"]))
    say(f"  moto received the {len(ce)} GetCostAndUsage requests of the plan, in its order "
        f"(split on {plan['split']}: {', '.join(plan['values'])})")

    sts = [(h, urllib.parse.parse_qs(b)) for h, b in log if "Action=AssumeRole" in b]
    action = "AssumeRole" if plan["mode"] == "assume-role" else "AssumeRoleWithWebIdentity"
    check_equal("STS requests received by moto", [q.get("Action") for _, q in sts], [[action]])
    sts_headers, params = sts[0]
    check_equal(f"{action} RoleArn", params.get("RoleArn"), [mode["role_arn"]])
    if plan["mode"] == "assume-role":
        check_equal("AssumeRole ExternalId", params.get("ExternalId"), [mode["external_id"]])
        check_equal("AssumeRole RoleSessionName", params.get("RoleSessionName"), [mode["session_name"]])
        check_equal("AssumeRole signed with the static key", signer(sts_headers), mode["access_key_id"])
    else:
        token = open(args.token, encoding="utf-8").read().strip()
        check_equal("AssumeRoleWithWebIdentity WebIdentityToken", params.get("WebIdentityToken"), [token])
        check_equal("AssumeRoleWithWebIdentity signature (it takes none)", header(sts_headers, "Authorization"), None)

    # moto's STS issued one session for the role; it alone signed every Cost Explorer request.
    roles = http_json(f"{args.moto}/moto-api/data.json")["sts"]["AssumedRole"]
    check_equal("sessions moto's STS issued (role ARN)", [r["role_arn"] for r in roles], [mode["role_arn"]])
    session = roles[0]
    if plan["mode"] == "assume-role":
        check_equal("the session's external id", session["external_id"], mode["external_id"])
    signers = {signer(h) for h, _ in ce}
    check_equal("keys that signed the GetCostAndUsage requests", signers, {session["access_key_id"]})
    if any(header(h, "X-Amz-Security-Token") != session["session_token"] for h, _ in ce):
        fail("a GetCostAndUsage request did not carry the assumed session's token")
    say(f"  moto's STS: {action} of {mode['role_arn']}"
        + (f" with external id {mode['external_id']}, signed with the static key" if plan["mode"] == "assume-role"
           else " with the token file's token, unsigned")
        + f"; its session ({session['access_key_id']}, account {session['account_id']}) signed every GetCostAndUsage")


# --- step 6: high availability on moto's S3 (issue 19) ----------------------------------------
#
# Replicas of the exporter binary share records, leases and the daily count in moto's S3 (which
# implements If-None-Match: * and If-Match on PutObject, and If-None-Match on GetObject). Cost
# Explorer is the demo's simulator (--demo.simulator), reached by each replica through a
# counting proxy of its own, so that every billed request is counted at the simulator's door,
# per replica and per integration, a killed replica's included. A replica's S3 goes through a
# TCP forwarder when the scenario cuts it off: closing the forwarder leaves a closed port.

HA_BUCKET = "aws-cost-exporter-ha"
HA_S3_KEY = ("AKIAMOTOHAS30EXAMPLE", "moto-ha-s3-secret-not-real")
# The demo's static keys (examples/demo.yaml): the payer's; any other signer is the workload's
# assumed-role session.
HA_PAYER_KEY = "AKIAIOSFODNN7EXAMPLE"
# Every Cost Explorer operation is billed (src/api_budget.rs); its JSON target's prefix.
CE_TARGET = "AWSInsightsIndexService."
HA_LEASE = 2.0  # --storage.lease-duration, seconds
HA_POLL = 0.2  # --storage.poll-interval, seconds
HA_FLAGS = ["--storage.lease-duration", "2s", "--storage.poll-interval", "200ms"]
# Process slack on top of the design's bounds (a loaded 2-core machine, the SDK's connections).
HA_SLACK = 1.0


class Billing:
    """Billed Cost Explorer requests, per (replica, integration), counted on arrival."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, replica, integration):
        with self.lock:
            key = (replica, integration)
            self.counts[key] = self.counts.get(key, 0) + 1

    def total(self, replica=None, integration=None):
        with self.lock:
            return sum(n for (r, i), n in self.counts.items()
                       if replica in (None, r) and integration in (None, i))

    def by(self, index):
        out = {}
        with self.lock:
            for key, n in self.counts.items():
                out[key[index]] = out.get(key[index], 0) + n
        return out


class CostExplorerProxy:
    """An HTTP proxy on 127.0.0.1 in front of the demo's simulator for one replica: counts the
    billed requests it passes (on arrival, as the simulator does), optionally after `delay`
    seconds each (a slow Cost Explorer, so that a refresh lasts long enough to die in)."""

    def __init__(self, target, billing, replica):
        self.target = urllib.parse.urlsplit(target)
        self.billing = billing
        self.replica = replica
        self.delay = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                target = self.headers.get("X-Amz-Target") or ""
                if target.startswith(CE_TARGET):
                    auth = self.headers.get("Authorization") or ""
                    m = re.search(r"Credential=([^/]+)/", auth)
                    key = m.group(1) if m else ""
                    proxy.billing.add(proxy.replica, "payer" if key == HA_PAYER_KEY else "workload")
                    if proxy.delay:
                        time.sleep(proxy.delay)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "proxy-connection")}
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    self.send_response(response.status)
                    for k, v in response.getheaders():
                        if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    # The replica was killed with its request in flight.
                    self.close_connection = True
                finally:
                    conn.close()

            do_GET = do_POST = forward

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TcpForwarder:
    """Forwards 127.0.0.1:PORT to a target, byte for byte, until closed: then the port is
    closed and every connection through it is cut."""

    def __init__(self, target):
        url = urllib.parse.urlsplit(target)
        self.target = (url.hostname, url.port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        with self.lock:
            self.closed = True
            sockets, self.sockets = self.sockets, []
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def ha_free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cost_lines(page):
    """The cost families of a page: everything from the first cost family on (tests/ha.rs)."""
    start = page.find("# HELP aws_cost_daily_usd ")
    return None if start < 0 else page[start:]


def cost_lines_of(page, integration):
    """The sample lines of one integration's cost families, or None when it has none yet."""
    lines = cost_lines(page)
    if lines is None:
        return None
    mark = f'integration="{integration}"'
    found = [l for l in lines.splitlines() if not l.startswith("#") and mark in l]
    return "\n".join(found) if found else None


def page_samples(page):
    samples = []
    for line in page.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            fail(f"unparsable exposition line: {line!r}")
        labels = {k: unescape(v) for k, v in LABEL.findall(m.group(3) or "")}
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def sample(page, name, **labels):
    found = [v for n, l, v in page_samples(page) if n == name and all(l.get(k) == w for k, w in labels.items())]
    return found[0] if len(found) == 1 else None


class HaReplica:
    """One exporter process sharing s3://HA_BUCKET/PREFIX, its Cost Explorer through a counting
    proxy of its own, its S3 directly or through a forwarder; scraped in a loop when asked."""

    def __init__(self, ha, name, prefix, config, forward_s3=False, delay=0.0):
        self.ha = ha
        self.name = name
        self.proxy = CostExplorerProxy(ha.simulator, ha.billing, name)
        self.proxy.delay = delay
        self.forwarder = TcpForwarder(ha.moto) if forward_s3 else None
        self.port = ha_free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_ENDPOINT_URL_S3": self.forwarder.endpoint if self.forwarder else ha.moto,
            "AWS_ACCESS_KEY_ID": HA_S3_KEY[0],
            "AWS_SECRET_ACCESS_KEY": HA_S3_KEY[1],
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_COST_EXPORTER_DEMO_ENDPOINT": self.proxy.endpoint,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })
        env.pop("RUST_LOG", None)
        self.log = pathlib.Path(ha.work, f"{prefix}-{name}.log")
        self.process = subprocess.Popen(
            [ha.exporter, "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{self.port}",
             "--storage.path", f"s3://{HA_BUCKET}/{ha.run}/{prefix}", "--storage.replica-id", name,
             "--log.format", "json", *HA_FLAGS],
            env=env, stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        ha.replicas.append(self)
        self.scraper = None
        self.scrapes = 0
        self.failures = []
        self.pages = []  # (time, page) of every scrape of the loop
        self.stop_scraping = threading.Event()
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                fail(f"replica {name} exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                self.page()
                break
            except OSError:
                if time.monotonic() > deadline:
                    fail(f"replica {name} did not answer on {self.url} within 30 s")
                time.sleep(0.05)

    def page(self, timeout=5):
        with urllib.request.urlopen(self.url, timeout=timeout) as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
            return response.read().decode()

    def scrape_loop(self, every=0.05):
        """Scrapes every `every` seconds until stopped: each failure and each page is kept."""

        def loop():
            while not self.stop_scraping.is_set():
                at = time.monotonic()
                try:
                    text = self.page()
                    page_samples(text)  # every line parses
                    self.pages.append((at, text))
                except Exception as err:  # noqa: BLE001 - every failure counts
                    self.failures.append((at, repr(err)))
                self.scrapes += 1
                self.stop_scraping.wait(every)

        self.scraper = threading.Thread(target=loop, daemon=True)
        self.scraper.start()

    def end_scraping(self):
        if self.scraper:
            self.stop_scraping.set()
            self.scraper.join(10)
            self.scraper = None

    def held(self, page=None):
        page = page if page is not None else self.page()
        return {l["integration"]: v for n, l, v in page_samples(page) if n == "aws_cost_exporter_lease_held"}

    def kill(self):
        self.end_scraping()
        self.process.kill()
        self.process.wait(10)

    def stop(self):
        self.end_scraping()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.forwarder:
            self.forwarder.close()
        self.proxy.close()


class Ha:
    def __init__(self, exporter, moto, simulator, demo, work):
        self.exporter = exporter
        self.moto = moto.rstrip("/")
        self.simulator = simulator.rstrip("/")
        self.demo = demo
        self.work = pathlib.Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.billing = Billing()
        # Under a prefix of this run's own: a bucket used before holds records already.
        self.run = f"run-{int(time.time())}-{os.getpid()}"
        self.replicas = []
        self.results = {}

    def config(self, name, refresh_interval="6h", cap=None, slim=False):
        """examples/demo.yaml with `refresh_interval` and no change detection (each refresh buys
        its whole plan); `slim`: the payer alone, with a plain integration's defaults."""
        config = yaml.safe_load(open(self.demo, encoding="utf-8"))
        config["refresh_interval"] = refresh_interval
        config["check_interval"] = "off"
        if slim:
            payer = next(i for i in config["integrations"] if i["name"] == "payer")
            config["integrations"] = [{k: payer[k] for k in (
                "name", "account_id", "access_key_id", "secret_access_key", "endpoint_url")}]
        for integration in config["integrations"]:
            if cap is not None:
                integration["max_api_requests_per_day"] = cap
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def create_bucket(self):
        request = urllib.request.Request(f"{self.moto}/{HA_BUCKET}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                fail(f"creating the bucket in moto: HTTP {response.status}")

    def until(self, what, predicate, seconds=30, every=0.05):
        deadline = time.monotonic() + seconds
        while True:
            for replica in self.replicas:
                if replica.process.poll() is not None and not getattr(replica, "killed", False):
                    fail(f"replica {replica.name} exited with {replica.process.returncode} while waiting for {what}: {replica.log.read_text()[-2000:]}")
            try:
                value = predicate()
            except OSError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                fail(f"timed out after {seconds} s waiting for {what}")
            time.sleep(every)

    def stop_all(self):
        for replica in self.replicas:
            replica.stop()
        self.replicas = []

    def serving_alike(self, replicas, integrations):
        """The replicas' pages when they all serve the same cost lines with every integration."""
        pages = [r.page() for r in replicas]
        lines = [cost_lines(p) for p in pages]
        if lines[0] is None or any(l != lines[0] for l in lines):
            return None
        if not all(cost_lines_of(pages[0], i) for i in integrations):
            return None
        return pages


def ha_bill(ha, prefix, count, integrations, config):
    """`count` replicas started together on a fresh prefix: one lease per integration, the
    leases spread, the same cost lines everywhere; returns the bill per integration."""
    before = ha.billing.by(1)
    replicas = [HaReplica(ha, f"{prefix}-{i}", prefix, config) for i in range(count)]
    for r in replicas:
        r.scrape_loop()

    def settled():
        pages = ha.serving_alike(replicas, integrations)
        if not pages:
            return None
        held = [r.held(p) for r, p in zip(replicas, pages)]
        if any(sum(h.get(i, 0) for h in held) != 1 for i in integrations):
            return None
        # Spread: no replica holds more than its share.
        share = -(-len(integrations) // count)
        if any(sum(h.values()) > share for h in held):
            return None
        return pages

    pages = ha.until(f"{count} replica(s) on {prefix}: one holder per integration, spread, serving alike", settled, 60)
    # Nothing more is bought while they run on: the next refresh is hours away.
    time.sleep(HA_LEASE)
    pages2 = ha.serving_alike(replicas, integrations)
    if pages2 is None or cost_lines(pages2[0]) != cost_lines(pages[0]):
        fail(f"{prefix}: the replicas no longer serve the same cost lines")
    after = ha.billing.by(1)
    bill = {i: after.get(i, 0) - before.get(i, 0) for i in integrations}
    buyers = {i: sorted(r.name for r in replicas if ha.billing.total(r.name, i)) for i in integrations}
    for i in integrations:
        if len(buyers[i]) != 1:
            fail(f"{prefix}: {i} was bought by {buyers[i]}, not by one holder")
    for r in replicas:
        r.end_scraping()
        if r.failures:
            fail(f"{prefix}: {len(r.failures)} failed scrape(s) of {r.name}: {r.failures[:3]}")
    return bill, replicas, cost_lines(pages[0]), buyers


def check_whole(replicas, final, integrations, where):
    """No page a replica served had an integration's cost lines other than none or the final
    ones: never a half-written record."""
    for r in replicas:
        for _, page in r.pages:
            for i in integrations:
                got = cost_lines_of(page, i)
                if got is not None and got != cost_lines_of(final, i):
                    fail(f"{where}: {r.name} served a page with {i}'s cost lines other than the final ones (a partial record?)")


def ha_scenario_bill(ha, integrations):
    config = ha.config("bill")
    say("  bill: one replica alone, then two, then three on fresh prefixes (lease 2s, poll 200ms)")
    one, replicas, one_lines, _ = ha_bill(ha, "one", 1, integrations, config)
    ha.stop_all()
    if not all(one.values()):
        fail(f"one replica bought nothing: {one}")
    say(f"    1 replica: {sum(one.values())} billed requests a refresh ({one})")
    two, replicas, two_lines, buyers = ha_bill(ha, "two", 2, integrations, config)
    if two != one:
        fail(f"two replicas bought {two} a refresh, one replica {one}")
    say(f"    2 replicas: {sum(two.values())} billed requests a refresh ({two}; bought by {buyers})")
    # A third replica joins: it buys nothing, serves the same lines, holds no lease.
    third = HaReplica(ha, "two-late", "two", config)
    replicas.append(third)
    ha.until("the late third replica serving the records", lambda: cost_lines(third.page()) == two_lines, 30)
    time.sleep(HA_LEASE)
    pages = [r.page() for r in replicas]
    if any(cost_lines(p) != two_lines for p in pages):
        fail("the late third replica does not serve the same cost lines")
    if sum(third.held(pages[2]).values()) != 0 or ha.billing.total("two-late"):
        fail("the late third replica took a lease or bought something while the others held their share")
    ha.stop_all()
    three, replicas, three_lines, buyers = ha_bill(ha, "three", 3, integrations, config)
    if three != one:
        fail(f"three replicas bought {three} a refresh, one replica {one}")
    say(f"    3 replicas: {sum(three.values())} billed requests a refresh ({three}; bought by {buyers}); a late third replica on the two's prefix bought 0")
    ha.stop_all()
    ha.results.update(bill_one=sum(one.values()), bill_two=sum(two.values()), bill_three=sum(three.values()))
    return sum(one.values()), one


def ha_scenario_kill(ha, integrations, one):
    """The holder SIGKILLed in the middle of its first refresh (its Cost Explorer slowed to
    0.3 s a request): the survivor never fails a scrape, takes each lease within the lease
    duration plus one poll (and slack), buys each integration's refresh once more at most, and
    never serves a partial record; a third replica then serves the records, buying nothing."""
    config = ha.config("kill")
    say("  kill: a holder SIGKILLed in the middle of a refresh")
    a = HaReplica(ha, "kill-a", "kill", config, delay=0.3)
    ha.until("kill-a holding both leases", lambda: sum(a.held().values()) == len(integrations), 30)
    b = HaReplica(ha, "kill-b", "kill", config)
    b.scrape_loop(0.02)
    a.scrape_loop(0.02)
    # Killed in the middle of an integration's first refresh: two of its requests bought, its
    # cost lines not served yet.
    def mid_refresh():
        page = a.page()
        for i in integrations:
            if a.held(page).get(i) == 1 and ha.billing.total("kill-a", i) >= 2 and cost_lines_of(page, i) is None:
                return i, page
        return None

    mid, page = ha.until("kill-a in the middle of a refresh", mid_refresh, 30, 0.01)
    a.end_scraping()
    a.killed = True
    a.kill()
    killed = time.monotonic()
    # What it held then (it may have released a lease whose refresh had not started, to
    # balance the work once kill-b was live: a release, no takeover).
    held = sorted(i for i, v in a.held(page).items() if v == 1)
    if mid not in held:
        fail(f"kill-a's last scrape before the kill says it held {held}, not {mid}")
    time.sleep(0.3)  # a request in flight at the kill is counted on arrival
    by_a = {i: ha.billing.total("kill-a", i) for i in integrations}
    if by_a[mid] >= one[mid]:
        fail(f"kill-a had bought {by_a[mid]} of {mid}'s {one[mid]} requests: not mid-refresh")
    say(f"    killed kill-a, holding {held}, in the middle of {mid}'s refresh: {sum(by_a.values())} billed requests ({by_a}) of {sum(one.values())}")
    def all_taken():
        page = b.page()
        held_b = b.held(page)
        return all(held_b.get(i) == 1 and cost_lines_of(page, i) for i in integrations) and page

    final = ha.until("kill-b holding both leases and serving both integrations", all_taken, 30, 0.02)
    time.sleep(1)
    b.end_scraping()
    # When kill-b was first seen holding each lease, by its scrapes every 20 ms (a lease the
    # killed holder had released to balance the work may have been taken before the kill).
    taken = {}
    for at, p in b.pages:
        for i, v in b.held(p).items():
            if v == 1 and i not in taken:
                taken[i] = at - killed
    bound = HA_LEASE + HA_POLL + HA_SLACK
    took = max(taken[i] for i in held)
    others = [f"{i} {'before' if t < 0 else 'after'} the kill" for i, t in sorted(taken.items()) if i not in held]
    say(f"    kill-b took the killed holder's lease(s) {', '.join(f'{i} {taken[i]:.2f} s' for i in held)} after the kill (bound {bound:.1f} s = lease {HA_LEASE:g} s + poll {HA_POLL:g} s + {HA_SLACK:g} s slack){'; held ' + ', '.join(others) + ' (released to it to balance)' if others else ''}")
    if took > bound:
        fail(f"a lease was taken over {took:.2f} s after the kill")
    if b.failures:
        fail(f"{len(b.failures)} failed scrape(s) of the survivor: {b.failures[:3]}")
    check_whole([a, b], final, integrations, "kill")
    by_b = {i: ha.billing.total("kill-b", i) for i in integrations}
    for i in integrations:
        # The killed holder's part, and at most one whole refresh by the survivor.
        if by_b[i] > one[i]:
            fail(f"{i}: kill-b bought {by_b[i]}, one refresh is {one[i]}")
        if by_a[i] + by_b[i] < one[i]:
            fail(f"{i}: only {by_a[i] + by_b[i]} bought in all, one refresh is {one[i]}")
    say(f"    bought: {sum(by_a.values())} by the killed holder + {sum(by_b.values())} by the survivor; one refresh {sum(one.values())} (at most one refresh twice); {b.scrapes} scrapes of the survivor, 0 failed, no partial record")
    takeovers = 0
    for i in integrations:
        takeovers += sample(final, "aws_cost_exporter_lease_takeovers_total", integration=i) or 0
    if takeovers != len(held):
        fail(f"kill-b counts {takeovers} takeovers, the killed holder held {held}")
    c = HaReplica(ha, "kill-c", "kill", config)
    ha.until("kill-c serving the survivor's records", lambda: cost_lines(c.page()) == cost_lines(final), 30)
    if ha.billing.total("kill-c"):
        fail("kill-c bought something")
    ha.stop_all()
    ha.results.update(kill_takeover_s=round(took, 2), kill_failed_scrapes=len(b.failures),
                      kill_scrapes=b.scrapes, kill_bought_killed=sum(by_a.values()),
                      kill_bought_survivor=sum(by_b.values()))


def ha_scenario_cut(ha, integrations):
    """The payer's holder cut off from S3 (its forwarder closed): it stops refreshing, the other
    takes over, and it serves its last records, older and older."""
    config = ha.config("cut")
    say("  cut: the payer's holder cut off from S3 (its endpoint's port closed)")
    a = HaReplica(ha, "cut-a", "cut", config, forward_s3=True)
    b = HaReplica(ha, "cut-b", "cut", config, forward_s3=True)
    replicas = [a, b]

    def settled():
        pages = ha.serving_alike(replicas, integrations)
        if not pages:
            return None
        held = [r.held(p) for r, p in zip(replicas, pages)]
        return pages if all(sum(h.get(i, 0) for h in held) == 1 for i in integrations) else None

    pages = ha.until("one holder per integration, both serving alike", settled, 60)
    served = cost_lines(pages[0])
    holder, other = (a, b) if a.held(pages[0]).get("payer") == 1 else (b, a)
    for r in replicas:
        r.scrape_loop()
    billed = ha.billing.total()
    holder.forwarder.close()
    cut = time.monotonic()
    stopped = {}

    def moved():
        hp, op = holder.page(), other.page()
        if "at" not in stopped and holder.held(hp).get("payer") == 0:
            stopped["at"] = time.monotonic() - cut
        return op if other.held(op).get("payer") == 1 else None

    page = ha.until("the other replica holding the payer's lease", moved, 30, 0.02)
    took = time.monotonic() - cut
    bound = HA_LEASE + 2 * HA_POLL + HA_SLACK
    say(f"    {holder.name} stopped refreshing {stopped.get('at', float('nan')):.2f} s after the cut; {other.name} took the lease {took:.2f} s after (bound {bound:.1f} s)")
    if took > bound:
        fail(f"taken over {took:.2f} s after the cut")
    hp = holder.page()
    if any(v != 0 for v in holder.held(hp).values()):
        fail(f"the cut-off replica still says it holds a lease: {holder.held(hp)}")
    if "at" not in stopped or stopped["at"] > took:
        fail("the cut-off replica did not stop refreshing before the other took over")
    if sample(page, "aws_cost_exporter_lease_takeovers_total", integration="payer") != 1:
        fail("the new holder does not count one takeover")
    age = sample(hp, "aws_cost_exporter_records_age_seconds", integration="payer")
    time.sleep(HA_LEASE)
    hp2 = holder.page()
    age2 = sample(hp2, "aws_cost_exporter_records_age_seconds", integration="payer")
    other_age = sample(other.page(), "aws_cost_exporter_records_age_seconds", integration="payer")
    if age is None or age2 is None or age2 < age + HA_LEASE - 0.5 or age2 < HA_LEASE:
        fail(f"the cut-off replica's records age does not grow: {age} then {age2}")
    if other_age is None or other_age > 1:
        fail(f"the new holder's records age is {other_age}")
    if cost_lines(hp2) != served or cost_lines(other.page()) != served:
        fail("the replicas no longer serve the records they served before the cut")
    if ha.billing.total() != billed:
        fail(f"{ha.billing.total() - billed} requests bought after the cut: the next refresh is not due")
    for r in replicas:
        r.end_scraping()
        if r.failures:
            fail(f"{len(r.failures)} failed scrape(s) of {r.name}: {r.failures[:3]}")
    say(f"    {holder.name} serves its last records, their age {age:.1f} s then {age2:.1f} s; {other.name}'s {other_age:.1f} s; nothing bought again; no scrape failed")
    ha.stop_all()
    ha.results.update(cut_stop_s=stopped["at"], cut_takeover_s=took, cut_records_age_s=age2)


def ha_scenario_cap(ha, cap):
    """Three replicas, a plain payer refreshing every 2 s with max_api_requests_per_day `cap`;
    its holder SIGKILLed twice, so that the lease moves to replicas whose own counts are 0: all
    together never pass the cap, and the last holder says it is reached."""
    day = utc_today()
    config = ha.config("cap", refresh_interval="2s", cap=cap, slim=True)
    say(f"  cap: three replicas, the payer alone every 2 s, max_api_requests_per_day {cap}, its holder killed twice")
    before = ha.billing.total()
    replicas = [HaReplica(ha, f"cap-{i}", "cap", config) for i in range(3)]
    killed = []
    moves = []

    def holder():
        for r in replicas:
            if r not in killed and r.held().get("payer") == 1:
                return r
        return None

    while len(killed) < 2:
        h = ha.until("a holder of the payer's lease", holder, 30)
        start = ha.billing.total(h.name)
        # One refresh of its own (or the cap's refusal), then it dies.
        ha.until(f"{h.name} buying", lambda: ha.billing.total(h.name) > start
                 or sample(h.page(), "aws_cost_api_budget_exhausted", integration="payer") == 1, 30)
        time.sleep(0.5)
        h.killed = True
        h.kill()
        killed.append(h)
        moves.append(h.name)
    last = ha.until("the last holder", holder, 30)
    ha.until("the last holder reporting the cap reached",
                    lambda: sample(last.page(), "aws_cost_api_budget_exhausted", integration="payer") == 1, 60)
    time.sleep(4)  # two more refresh intervals: nothing more bought
    total = ha.billing.total() - before
    per = {r.name: ha.billing.total(r.name) for r in replicas}
    if day != utc_today():
        fail("the UTC date changed during the cap scenario (the count is per day): run it again")
    say(f"    bought {total} of a cap of {cap}: {per} (killed {moves}; the last holder {last.name} says the cap is reached)")
    if total > cap:
        fail(f"{total} billed requests against a shared cap of {cap}")
    if sum(1 for n in per.values() if n) < 2:
        fail(f"the lease did not move between buyers: {per}")
    ha.stop_all()
    ha.results.update(cap=cap, cap_billed=total)


def ha_terminated(*_):
    """SIGTERM (run.sh's or bench/run's cleanup): unwind, so that the replicas are stopped."""
    raise SystemExit("terminated")


def cmd_ha(args):
    """Step ha: the scenarios of issue 19's proof against moto's S3 and the demo's simulator."""
    ha = Ha(args.exporter, args.moto, args.simulator, args.demo, args.work)
    signal.signal(signal.SIGTERM, ha_terminated)
    started = time.monotonic()
    integrations = ["payer", "workload"]
    try:
        ha.create_bucket()
        scenarios = args.scenarios.split(",")
        one = None
        if "bill" in scenarios or "kill" in scenarios:
            _, one = ha_scenario_bill(ha, integrations)
        if "kill" in scenarios:
            ha_scenario_kill(ha, integrations, one)
        if "cut" in scenarios:
            ha_scenario_cut(ha, integrations)
        if "cap" in scenarios:
            ha_scenario_cap(ha, args.cap)
    finally:
        ha.stop_all()
    ha.results["seconds"] = round(time.monotonic() - started, 1)
    if args.results:
        pathlib.Path(args.results).write_text("".join(f"{k}={v}\n" for k, v in ha.results.items()))
    say(f"  ha: passed in {ha.results['seconds']} s")


def cmd_ha_bench(args):
    """bench/run --ha: one replica alone, then two, against the demo's simulator (its scale
    chosen by bench/run) and moto's S3: the billed requests of a refresh of each, counted at the
    simulator's door; then the holder of the payer's lease SIGKILLed while the survivor is
    scraped every 20 ms: failed scrapes, takeover time, anything bought again."""
    ha = Ha(args.exporter, args.moto, args.simulator, args.demo, args.work)
    signal.signal(signal.SIGTERM, ha_terminated)
    integrations = ["payer", "workload"]
    out = {}
    try:
        ha.create_bucket()
        config = ha.config("bench", refresh_interval=args.refresh_interval)
        one, _, _, _ = ha_bill(ha, "bench-one", 1, integrations, config)
        ha.stop_all()
        two, replicas, lines, buyers = ha_bill(ha, "bench-two", 2, integrations, config)
        out.update(ha_bill_1=sum(one.values()), ha_bill_2=sum(two.values()),
                   ha_bill_1_detail=" ".join(f"{k}:{v}" for k, v in sorted(one.items())),
                   ha_bill_2_detail=" ".join(f"{k}:{v} ({','.join(buyers[k])})" for k, v in sorted(two.items())),
                   ha_series=sum(1 for l in lines.splitlines() if l and not l.startswith("#")))
        holder = next(r for r in replicas if r.held().get("payer") == 1)
        survivor = next(r for r in replicas if r is not holder)
        held = sorted(i for i, v in holder.held().items() if v == 1)
        survivor.scrape_loop(0.02)
        time.sleep(1)
        billed = ha.billing.total()
        holder.killed = True
        holder.kill()
        killed = time.monotonic()
        ha.until("the survivor holding every lease",
                 lambda: all(v == 1 for v in survivor.held().values()), 30, 0.02)
        took = time.monotonic() - killed
        time.sleep(2)
        survivor.end_scraping()
        if cost_lines(survivor.page()) != lines:
            fail("the survivor no longer serves the same cost lines")
        out.update(ha_killed_leases=",".join(held), ha_takeover_s=f"{took:.2f}",
                   ha_scrapes=survivor.scrapes, ha_failed_scrapes=len(survivor.failures),
                   ha_bought_after_kill=ha.billing.total() - billed,
                   ha_lease_duration_s=HA_LEASE, ha_poll_s=HA_POLL)
    finally:
        ha.stop_all()
    text = "".join(f"{k}={v}\n" for k, v in out.items())
    sys.stdout.write(text)
    if out.get("ha_bill_1") != out.get("ha_bill_2"):
        fail(f"two replicas bought {out.get('ha_bill_2')} a refresh, one {out.get('ha_bill_1')}")
    if out.get("ha_failed_scrapes"):
        fail(f"{out['ha_failed_scrapes']} scrapes failed across the holder kill")


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
    for a in ("image", "arch", "version", "revision", "created", "source", "url", "documentation"):
        p.add_argument(a)
    p.set_defaults(func=cmd_image_config)
    p = sub.add_parser("manifest"); p.add_argument("manifest"); p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_manifest)
    p = sub.add_parser("elf"); p.add_argument("binary"); p.add_argument("arch", choices=sorted(ELF_MACHINES))
    p.set_defaults(func=cmd_elf)
    p = sub.add_parser("dockerfile-builder"); p.add_argument("dockerfile"); p.add_argument("ci")
    p.set_defaults(func=cmd_dockerfile_builder)
    p = sub.add_parser("image-command"); p.add_argument("image"); p.set_defaults(func=cmd_image_command)
    p = sub.add_parser("dashboard"); p.add_argument("prometheus"); p.add_argument("dashboard")
    p.add_argument("--source", help="the exporter's src/: check the queries that price its requests against its billed operations")
    p.add_argument("--replicas", type=lambda v: v.split(","), default=[],
                   help="the pod labels of the replicas each exporter is scraped as (comma-separated): every query "
                        "must answer with all of them what it answers with each alone")
    p.set_defaults(func=cmd_dashboard)
    p = sub.add_parser("split")
    for a in ("manifests", "native", "custom", "kinds"):
        p.add_argument(a)
    p.set_defaults(func=cmd_split)
    p = sub.add_parser("chart-sources")
    for a in ("manifests", "rules", "dashboard", "config_out"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_sources)
    p = sub.add_parser("chart-values")
    for a in ("manifests", "values"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_values)
    p = sub.add_parser("chart-defaults"); p.add_argument("manifests"); p.set_defaults(func=cmd_chart_defaults)
    p = sub.add_parser("chart-ha")
    for a in ("manifests", "values", "policy", "install"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_ha)
    p = sub.add_parser("kustomize-ha")
    for a in ("manifests", "storage_path"):
        p.add_argument(a)
    p.set_defaults(func=cmd_kustomize_ha)
    p = sub.add_parser("chart-spread")
    for a in ("custom", "constraints", "single"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_spread)
    p = sub.add_parser("chart-readme")
    for a in ("helm", "chart", "readme", "work"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_readme)
    p = sub.add_parser("image-refs")
    for a in ("chart", "helm_manifests", "kustomize_manifests", "readme"):
        p.add_argument(a)
    p.set_defaults(func=cmd_image_refs)
    p = sub.add_parser("chart-package")
    for a in ("package", "name"):
        p.add_argument(a)
    p.set_defaults(func=cmd_chart_package)
    p = sub.add_parser("moto-plan")
    p.add_argument("mode", choices=sorted(MOTO_MODES))
    for a in ("moto", "config", "plan"):
        p.add_argument(a)
    p.add_argument("--today", help="plan for this date (YYYY-MM-DD) instead of today (UTC)")
    p.add_argument("--dry-run", action="store_true", help="write the plan without loading moto")
    p.add_argument("--other-month", action="store_true",
                   help="a data delay that puts the data day in the other month than the default's")
    p.add_argument("--token", help="web-identity: where to write the web identity token")
    p.add_argument("--env", help="web-identity: where to write the pod's environment (AWS_ROLE_ARN)")
    p.set_defaults(func=cmd_moto_plan)
    p = sub.add_parser("moto-check")
    for a in ("plan", "metrics", "moto", "recording"):
        p.add_argument(a)
    p.add_argument("--token", help="the web identity token file (web-identity mode)")
    p.set_defaults(func=cmd_moto_check)
    p = sub.add_parser("ha")
    for a in ("exporter", "moto", "simulator", "demo", "work"):
        p.add_argument(a)
    p.add_argument("--scenarios", default="bill,kill,cut,cap", help="comma-separated: bill, kill, cut, cap")
    p.add_argument("--cap", type=int, default=25, help="the cap scenario's max_api_requests_per_day")
    p.add_argument("--results", help="write the measured figures there (KEY=VALUE lines)")
    p.set_defaults(func=cmd_ha)
    p = sub.add_parser("ha-bench")
    for a in ("exporter", "moto", "simulator", "demo", "work"):
        p.add_argument(a)
    p.add_argument("--refresh-interval", default="6h")
    p.set_defaults(func=cmd_ha_bench)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
