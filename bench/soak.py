#!/usr/bin/env python3
"""The soak of bench/soak: concurrent scrapes while refreshes and reloads happen every second.

    soak.py configs --demo examples/demo.yaml --interval 1s --out-a A --out-b B
    soak.py run --url URL --pid PID --log LOG --config FILE --config-a A --config-b B
                --seconds S --warmup W [--out FILE] [--header-file KV]

`run` starts, for --seconds: wrk (-t2 -c8) in back-to-back runs alternating plain and gzip;
a reloader that every second copies configuration A or B (alternately) over --config and sends
SIGHUP to --pid; a checker that scrapes sequentially (plain, gzip, OpenMetrics in turn) and
verifies every scrape; an RSS sampler (VmRSS every second); and a follower of the exporter's
JSON log (refreshes and reloads). Then it prints the Markdown report and exits non-zero if a
scrape failed or was inconsistent, RSS was not flat, or nothing was refreshed or reloaded.

Every wait is bounded; wrk is stopped by its PID when this process is stopped or overruns.
"""

import argparse
import http.client
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helper  # noqa: E402  (the harness's own helpers: wrk parsing, /proc, the log follower)

# The budgets of examples/demo.yaml: integration -> budget -> (cost basis or None for the
# integration's first, accounts, services). A served budget missing here fails the check
# (the example changed: update this).
BUDGETS = {
    "payer": {
        "organization": (None, [], []),
        "production-compute": (None, ["333333333333"], ["Amazon Elastic Compute Cloud - Compute"]),
        "data-platform": ("amortized", ["555555555555"], []),
    },
    "workload": {"workload": (None, [], [])},
}
# Families always counted by aws_cost_series{metric=...}; any other family the page declares a
# count for (views, an electrolux file's own metrics) is checked against that count too.
COUNTED = ("aws_cost_daily_usd", "aws_cost_month_to_date_usd", "aws_cost_tag_daily_usd",
           "aws_cost_tag_month_to_date_usd", "aws_cost_resource_daily_usd",
           "aws_cost_anomaly_impact_usd", "aws_cost_view_daily_usd",
           "aws_cost_view_month_to_date_usd")
# RSS is flat when the median of the last third is within this of the median of the first
# third, both after the warm-up.
FLAT_TOLERANCE = 0.15
RELATIVE = 1e-6

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?,?)\})? '
    r'([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))$'
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
UNESCAPE = re.compile(r"\\(.)")


def unescape(value):
    return UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


# ---------------------------------------------------------------- configurations


def cmd_configs(args):
    """Writes configuration A (examples/demo.yaml at --interval, check_interval off) and B (the same, but the
    workload integration with cost_basis [amortized] and tags [team, env]): each reload
    between them restarts the workload integration, and the payer keeps refreshing."""
    text = open(args.demo).read()
    if not re.search(r"^refresh_interval: ", text, re.M):
        helper.fail(f"{args.demo} has no top-level refresh_interval")
    # Without change detection: every refresh buys the whole plan, which is what the soak
    # loads (the simulated data never changes, so checks would find it unchanged).
    a = re.sub(r"^refresh_interval: .*$",
               f"refresh_interval: {args.interval}\ncheck_interval: off", text, flags=re.M)
    start = a.find("  - name: workload\n")
    if start < 0 or "    tags: [team]\n" not in a[start:]:
        helper.fail(f"{args.demo}: no workload integration with 'tags: [team]' to vary")
    head, tail = a[:start], a[start:]
    tail = tail.replace("    tags: [team]\n",
                        "    cost_basis: [amortized]\n    tags: [team, env]\n", 1)
    with open(args.out_a, "w") as f:
        f.write(a)
    with open(args.out_b, "w") as f:
        f.write(head + tail)


# ---------------------------------------------------------------- one scrape, checked


def check_page(text, openmetrics):
    """Problems of one page (empty list: consistent) and its cost series count."""
    problems = []
    series = {}  # (integration, family) -> served samples
    declared = {}  # (integration, metric) -> aws_cost_series
    mtd = {}  # integration -> [(account, service, basis, value)]
    first_basis = {}
    budget_mtd = {}  # (integration, budget) -> value
    typed = set()
    cost = 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    else:
        problems.append("the page does not end with a newline")
    if openmetrics:
        if not lines or lines[-1] != "# EOF":
            problems.append("OpenMetrics page without '# EOF' at its end")
        else:
            lines.pop()
    for line in lines:
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                typed.add(parts[2])
            elif line == "# EOF":
                problems.append("'# EOF' before the end")
            continue
        m = SAMPLE.match(line)
        if not m:
            problems.append(f"unparseable line {line[:200]!r}")
            continue
        name = m.group(1)
        family = name
        for suffix in ("_total", "_created", "_bucket", "_count", "_sum", "_info"):
            if name.endswith(suffix) and name[: -len(suffix)] in typed:
                family = name[: -len(suffix)]
        if name not in typed and family not in typed:
            problems.append(f"sample before its # TYPE: {name}")
        if not name.startswith("aws_cost_") or name.startswith(helper.OWN_PREFIXES):
            continue
        labels = {k: unescape(v) for k, v in LABEL.findall(m.group(2) or "")}
        value = float(m.group(3).replace("Inf", "inf"))
        integration = labels.get("integration", "")
        if name == "aws_cost_series":
            declared[(integration, labels.get("metric", ""))] = value
            continue
        if name == "aws_cost_series_dropped":
            continue
        cost += 1
        key = (integration, name)
        series[key] = series.get(key, 0) + 1
        if name == "aws_cost_month_to_date_usd":
            basis = labels.get("cost_basis", "")
            first_basis.setdefault(integration, basis)
            mtd.setdefault(integration, []).append(
                (labels.get("account_id", ""), labels.get("aws_service", ""), basis, value))
        elif name == "aws_cost_budget_month_to_date_usd":
            budget_mtd[(integration, labels.get("budget", ""))] = value
    # Each integration's series add up to its own counts.
    for key in sorted({k for k in series if k[1] in COUNTED} | set(declared)):
        served, count = series.get(key, 0), declared.get(key)
        if count is None:
            problems.append(f"{key[0]}: {served} {key[1]} series but no aws_cost_series for it")
        elif served != count:
            problems.append(f"{key[0]}: {served} {key[1]} series served, aws_cost_series says {count:g}")
    # Each budget's month to date is its integration's month to date within its filter.
    budgets_checked = 0
    for (integration, budget), value in sorted(budget_mtd.items()):
        spec = BUDGETS.get(integration, {}).get(budget)
        if spec is None:
            problems.append(f"budget {integration}/{budget} is not in bench/soak.py's BUDGETS")
            continue
        basis, accounts, services = spec
        basis = basis or first_basis.get(integration)
        expected = sum(v for a, s, b, v in mtd.get(integration, [])
                       if b == basis and (not accounts or a in accounts)
                       and (not services or s in services))
        if abs(value - expected) > RELATIVE * max(abs(value), abs(expected), 1.0):
            problems.append(f"budget {integration}/{budget}: {value!r} but the month to date "
                            f"({basis}) within its filter sums to {expected!r}")
        budgets_checked += 1
    if not budget_mtd:
        problems.append("no aws_cost_budget_month_to_date_usd at all")
    return problems, cost, budgets_checked


def scrape(host, port, path, kind, timeout):
    """One scrape over a new connection: (problems, cost series, budgets checked)."""
    headers = {}
    if kind == "gzip":
        headers["Accept-Encoding"] = "gzip"
    elif kind == "openmetrics":
        headers["Accept"] = OPENMETRICS
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
        encoding = resp.getheader("Content-Encoding", "")
        ctype = resp.getheader("Content-Type", "")
    finally:
        conn.close()
    if status != 200:
        return [f"HTTP {status}"], 0, 0, True
    problems = []
    if kind == "gzip":
        if encoding != "gzip":
            return [f"gzip asked, Content-Encoding {encoding!r}"], 0, 0, False
        d = zlib.decompressobj(wbits=31)
        try:
            body = d.decompress(body) + d.flush()
        except zlib.error as err:
            return [f"gzip body does not decode: {err}"], 0, 0, False
        if not d.eof or d.unused_data:
            problems.append("gzip body is not exactly one member")
    elif encoding:
        problems.append(f"Content-Encoding {encoding!r} not asked for")
    openmetrics = kind == "openmetrics"
    if openmetrics != ctype.startswith("application/openmetrics-text"):
        problems.append(f"Content-Type {ctype!r} for a {kind} scrape")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return problems + ["the body is not UTF-8"], 0, 0, False
    more, cost, budgets = check_page(text, openmetrics)
    return problems + more, cost, budgets, False


# ---------------------------------------------------------------- the run


def cmd_run(args):
    host, port, path = helper.split_url(args.url)
    stop = threading.Event()
    lock = threading.Lock()
    end = time.monotonic() + args.seconds
    state = {
        "wrk_runs": [], "wrk_requests": 0, "wrk_errors": 0, "wrk_failures": [],
        "checks": {"plain": 0, "gzip": 0, "openmetrics": 0}, "failed": 0,
        "inconsistent": 0, "examples": [], "cost_series": [], "budgets_checked": 0,
        "reloads_sent": 0, "rss": [], "refreshes": {}, "reloads_done": 0,
        "reloads_failed": 0, "exited": False, "durations": {},
    }

    def note(kind, text):
        with lock:
            if len(state["examples"]) < 10:
                state["examples"].append(f"{kind}: {text}")

    def wrk_loop():
        kinds = [("plain", []), ("gzip", ["Accept-Encoding: gzip"])]
        i = 0
        while not stop.is_set():
            left = end - time.monotonic()
            if left < 1:
                break
            kind, headers = kinds[i % 2]
            seconds = max(1, min(args.wrk_seconds, int(left)))
            try:
                # At normal priority, as any scraper: wrk takes a core and, with the scrapes it
                # asks for, keeps both busy; the refreshes (nice 10) are slowed, not starved. (At
                # nice 19 they were: in the first run of this soak, the payer's refresh took
                # 121 s instead of 1.2 s.)
                r = helper.run_wrk(args.url, seconds, headers, 2, 8, args.wrk_log)
            except SystemExit:
                with lock:
                    state["wrk_failures"].append(f"{kind}: wrk failed (see {args.wrk_log})")
                break
            with lock:
                state["wrk_runs"].append((kind, r))
                state["wrk_requests"] += r.get("requests", 0)
                state["wrk_errors"] += r["errors"]
            i += 1

    def reload_loop():
        configs = [open(args.config_b).read(), open(args.config_a).read()]
        i = 0
        next_at = time.monotonic() + 1
        while not stop.is_set() and time.monotonic() < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += 1
            tmp = args.config + ".tmp"
            with open(tmp, "w") as f:
                f.write(configs[i % 2])
            os.replace(tmp, args.config)
            try:
                os.kill(args.pid, signal.SIGHUP)
            except ProcessLookupError:
                break
            with lock:
                state["reloads_sent"] += 1
            i += 1

    def checker():
        kinds = ["plain", "gzip", "openmetrics"]
        i = 0
        while not stop.is_set() and time.monotonic() < end:
            kind = kinds[i % 3]
            i += 1
            try:
                problems, cost, budgets, failed = scrape(host, port, path, kind, args.timeout)
            except (OSError, http.client.HTTPException) as err:
                problems, cost, budgets, failed = [f"{type(err).__name__}: {err}"], 0, 0, True
            with lock:
                state["checks"][kind] += 1
                if failed:
                    state["failed"] += 1
                elif problems:
                    state["inconsistent"] += 1
                else:
                    state["cost_series"].append(cost)
                    state["budgets_checked"] += budgets
            if problems:
                note(f"{kind} scrape", "; ".join(problems[:3]))

    def sampler():
        next_at = time.monotonic()
        while not stop.is_set() and time.monotonic() < end:
            if not helper.alive(args.pid):
                with lock:
                    state["exited"] = True
                break
            rss, _ = helper.proc_mem_bytes(args.pid)
            with lock:
                state["rss"].append(rss)
            next_at += 1
            time.sleep(max(0.0, next_at - time.monotonic()))

    def follower():
        log = helper.JsonLog(args.log, from_end=True)
        while True:
            records = log.read()
            for _, fields in records:
                message = str(fields.get("message", ""))
                with lock:
                    if message == "configuration reloaded":
                        state["reloads_done"] += 1
                    elif message.startswith("configuration reload failed"):
                        state["reloads_failed"] += 1
                    elif message in helper.REFRESH_OUTCOMES:
                        name = str(fields.get("integration", ""))
                        key = (name, helper.REFRESH_OUTCOMES[message])
                        state["refreshes"][key] = state["refreshes"].get(key, 0) + 1
                        try:
                            seconds = float(fields.get("duration_seconds", "nan"))
                        except (TypeError, ValueError):
                            seconds = float("nan")
                        state["durations"].setdefault(name, []).append(seconds)
            if stop.is_set() and not records:
                break
            time.sleep(0.05)

    threads = [threading.Thread(target=t, daemon=True)
               for t in (wrk_loop, reload_loop, checker, sampler, follower)]
    for t in threads:
        t.start()
    while time.monotonic() < end and not state["exited"]:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=args.wrk_seconds + 60)
    time.sleep(0.5)  # the last reload's log line
    report(args, state)


def median(values):
    return helper.percentile(values, 0.5) if values else float("nan")


def report(args, s):
    rss = s["rss"]
    warm = rss[args.warmup:] if len(rss) > args.warmup + 6 else rss
    third = max(1, len(warm) // 3)
    first_med, last_med = median(warm[:third]), median(warm[-third:])
    drift = (last_med - first_med) / first_med if first_med else float("nan")
    flat = bool(rss) and abs(drift) <= FLAT_TOLERANCE
    checks = sum(s["checks"].values())
    refreshes = s["refreshes"]
    succeeded = sum(v for (n, o), v in refreshes.items() if o == "success")
    per_integration = {}
    for (name, outcome), v in sorted(refreshes.items()):
        per_integration.setdefault(name, []).append(f"{v} {outcome}")
    wrk_failed = s["wrk_errors"] + len(s["wrk_failures"])
    ok = (not s["exited"] and wrk_failed == 0 and s["failed"] == 0 and s["inconsistent"] == 0
          and checks > 0 and flat and succeeded > 0 and s["reloads_done"] > 0)
    header = {}
    if args.header_file:
        header = helper.load_kv(args.header_file)
    out = []
    w = out.append
    w(f"# Soak{' (smoke)' if header.get('mode') == 'smoke' else ''}")
    w("")
    w("Written by `bench/soak`" + (" --smoke" if header.get("mode") == "smoke" else "")
      + ": concurrent scrapes while the exporter refreshes every second and reloads its "
      "configuration every second, against the simulated AWS. " + ("PASS" if ok else "FAIL") + ".")
    w("")
    for key, label in (("date", "Date"), ("commit", "Commit"), ("machine", "Machine"),
                       ("accounts", "Simulated accounts"), ("binary", "Binary")):
        if key in header:
            w(f"- {label}: {header[key]}")
    w(f"- Duration: {args.seconds} s of load (warm-up for RSS: {args.warmup} s); "
      f"cost series per scrape: {min(s['cost_series'], default=0):,}"
      f" to {max(s['cost_series'], default=0):,}")
    w("")
    w("| figure | value |")
    w("|---|---|")
    w(f"| wrk scrapes (-t2 -c8, plain and gzip alternately, {len(s['wrk_runs'])} runs) | "
      f"{s['wrk_requests']:,} |")
    rates = [f"{k} {r['rps']:.0f}/s p99 {r['p99_ms']:.1f} ms" for k, r in s["wrk_runs"][:2]]
    if rates:
        w(f"| wrk rate (first runs) | {', '.join(rates)} |")
    w(f"| wrk failed scrapes (non-2xx, socket errors, timeouts) | {wrk_failed} |")
    c = s["checks"]
    w(f"| checker scrapes (plain / gzip / OpenMetrics) | {checks:,} "
      f"({c['plain']:,} / {c['gzip']:,} / {c['openmetrics']:,}) |")
    w(f"| checker failed scrapes (non-200, socket errors, timeouts) | {s['failed']} |")
    w(f"| inconsistent scrapes | {s['inconsistent']} |")
    w(f"| budget invariants checked | {s['budgets_checked']:,} |")
    w(f"| refreshes done | {succeeded:,} successful; "
      f"{'; '.join(f'{n}: ' + ', '.join(v) for n, v in per_integration.items()) or 'none'} |")
    for name, values in sorted(s["durations"].items()):
        w(f"| {name} refresh seconds (median / max) | {median(values):.3g} / {max(values):.3g} |")
    w(f"| reloads | {s['reloads_sent']} SIGHUPs sent, {s['reloads_done']} done, "
      f"{s['reloads_failed']} failed |")
    w(f"| RSS first / median of last third / max | {helper.mb(rss[0]) if rss else '-'} / "
      f"{helper.mb(last_med) if rss else '-'} / {helper.mb(max(rss)) if rss else '-'} MB |")
    w(f"| RSS flat | {'yes' if flat else 'NO'}: median of the last third "
      f"{helper.mb(last_med) if rss else '-'} MB vs the first third "
      f"{helper.mb(first_med) if rss else '-'} MB after the warm-up, "
      f"{drift * 100:+.1f} % (flat: within ±{FLAT_TOLERANCE * 100:.0f} %) |")
    w("")
    w("Checks of every checker scrape: status 200; every line parses (sample lines, `# TYPE` "
      "before its samples, OpenMetrics ending in `# EOF`); gzip decodes to exactly one member; "
      "per integration and cost metric, the served series equal `aws_cost_series{metric}`; every "
      "budget's `aws_cost_budget_month_to_date_usd` equals the sum of its integration's "
      "`aws_cost_month_to_date_usd` for the budget's cost basis within its filter (to 1e-6 "
      "relative). A reload alternates the workload integration between `cost_basis: [unblended]`, "
      "`tags: [team]` and `cost_basis: [amortized]`, `tags: [team, env]`, so a page mixing two "
      "snapshots of it breaks both checks.")
    if s["exited"]:
        w("")
        w("**The exporter exited during the soak.**")
    if s["examples"] or s["wrk_failures"]:
        w("")
        w("Problems seen (first ones):")
        w("")
        for e in s["wrk_failures"] + s["examples"]:
            w(f"- {e}")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if not ok:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("configs")
    p.add_argument("--demo", required=True)
    p.add_argument("--interval", default="1s")
    p.add_argument("--out-a", required=True)
    p.add_argument("--out-b", required=True)
    p.set_defaults(func=cmd_configs)
    p = sub.add_parser("run")
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--config-a", required=True)
    p.add_argument("--config-b", required=True)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--wrk-seconds", type=int, default=10)
    p.add_argument("--wrk-log")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--header-file")
    p.add_argument("--out")
    p.set_defaults(func=cmd_run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
