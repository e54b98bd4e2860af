#!/usr/bin/env python3
"""Helpers for bench/run: polling, /proc sampling, page statistics, wrk runs, the reports.

Every measuring subcommand prints `key=value` lines on stdout (bench/run appends them to one
file per scale) and exits non-zero, with the reason on stderr, when it could not take its
measurement. Every wait has a deadline. A helper that starts a child (wrk) stops it by its PID
when it is itself stopped (SIGTERM/SIGINT) or when the child overruns its bound.

Subcommands: freeport, wait-port, first200, wait-refresh, proc, page, wrk, soak, idle-cpu,
fit, report, costs-report, ha-report (see each function's docstring).
"""

import argparse
import gzip
import hashlib
import http.client
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Families that are the exporter's own metrics, not cost series.
OWN_PREFIXES = (
    "aws_cost_exporter_",
    "aws_cost_refresh_",
    "aws_cost_api_requests_",
    "aws_cost_query_success",
)
COST_OPERATIONS = ("GetCostAndUsage", "GetCostAndUsageWithResources", "GetCostForecast")
# Asked once a UTC day (commitments: true).
COMMITMENT_OPERATIONS = ("GetSavingsPlansUtilizationDetails", "GetSavingsPlansCoverage",
                         "GetReservationUtilization", "GetReservationCoverage")
# GetAnomalies every refresh, GetAnomalyMonitors once a day (anomalies: true).
ANOMALY_OPERATIONS = ("GetAnomalies", "GetAnomalyMonitors")
BILLED_OPERATIONS = COST_OPERATIONS + COMMITMENT_OPERATIONS + ANOMALY_OPERATIONS
USD_PER_REQUEST = 0.01
REFRESHES_PER_DAY_AT_6H = 4

CHILDREN = []  # PIDs of children this helper started (wrk), stopped on SIGTERM/SIGINT


def _stop_children(signum, _frame):
    for pid in CHILDREN:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _stop_children)
signal.signal(signal.SIGINT, _stop_children)


def fail(message):
    print(f"helper: {message}", file=sys.stderr)
    sys.exit(1)


def emit(prefix, key, value):
    if isinstance(value, float):
        value = f"{value:.6g}" if abs(value) < 1e15 else f"{value:.0f}"
    print(f"{prefix}{key}={value}", flush=True)


# ---------------------------------------------------------------- /proc


def proc_cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_mem_bytes(pid):
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    if rss is None or hwm is None:
        raise RuntimeError(f"no VmRSS/VmHWM for pid {pid}")
    return rss, hwm


def tree_cpu_seconds(pid):
    """CPU seconds of a process and its direct children (nginx's workers)."""
    total = proc_cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(rest[1]) == pid:
            total += (int(rest[11]) + int(rest[12])) / CLK_TCK
    return total


def machine_cpu_seconds():
    """(user+nice+system, steal) CPU seconds of the whole machine, from /proc/stat; irq and
    softirq time (loopback TCP is largely softirq) are left out, being nobody's in particular."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2]) / CLK_TCK, fields[7] / CLK_TCK


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- small commands


def cmd_freeport(_args):
    """Prints a TCP port free on 127.0.0.1 (bound to port 0 and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_wait_port(args):
    """Waits until 127.0.0.1:PORT accepts a connection; fails at the deadline or if --pid dies."""
    deadline = time.monotonic() + args.deadline
    while time.monotonic() < deadline:
        if args.pid and not alive(args.pid):
            fail(f"process {args.pid} exited before listening on port {args.port}")
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    fail(f"nothing listening on 127.0.0.1:{args.port} after {args.deadline} s")


def cmd_first200(args):
    """Polls URL from before the exporter starts (it writes --ready once polling) until a 200,
    then prints the wall-clock time of that 200 and the exporter's CPU time at that moment
    (PID read from --pidfile, which bench/run writes as it spawns the exporter)."""
    host, port, path = split_url(args.url)
    deadline = time.monotonic() + args.deadline
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    with open(args.ready, "w") as f:
        f.write("polling\n")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.sendall(request)
                head = b""
                while b"\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                status_line = head.split(b"\r\n", 1)[0].split()
                if len(status_line) >= 2 and status_line[1] == b"200":
                    t200 = time.time()
                    pid = read_pidfile(args.pidfile, deadline)
                    cpu = proc_cpu_seconds(pid)
                    emit(args.prefix, "first200_epoch", f"{t200:.6f}")
                    emit(args.prefix, "cpu_at_first200_s", cpu)
                    return
        except OSError:
            pass
        time.sleep(0.001)
    fail(f"no 200 from {args.url} within {args.deadline} s")


def read_pidfile(path, deadline):
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    fail(f"no pid in {path}")


def split_url(url):
    m = re.match(r"http://([^:/]+):(\d+)(/.*)?$", url)
    if not m:
        fail(f"unsupported url {url}")
    return m.group(1), int(m.group(2)), m.group(3) or "/"


# ---------------------------------------------------------------- the exporter's log


# The messages of the refresh-end lines and the outcome each stands for (the lines carry no
# outcome field: their message says it).
REFRESH_OUTCOMES = {
    "refresh finished": "success",
    "refresh partly failed": "partial",
    "refresh failed": "failure",
}


class JsonLog:
    """Reads the exporter's JSON log (stderr redirected to a file) as it grows: each call to
    read() returns the (record, fields) of the complete lines written since the last call
    (from the file's start, or from its end when it was opened with from_end)."""

    def __init__(self, path, from_end=False):
        self.path = path
        self.offset = os.path.getsize(path) if from_end else 0
        self.partial = b""

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            out.append((record, record.get("fields", record)))
        return out


class LogFollower:
    """The refresh-end lines of the exporter's JSON log as it grows: 'refresh finished',
    'refresh partly failed ...', 'refresh failed ...'."""

    def __init__(self, path):
        self.log = JsonLog(path)

    def poll(self):
        events = []
        now = time.time()
        for record, fields in self.log.read():
            outcome = REFRESH_OUTCOMES.get(str(fields.get("message", "")))
            if outcome and "integration" in fields:
                fields = dict(fields)
                fields["outcome"] = outcome
                fields["_seen"] = now
                fields["_end"] = parse_ts(record.get("timestamp")) or now
                events.append(fields)
        return events


def parse_ts(text):
    if not text:
        return None
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", text)
    if not m:
        return None
    import datetime

    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc
    )
    return base.timestamp() + (float(m.group(2)) if m.group(2) else 0.0)


def cmd_wait_refresh(args):
    """Waits for the first refresh-end line of every integration in --integrations, then reads
    the exporter's CPU time, VmRSS and VmHWM at once, and prints them with each integration's
    outcome, duration, series and request attempts."""
    wanted = args.integrations.split(",")
    follower = LogFollower(args.log)
    seen = {}
    deadline = time.monotonic() + args.deadline
    while time.monotonic() < deadline:
        for event in follower.poll():
            name = event["integration"]
            if name in wanted and name not in seen:
                seen[name] = event
        if len(seen) == len(wanted):
            cpu = proc_cpu_seconds(args.pid)
            rss, hwm = proc_mem_bytes(args.pid)
            emit(args.prefix, "cpu_at_refreshed_s", cpu)
            emit(args.prefix, "rss_after_refresh", rss)
            emit(args.prefix, "hwm_after_refresh", hwm)
            emit(args.prefix, "refreshed_epoch", f"{time.time():.6f}")
            ok = True
            for name in wanted:
                e = seen[name]
                emit(args.prefix, f"refresh_{name}_outcome", e["outcome"])
                emit(args.prefix, f"refresh_{name}_seconds", float(e.get("duration_seconds", 0)))
                emit(args.prefix, f"refresh_{name}_series", e.get("series", ""))
                emit(args.prefix, f"refresh_{name}_requests", e.get("requests", ""))
                if e["outcome"] != "success":
                    ok = False
                    emit(args.prefix, f"refresh_{name}_error", str(e.get("error", ""))[:300])
            if not ok and args.require_success:
                fail("a refresh did not succeed: " + ", ".join(
                    f"{n}={seen[n]['outcome']}" for n in wanted))
            return
        if not alive(args.pid):
            fail(f"the exporter (pid {args.pid}) exited before refreshing")
        time.sleep(0.005)
    fail(f"no refresh of {','.join(w for w in wanted if w not in seen)} within {args.deadline} s")


def cmd_proc(args):
    """Prints the process's CPU seconds, VmRSS and VmHWM (bytes) under --prefix."""
    cpu = proc_cpu_seconds(args.pid)
    rss, hwm = proc_mem_bytes(args.pid)
    emit(args.prefix, "cpu_s", cpu)
    emit(args.prefix, "rss", rss)
    emit(args.prefix, "hwm", hwm)


def cmd_idle_cpu(args):
    """CPU time the process uses over --seconds of wall time."""
    before = proc_cpu_seconds(args.pid)
    t0 = time.monotonic()
    time.sleep(args.seconds)
    after = proc_cpu_seconds(args.pid)
    wall = time.monotonic() - t0
    emit(args.prefix, "idle_cpu_ms", (after - before) * 1000)
    emit(args.prefix, "idle_wall_s", wall)


def cmd_quiet(args):
    """Waits (at most --deadline s) until the rest of the machine is quiet: its CPU
    (user+nice+system, from /proc/stat) over one second at most --max-cores. A shared machine
    runs other work; this keeps measurements out of its busiest moments. Prints the wait and
    the last second's load; never fails (the load is then reported as it was)."""
    start = time.monotonic()
    while True:
        busy0, _ = machine_cpu_seconds()
        t0 = time.monotonic()
        time.sleep(1.0)
        busy1, _ = machine_cpu_seconds()
        load = (busy1 - busy0) / (time.monotonic() - t0)
        if load <= args.max_cores or time.monotonic() - start >= args.deadline:
            break
    emit(args.prefix, "quiet_wait_s", time.monotonic() - start)
    emit(args.prefix, "quiet_load_cores", load)


# ---------------------------------------------------------------- the served page


def sample_name(line):
    end = len(line)
    for sep in ("{", " "):
        i = line.find(sep)
        if i != -1:
            end = min(end, i)
    return line[:end]


def parse_labels(line):
    """Label pairs of one sample line (values unescaped enough for the labels used here)."""
    i = line.find("{")
    if i == -1:
        return {}
    j = line.rfind("}")
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[i + 1 : j]))


def page_stats(text):
    """Counts of a 0.0.4 / OpenMetrics page: cost series, per family, and billed requests."""
    series = 0
    families = {}
    billed = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = sample_name(line)
        if name == "aws_cost_exporter_build_info":
            families["_revision"] = parse_labels(line).get("revision", "")
            continue
        if name.startswith("aws_cost_api_requests_total"):
            labels = parse_labels(line)
            op = labels.get("operation", "")
            if op in BILLED_OPERATIONS:
                value = float(line.rsplit(" ", 1)[1])
                key = (labels.get("integration", ""), op)
                billed[key] = billed.get(key, 0) + value
            continue
        if name.startswith("aws_cost_") and not name.startswith(OWN_PREFIXES):
            series += 1
            families[name] = families.get(name, 0) + 1
            key = (parse_labels(line).get("integration", ""), name)
            families[key] = families.get(key, 0) + 1
    return series, families, billed


def cmd_page(args):
    """Statistics of the bodies the exporter served: bytes, cost series, the gzip body's shape
    (one gzip member that decodes to the plain page's series), OpenMetrics' '# EOF' and series,
    and billed Cost Explorer requests from aws_cost_api_requests_total. --gzip and --om are
    optional (the cost table needs only the plain page)."""
    p = args.prefix
    plain = open(args.plain, "rb").read()
    emit(p, "page_plain_bytes", len(plain))
    series, families, billed = page_stats(plain.decode())
    good = series > 0
    if args.gzip:
        gz = open(args.gzip, "rb").read()
        emit(p, "page_gzip_bytes", len(gz))
        d = zlib.decompressobj(wbits=31)
        decoded = d.decompress(gz) + d.flush()
        single = bool(d.eof and not d.unused_data)
        emit(p, "gzip_single_member", int(single))
        # The exporter's own lines may differ between two scrapes; compare the cost series.
        _, gfamilies, _ = page_stats(decoded.decode())
        emit(p, "gzip_decodes_same_series", int(gfamilies == families))
        good = good and single and gfamilies == families
    if args.om:
        om = open(args.om, "rb").read()
        emit(p, "page_om_bytes", len(om))
        _, ofamilies, _ = page_stats(om.decode())
        eof = om.endswith(b"# EOF\n")
        emit(p, "om_eof", int(eof))
        emit(p, "om_same_series", int(ofamilies == families))
        good = good and eof and ofamilies == families
    emit(p, "series", series)
    emit(p, "revision", families.pop("_revision", ""))
    for family, count in sorted(families.items(), key=str):
        if isinstance(family, tuple):
            emit(p, f"family_{family[0]}_{family[1]}", count)
        else:
            emit(p, f"family_{family}", count)
    total = 0
    per_integration = {}
    for (integration, op), value in sorted(billed.items()):
        emit(p, f"billed_{integration}_{op}", int(value))
        total += value
        per_integration[integration] = per_integration.get(integration, 0) + value
    for integration, value in sorted(per_integration.items()):
        emit(p, f"billed_{integration}", int(value))
    emit(p, "billed_requests", int(total))
    emit(p, "usd_per_day", total * REFRESHES_PER_DAY_AT_6H * USD_PER_REQUEST)
    if not good:
        fail("the served pages are not what they should be (see the flags above)")


def cmd_sha(args):
    """sha256 of a file (to check that nginx serves the exporter's exact bytes)."""
    print(hashlib.sha256(open(args.file, "rb").read()).hexdigest())


# ---------------------------------------------------------------- wrk


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not m:
        return None
    value = float(m.group(1))
    return value * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]


def parse_wrk(output):
    result = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if m:
        result["rps"] = float(m.group(1))
    m = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    if m:
        result["p50_ms"] = parse_duration_ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if m:
        result["p99_ms"] = parse_duration_ms(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", output)
    if m:
        result["requests"] = int(m.group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        errors += sum(int(x) for x in m.groups())
    result["errors"] = errors
    return result


def run_wrk(url, seconds, headers, threads, connections, log_path=None, server_pid=None):
    """Runs wrk (bounded: wrk's own -d, and killed by PID at -d + 30 s) and parses it. With
    server_pid, also measures the server's CPU and how much CPU the rest of the machine (other
    than the server and wrk) used meanwhile, in cores: the noise of a shared machine."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "--timeout", "30s"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    start = time.time()
    busy0, steal0 = machine_cpu_seconds()
    server0 = tree_cpu_seconds(server_pid) if server_pid else 0.0
    children0 = os.times()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    CHILDREN.append(proc.pid)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        fail(f"wrk overran its bound: {' '.join(cmd)}")
    finally:
        CHILDREN.remove(proc.pid)
    end = time.time()
    busy1, steal1 = machine_cpu_seconds()
    busy, steal = busy1 - busy0, steal1 - steal0
    children1 = os.times()
    wrk_cpu = (children1.children_user + children1.children_system
               - children0.children_user - children0.children_system)
    server_cpu = (tree_cpu_seconds(server_pid) - server0) if server_pid else 0.0
    if log_path:
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out}\n")
    result = parse_wrk(out)
    result["start"], result["end"] = start, end
    if server_pid:
        result["server_cores"] = server_cpu / (end - start)
        result["wrk_cores"] = wrk_cpu / (end - start)
        result["other_cores"] = max(0.0, busy - server_cpu - wrk_cpu) / (end - start)
        result["steal_cores"] = steal / (end - start)
    if proc.returncode != 0 or "rps" not in result or "p99_ms" not in result:
        fail(f"wrk failed (exit {proc.returncode}): {out[-500:]}")
    return result


def cmd_wrk(args):
    """One wrk run; prints rps, p50_ms, p99_ms, errors under --prefix."""
    r = run_wrk(args.url, args.seconds, args.header or [], args.threads, args.connections,
                args.log, args.server_pid)
    for key in ("rps", "p50_ms", "p99_ms", "errors", "requests", "server_cores", "wrk_cores",
                "other_cores", "steal_cores"):
        emit(args.prefix, key, r.get(key, ""))
    if r["errors"]:
        fail(f"wrk saw {r['errors']} errors against {args.url}")
    if args.min_bytes and r.get("requests", 0) == 0:
        fail("wrk completed no request")


ROUND_KEY = re.compile(r"^((?:exp|nginx)_(?:plain|gzip6|gzip|om))_r([1-9][0-9]*)_(.+)$")
ROUND_MEDIANS = ("rps", "p50_ms", "p99_ms", "server_cores", "wrk_cores", "other_cores",
                 "steal_cores")
ROUND_SUMS = ("errors", "requests")


def cmd_rounds(args):
    """The wrk rounds of a row (PREFIX_rN_KEY), summarized under PREFIX_KEY: the median over
    the rounds of rates, latencies and CPU, the sum of errors and requests, and
    PREFIX_rps_rounds, every round's scrapes/s in order."""
    runs = {}
    for key, value in load_kv(args.row).items():
        m = ROUND_KEY.match(key)
        if m:
            prefix, n, field = m.group(1), int(m.group(2)), m.group(3)
            runs.setdefault(prefix, {}).setdefault(field, {})[n] = value
    if not runs:
        fail(f"no wrk rounds in {args.row}")
    for prefix, fields in sorted(runs.items()):
        for field, by_round in sorted(fields.items()):
            values = []
            for n in sorted(by_round):
                try:
                    values.append(float(by_round[n]))
                except ValueError:
                    pass
            if not values:
                continue
            if field in ROUND_MEDIANS:
                emit(prefix + "_", field, statistics.median(values))
            elif field in ROUND_SUMS:
                emit(prefix + "_", field, int(sum(values)))
        rps = fields.get("rps", {})
        emit(prefix + "_", "rps_rounds", ",".join(f"{float(rps[n]):.0f}" for n in sorted(rps)))
        # CPU per scrape is each round's own cores / scrapes/s, then the median: the medians
        # of cores and of rates may come from different rounds.
        cores = fields.get("server_cores", {})
        per_round = [float(cores[n]) / float(rps[n]) * 1e6 for n in sorted(rps)
                     if n in cores and float(rps[n]) > 0]
        if per_round:
            emit(prefix + "_", "us_per_scrape", statistics.median(per_round))


# ---------------------------------------------------------------- the 50-refresh soak


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def cmd_soak(args):
    """With the exporter refreshing every second: follows its log from the start and reads
    VmRSS right after each of --integration's refresh-end lines until --count of them; after
    the first one, runs wrk (plain, -t2 -c8) for --wrk-seconds, then scrapes sequentially over
    one connection until the count is reached, classifying each scrape as during a refresh
    (its time overlaps a refresh of any integration, from the log's end time minus its
    duration) or outside one."""
    follower = LogFollower(args.log)
    lock = threading.Lock()
    main_events = []
    windows = []
    rss_after = []
    failures = []
    done = threading.Event()
    deadline = time.monotonic() + args.deadline

    def follow():
        while not done.is_set() and time.monotonic() < deadline:
            for e in follower.poll():
                with lock:
                    end = e["_end"]
                    windows.append((end - float(e.get("duration_seconds", 0)), end))
                    if e["integration"] == args.integration:
                        rss, _ = proc_mem_bytes(args.pid)
                        rss_after.append(rss)
                        main_events.append(e)
                        if e["outcome"] != "success":
                            failures.append(e["outcome"])
                        if len(main_events) >= args.count:
                            done.set()
            if not alive(args.pid):
                failures.append("exporter exited")
                done.set()
            time.sleep(0.005)
        done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    while not main_events and not done.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not main_events:
        fail(f"no refresh of {args.integration} in the soak")
    w = run_wrk(args.url, args.wrk_seconds, [], 2, 8, args.log_wrk, args.pid)
    host, port, path = split_url(args.url)
    scrapes = []
    conn = http.client.HTTPConnection(host, port, timeout=60)
    while not done.is_set() and time.monotonic() < deadline:
        t0 = time.time()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        t1 = time.time()
        if resp.status != 200 or not body:
            failures.append(f"scrape status {resp.status}")
            break
        scrapes.append((t0, t1))
    conn.close()
    done.wait(max(0.0, deadline - time.monotonic()))
    thread.join(timeout=5)
    hwm = proc_mem_bytes(args.pid)[1] if alive(args.pid) else 0
    p = args.prefix
    emit(p, "soak_refreshes", len(main_events))
    emit(p, "soak_all_success", int(not failures and len(main_events) >= args.count))
    if failures:
        emit(p, "soak_failures", ";".join(sorted(set(failures)))[:300])
    emit(p, "soak_rss_list", ",".join(str(r) for r in rss_after))
    emit(p, "soak_rss_min", min(rss_after))
    emit(p, "soak_rss_max", max(rss_after))
    emit(p, "soak_rss_last", rss_after[-1])
    tail = rss_after[args.warmup:] or rss_after
    emit(p, "soak_rss_tail_min", min(tail))
    emit(p, "soak_rss_tail_max", max(tail))
    # Least-squares slope of RSS over the refreshes after the warm-up, bytes per refresh.
    n = len(tail)
    if n >= 2:
        xs = range(n)
        mx, my = (n - 1) / 2, sum(tail) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, tail)) / sum((x - mx) ** 2 for x in xs)
        emit(p, "soak_rss_slope_per_refresh", slope)
    emit(p, "soak_hwm", hwm)
    durations = [float(e.get("duration_seconds", 0)) for e in main_events]
    emit(p, "soak_refresh_seconds_median", percentile(durations, 0.5))
    emit(p, "soak_refresh_seconds_max", max(durations))
    with lock:
        wins = sorted(windows)

    def overlap(a, b):
        return sum(max(0.0, min(b, we) - max(a, ws)) for ws, we in wins)

    emit(p, "soak_wrk_rps", w["rps"])
    emit(p, "soak_wrk_p50_ms", w["p50_ms"])
    emit(p, "soak_wrk_p99_ms", w["p99_ms"])
    emit(p, "soak_wrk_errors", w["errors"])
    emit(p, "soak_wrk_server_cores", w["server_cores"])
    emit(p, "soak_wrk_others_cores", w["other_cores"])
    emit(p, "soak_wrk_refresh_fraction", overlap(w["start"], w["end"]) / (w["end"] - w["start"]))
    during = [(b - a) * 1000 for a, b in scrapes if overlap(a, b) > 0]
    outside = [(b - a) * 1000 for a, b in scrapes if overlap(a, b) == 0]
    emit(p, "seq_during_n", len(during))
    emit(p, "seq_outside_n", len(outside))
    for name, values in (("during", during), ("outside", outside)):
        if values:
            emit(p, f"seq_{name}_p50_ms", percentile(values, 0.5))
            emit(p, f"seq_{name}_p99_ms", percentile(values, 0.99))
    if failures or len(main_events) < args.count or w["errors"]:
        fail(f"soak incomplete: {len(main_events)} refreshes, failures {failures[:3]}, "
             f"wrk errors {w['errors']}")


# ---------------------------------------------------------------- calibration


def cmd_fit(args):
    """Accounts for about --target cost series, from measured (accounts, series) points: the
    line through the two points nearest the target (series grow about linearly with accounts),
    clamped to [1, 100000]."""
    points = sorted({(int(a), int(s)) for a, s in (p.split(":") for p in args.points)})
    if len(points) < 2:
        fail("need two points")
    points.sort(key=lambda p: abs(math.log(max(p[1], 1) / args.target)))
    (a1, s1), (a2, s2) = sorted(points[:2])
    if a1 == a2 or s1 == s2:
        fail("degenerate points")
    slope = (s2 - s1) / (a2 - a1)
    accounts = a1 + (args.target - s1) / slope
    print(max(1, min(100_000, round(accounts))))


# ---------------------------------------------------------------- reports


def load_kv(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                values[k] = v
    return values


def num(values, key, default=None):
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return default


def mb(b):
    return f"{b / 1e6:.1f}" if b is not None else "—"


def fmt_int(x):
    return f"{int(x):,}" if x is not None else "—"


def fmt(x, digits=2):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def fmt_lat(v, kind):
    rps, p50, p99 = (num(v, f"{kind}_{k}") for k in ("rps", "p50_ms", "p99_ms"))
    if rps is None:
        return "—"
    return f"{rps:,.0f}/s · {fmt_ms(p50)} / {fmt_ms(p99)}"


def fmt_ms(ms):
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def ratio(v, fmt_kind):
    """Exporter / nginx scrapes per second; "gzip6" compares the exporter's gzip scrapes with
    nginx serving `gzip -6` of the plain page."""
    exporter = "gzip" if fmt_kind == "gzip6" else fmt_kind
    a, b = num(v, f"exp_{exporter}_rps"), num(v, f"nginx_{fmt_kind}_rps")
    return a / b if a is not None and b else None


def fmt_ratio(x):
    return fmt(x, 3 if x is not None and x < 0.1 else 2)


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**holds**" if ok else "**missed**"


def cmd_report(args):
    """The Markdown of a full or smoke run: header, one row per scale, the targets."""
    header = load_kv(args.header)
    rows = [load_kv(p) for p in args.rows]
    rows = [r for r in rows if "series" in r]
    rows.sort(key=lambda r: num(r, "series", 0))
    out = []
    out.append(f"# bench/run results{' (smoke)' if header.get('mode') == 'smoke' else ''}\n")
    out.append(f"- date: {header.get('date')}")
    out.append(f"- commit: {header.get('commit')} (branch {header.get('branch')}); binary "
               f"revision label {header.get('revision', '—')}")
    out.append(f"- machine: {header.get('nproc')} CPUs ({header.get('cpu')}), kernel "
               f"{header.get('kernel')}, {header.get('memtotal')} memory")
    out.append(f"- simulated day: today {header.get('today')} (UTC); the demo configuration "
               f"(examples/demo.yaml: payer with 3 cost bases, 2 tag keys, 2 resource services, "
               f"3 budgets, Organizations; workload standalone), 500 groups a page")
    rounds = header.get("wrk_rounds", "1")
    out.append(f"- wrk: -t2 -c8, {header.get('wrk_seconds')} s a run, {rounds} round(s) of "
               f"every exporter/nginx pair, alternately; the tables show the median over the "
               f"rounds (each round's scrapes/s below), on loopback; nginx "
               f"{header.get('nginx_version')} (worker_processes 2, sendfile on, gzip_static on, "
               f"access_log off) serving the exporter's exact plain, gzip and OpenMetrics bodies, "
               f"and (nginx gzip -6) `gzip -6` of the exporter's plain page with gzip_static")
    out.append(f"- run took {header.get('elapsed', '—')}\n")
    out.append("Latency columns: scrapes per second · p50 / p99 in ms. Ratio: exporter / nginx "
               "scrapes per second. RSS in MB (10^6 bytes). CPU: the exporter's utime+stime "
               "from its first 200 on /metrics to the last first-refresh line (both "
               "integrations); refresh wall: the payer's duration_seconds. USD/day: billed "
               "requests x 4 refreshes x 0.01.\n")
    cols = ["cost series", "accounts", "page bytes plain / gzip / gzip -6 / OpenMetrics",
            "billed req/refresh", "USD/day @6h", "refresh wall s (payer)", "refresh CPU ms",
            "RSS MB after refresh / after load / peak", "start-up ms",
            "exporter plain", "exporter gzip", "exporter OpenMetrics",
            "nginx plain", "nginx gzip", "nginx gzip -6", "nginx OpenMetrics",
            "ratio plain / gzip / gzip vs gzip -6 / OM"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    for r in rows:
        ratios = " / ".join(fmt_ratio(ratio(r, k)) for k in ("plain", "gzip", "gzip6", "om"))
        cells = [
            fmt_int(num(r, "series")), fmt_int(num(r, "accounts")),
            f"{fmt_int(num(r, 'page_plain_bytes'))} / {fmt_int(num(r, 'page_gzip_bytes'))} / "
            f"{fmt_int(num(r, 'page_gzip6_bytes'))} / {fmt_int(num(r, 'page_om_bytes'))}",
            fmt_int(num(r, "billed_requests")), fmt(num(r, "usd_per_day")),
            fmt(num(r, "refresh_payer_seconds"), 3), fmt_int(num(r, "refresh_cpu_ms")),
            f"{mb(num(r, 'rss_after_refresh'))} / {mb(num(r, 'rss_after_load'))} / "
            f"{mb(num(r, 'hwm_after_load'))}",
            fmt(num(r, "startup_ms"), 1),
            fmt_lat(r, "exp_plain"), fmt_lat(r, "exp_gzip"), fmt_lat(r, "exp_om"),
            fmt_lat(r, "nginx_plain"), fmt_lat(r, "nginx_gzip"), fmt_lat(r, "nginx_gzip6"),
            fmt_lat(r, "nginx_om"),
            ratios,
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    # Every round's scrapes/s: the spread behind each median.
    out.append("Scrapes/s in each round (runs in this order within a round: exporter plain, "
               "nginx plain, exporter gzip, nginx gzip, nginx gzip -6, exporter OpenMetrics, "
               "nginx OpenMetrics), and each round's ratios, gzip vs nginx / vs nginx gzip -6:\n")
    kinds = (("exp_plain", "exporter plain"), ("nginx_plain", "nginx plain"),
             ("exp_gzip", "exporter gzip"), ("nginx_gzip", "nginx gzip"),
             ("nginx_gzip6", "nginx gzip -6"), ("exp_om", "exporter OM"), ("nginx_om", "nginx OM"))
    out.append("| cost series | " + " | ".join(label for _, label in kinds)
               + " | gzip ratios per round |")
    out.append("|---" * (len(kinds) + 2) + "|")
    for r in rows:
        def per_round(prefix):
            return [float(x) for x in r.get(f"{prefix}_rps_rounds", "").split(",") if x]

        cells = [" / ".join(fmt_int(x) for x in per_round(k)) or "—" for k, _ in kinds]
        exp, ng, ng6 = per_round("exp_gzip"), per_round("nginx_gzip"), per_round("nginx_gzip6")
        ratios = " · ".join(f"{fmt_ratio(a / b)} / {fmt_ratio(a / c)}"
                            for a, b, c in zip(exp, ng, ng6) if b and c) or "—"
        out.append(f"| {fmt_int(num(r, 'series'))} | " + " | ".join(cells) + f" | {ratios} |")
    out.append("")
    # Per-scale detail: what the per-series figures are.
    out.append("Per cost series and other details:\n")
    out.append("| cost series | RSS B/series after refresh / after load / peak | refresh CPU "
               "ms per 100k series | simulator RSS MB | billed requests by operation | "
               "refresh outcomes | server CPU in cores, exporter / nginx (plain, gzip, OM) | "
               "server CPU per scrape in µs, exporter / nginx (plain, gzip, OM; nginx's gzip -6) | "
               "rest of the machine during the wrk runs, max: CPU / steal (cores); before "
               "the runs, max (cores) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = num(r, "series")
        per = " / ".join(fmt_int(num(r, k) / s) if num(r, k) else "—"
                         for k in ("rss_after_refresh", "rss_after_load", "hwm_after_load"))
        cpu100k = num(r, "refresh_cpu_ms") * 100_000 / s if num(r, "refresh_cpu_ms") is not None else None
        ops = ", ".join(f"{k[len('billed_'):]} {v}" for k, v in sorted(r.items())
                        if k.startswith("billed_") and k.count("_") >= 2 and not k.endswith("requests")
                        and any(k.endswith(op) for op in BILLED_OPERATIONS))
        outcomes = ", ".join(f"{n} {r.get(f'refresh_{n}_outcome')}" for n in ("payer", "workload"))
        cores = " / ".join(
            ", ".join(fmt(num(r, f"{side}_{k}_server_cores")) for k in ("plain", "gzip", "om"))
            for side in ("exp", "nginx"))

        def per_scrape(prefix):
            # CPU time per scrape: what the server spends, whatever share of the cores the
            # rest of a shared machine left it (a steadier comparison than scrapes/s).
            # The median of each round's own (see cmd_rounds).
            micros = num(r, f"{prefix}_us_per_scrape")
            return fmt(micros, 1) if micros is not None else "—"

        micros = (", ".join(per_scrape(f"exp_{k}") for k in ("plain", "gzip", "om")) + " / "
                  + ", ".join(per_scrape(f"nginx_{k}") for k in ("plain", "gzip", "om"))
                  + f"; {per_scrape('nginx_gzip6')}")

        def most(suffix):
            values = [num(r, k) for k in r if k.endswith(suffix)]
            values = [x for x in values if x is not None]
            return fmt(max(values)) if values else "—"

        cal = num(r, "refresh_cpu_ms_calibration")
        if cal is not None:
            cpu100k = f"{fmt_int(cpu100k)} ({fmt_int(cal * 100_000 / s)} in the calibration run)"
        else:
            cpu100k = fmt_int(cpu100k)
        out.append(f"| {fmt_int(s)} | {per} | {cpu100k} | {mb(num(r, 'sim_rss'))} | "
                   f"{ops} | {outcomes} | {cores} | {micros} | {most('_other_cores')} / "
                   f"{most('_steal_cores')}; {most('quiet_load_cores')} |")
    out.append("")
    big = [r for r in rows if "soak_refreshes" in r or "idle_cpu_ms" in r]
    target = rows[-1] if rows else None
    if big:
        target = big[-1]
    if target:
        out.extend(targets_section(target, rows, header))
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
    if os.path.exists(analysis) and header.get("mode") != "smoke":
        out.append("\nWhere the time and memory go, and why the missed targets miss: "
                   "[bench/ANALYSIS.md](ANALYSIS.md), written by hand for the run it names.")
    notes = header.get("notes")
    if notes:
        out.append("\nNotes:\n")
        for note in notes.split("|"):
            out.append(f"- {note}")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def targets_section(t, rows, header):
    out = []
    s = num(t, "series")
    out.append(f"## Targets (issue 7), at {fmt_int(s)} cost series ({fmt_int(num(t, 'accounts'))} "
               f"accounts)\n")
    if s < 50_000:
        out.append("The targets are set for ~100k cost series; at this scale the per-series "
                   "figures are dominated by the process's fixed baseline, so they are shown "
                   "for information only.\n")
    if "soak_refreshes" in t:
        soak_rss = [int(x) for x in t.get("soak_rss_list", "").split(",") if x]
        out.append(f"RSS after each of the {t.get('soak_refreshes')} refreshes of the soak "
                   f"(refresh_interval 1s; MB): " + " ".join(f"{x / 1e6:.0f}" for x in soak_rss)
                   + "\n")
    out.append("| target | figure | holds? |")
    out.append("|---|---|---|")

    def row(name, figure, ok):
        out.append(f"| {name} | {figure} | {verdict(ok)} |")

    outcome = t.get("refresh_payer_outcome")
    row("refresh succeeds at ~100k series", f"payer: {outcome}, {fmt(num(t, 'refresh_payer_seconds'), 2)} s",
        outcome == "success" if outcome else None)
    for kind, label in (("plain", "plain"), ("gzip", "gzip")):
        rt = ratio(t, kind)
        row(f"scrapes/s ≥ 0.8 × nginx, {label}, -c8",
            f"{fmt(num(t, f'exp_{kind}_rps'), 0)}/s vs {fmt(num(t, f'nginx_{kind}_rps'), 0)}/s = "
            f"{fmt_ratio(rt)}", rt >= 0.8 if rt is not None else None)
    rt = ratio(t, "gzip6")
    row("scrapes/s ≥ 0.8 × nginx serving `gzip -6` of the plain page, gzip, -c8",
        f"{fmt(num(t, 'exp_gzip_rps'), 0)}/s vs {fmt(num(t, 'nginx_gzip6_rps'), 0)}/s = "
        f"{fmt_ratio(rt)}", rt >= 0.8 if rt is not None else None)
    for r in rows:
        g, g6 = num(r, "page_gzip_bytes"), num(r, "page_gzip6_bytes")
        row(f"served gzip ≤ `gzip -6` of the plain page, {fmt_int(num(r, 'series'))} series",
            f"{fmt_int(g)} vs {fmt_int(g6)} bytes"
            + (f" ({fmt(100 * g / g6, 1)} %)" if g is not None and g6 else ""),
            g <= g6 if g is not None and g6 else None)
    rt = ratio(t, "om")
    out.append(f"| (OpenMetrics, no target) | {fmt(num(t, 'exp_om_rps'), 0)}/s vs "
               f"{fmt(num(t, 'nginx_om_rps'), 0)}/s = {fmt_ratio(rt)} | — |")
    for key, label in (("rss_after_refresh", "after the refresh"), ("rss_after_load", "after the scrapes")):
        v = num(t, key)
        row(f"RSS ≤ 500 B/series {label}", f"{mb(v)} MB = {fmt_int(v / s) if v else '—'} B/series",
            v / s <= 500 if v else None)
    if "soak_refreshes" in t:
        rss = [int(x) for x in t.get("soak_rss_list", "").split(",") if x]
        mn, mx, last = num(t, "soak_rss_min"), num(t, "soak_rss_max"), num(t, "soak_rss_last")
        first, last10 = rss[0], percentile(rss[-10:], 0.5)
        growth = last10 / first - 1
        slope = num(t, "soak_rss_slope_per_refresh")
        row(f"RSS flat over {t.get('soak_refreshes')} refreshes: the median after the last 10 "
            f"within 10 % of the RSS after the first",
            f"{mb(first)} → {mb(last10)} MB ({'+' if growth >= 0 else ''}{fmt(100 * growth, 0)} %); "
            f"min {mb(mn)} / max {mb(mx)} / last {mb(last)} MB; slope after refresh "
            f"{header.get('soak_warmup')}: {fmt_int(slope)} B/refresh; every refresh succeeded: "
            f"{'yes' if t.get('soak_all_success') == '1' else 'no'}",
            growth <= 0.10 and t.get("soak_all_success") == "1")
        row("RSS ≤ 500 B/series over the soak (median of the last 10 refreshes; the max includes "
            "a previous page still held by a scrape in flight)",
            f"{mb(last10)} MB = {fmt_int(last10 / s)} B/series (max {fmt_int(mx / s)})",
            last10 / s <= 500)
    peaks = [(num(t, "hwm_after_load"), "first refresh and scrapes")]
    if "soak_hwm" in t:
        peaks.append((num(t, "soak_hwm"), "50 refreshes"))
    for v, label in peaks:
        row(f"peak (VmHWM) ≤ 1 KB/series, {label}", f"{mb(v)} MB = {fmt_int(v / s) if v else '—'} B/series",
            v / s <= 1000 if v else None)
    cpu = num(t, "refresh_cpu_ms")
    cpu2 = num(t, "refresh_cpu_ms_calibration")
    row("refresh CPU ≤ 300 ms per 100k series",
        f"{fmt_int(cpu)} ms for {fmt_int(s)} = {fmt_int(cpu * 100_000 / s) if cpu is not None else '—'} ms per 100k"
        + (f" (the calibration run at the same scale: {fmt_int(cpu2)} ms)" if cpu2 is not None else ""),
        cpu * 100_000 / s <= 300 if cpu is not None else None)
    startups = [(num(r, "startup_ms"), num(r, "series")) for r in rows if num(r, "startup_ms") is not None]
    if startups:
        worst = max(x for x, _ in startups)
        row("start-up: /metrics answers ≤ 100 ms after spawn (every scale)",
            ", ".join(f"{fmt(x, 1)} ms" for x, _ in startups), worst <= 100)
    idle = num(t, "idle_cpu_ms")
    wall = num(t, "idle_wall_s")
    row("idle CPU near zero (≤ 0.1 % of a core) between refreshes",
        f"{fmt(idle, 0)} ms CPU in {fmt(wall, 1)} s" + (f" = {fmt(100 * idle / 1000 / wall, 3)} %" if idle is not None and wall else ""),
        (idle / 1000 / wall) <= 0.001 if idle is not None and wall else None)
    if "soak_wrk_rps" in t:
        i50, i99 = num(t, "exp_plain_p50_ms"), num(t, "exp_plain_p99_ms")
        d50, d99 = num(t, "soak_wrk_p50_ms"), num(t, "soak_wrk_p99_ms")
        frac = num(t, "soak_wrk_refresh_fraction")
        ok = d50 <= i50 * 1.10 and d99 <= i99 * 1.10
        row("a scrape during a refresh no slower (wrk -c8 plain during the 1 s refreshes vs idle; "
            "10 % noise allowance)",
            f"p50 {fmt_ms(d50)} vs {fmt_ms(i50)} ms, p99 {fmt_ms(d99)} vs {fmt_ms(i99)} ms; "
            f"{fmt(num(t, 'soak_wrk_rps'), 0)}/s vs {fmt(num(t, 'exp_plain_rps'), 0)}/s; "
            f"{fmt(100 * frac, 0) if frac is not None else '—'} % of the run inside refreshes",
            ok)
        s50, s99 = num(t, "seq_during_p50_ms"), num(t, "seq_during_p99_ms")
        o50, o99 = num(t, "seq_outside_p50_ms"), num(t, "seq_outside_p99_ms")
        if s50 is not None and o50 is not None:
            ok = s50 <= o50 * 1.10 and s99 <= o99 * 1.10
            row("the same, one sequential scraper (-c1), scrapes overlapping a refresh vs not, "
                "same process and run",
                f"p50 {fmt_ms(s50)} vs {fmt_ms(o50)} ms, p99 {fmt_ms(s99)} vs {fmt_ms(o99)} ms "
                f"({t.get('seq_during_n')} during, {t.get('seq_outside_n')} outside)", ok)
    return out


def commitments_table(runs):
    """The requests `commitments: true` and `anomalies: true` add: the `commitments`
    integration (the payer with both on) against `payer` (the same without), per day at 6h:
    cost requests and GetAnomalies every refresh, commitments and monitors once a day."""
    out = ["\n## Commitments and anomalies\n",
           "The integration `commitments` is the payer with `commitments: true` and "
           "`anomalies: true`; the simulated organization has Savings Plans (3 plans, in the "
           "payer) and RDS reservations (one per database). Per day at 6h: the cost requests "
           "and GetAnomalies 4 times, the commitment operations and GetAnomalyMonitors once.\n",
           "| organization | cost requests per refresh | commitment requests per day | anomaly "
           "requests per day | requests per day, without | with | USD per day, without | with |",
           "|---|---|---|---|---|---|---|---|"]
    details = []
    for label, run in [("40 accounts", "s40"), ("455 accounts", "s455"),
                       ("1,000 accounts", "s1000"), ("1,500 accounts", "s1500")]:
        v = runs.get(f"after-{run}", {})
        if v.get("refresh_commitments_outcome") != "success":
            out.append(f"| {label} | not run or failed: {v.get('refresh_commitments_error', '')} |")
            continue
        costs = sum(num(v, f"billed_commitments_{op}", 0) for op in COST_OPERATIONS)
        commit = sum(num(v, f"billed_commitments_{op}", 0) for op in COMMITMENT_OPERATIONS)
        anomalies = num(v, "billed_commitments_GetAnomalies", 0)
        monitors = num(v, "billed_commitments_GetAnomalyMonitors", 0)
        without = costs * REFRESHES_PER_DAY_AT_6H
        anomaly_day = anomalies * REFRESHES_PER_DAY_AT_6H + monitors
        with_ = without + commit + anomaly_day
        ops = ", ".join(f"{op} {fmt_int(num(v, f'billed_commitments_{op}', 0))}"
                        for op in COMMITMENT_OPERATIONS + ANOMALY_OPERATIONS)
        out.append(f"| {label} | {fmt_int(costs)} | {fmt_int(commit)} | {fmt_int(anomaly_day)} | "
                   f"{fmt_int(without)} | {fmt_int(with_)} | {fmt(without * USD_PER_REQUEST)} | "
                   f"{fmt(with_ * USD_PER_REQUEST)} |")
        details.append(f"- {label}, first refresh: {ops}")
    return "\n".join(out + [""] + details)


def cmd_costs_report(args):
    """COSTS.md: requests per refresh and USD per day at 6h, standalone / 40 / 455 / 1,000 /
    1,500 accounts,
    this binary and optionally the before binary."""
    header = load_kv(args.header)
    runs = {os.path.basename(p).rsplit(".", 1)[0]: load_kv(p) for p in args.runs}
    out = ["# Cost Explorer requests per refresh (bench/run --costs)\n"]
    out.append(f"- date: {header.get('date')}; simulated today {header.get('today')} (UTC)")
    def revision(side):
        for name, v in sorted(runs.items()):
            if name.startswith(side + "-") and v.get("revision"):
                return v["revision"]
        return "unknown"

    out.append(f"- after: commit {header.get('commit')} (branch {header.get('branch')}), binary "
               f"revision label {revision('after')}")
    if header.get("before"):
        out.append(f"- before: {header.get('before')}, revision label {revision('before')} "
                   f"(aws_cost_exporter_build_info)")
    out.append("- configuration: each integration with the defaults of a plain integration: one "
               "cost basis (unblended), forecast on, no tags, resources, budgets or "
               "Organizations; the simulator's demo organization (`--demo.scale`), 500 groups "
               "a page. Billed: every Cost Explorer operation, from aws_cost_api_requests_total "
               "(all outcomes). USD per day "
               "at the default 6h interval: requests x 4 x 0.01.\n")
    cases = [("standalone account", "s40", "workload"),
             ("40-account organization", "s40", "payer"),
             ("455-account organization", "s455", "payer"),
             ("1,000-account organization", "s1000", "payer"),
             ("1,500-account organization", "s1500", "payer")]
    have_before = any(k.startswith("before-") for k in runs)
    cols = ["", "requests per refresh", "USD per day at 6h"]
    if have_before:
        cols = ["", "before: requests per refresh", "before: USD per day", "after: requests per refresh",
                "after: USD per day"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    detail = []
    for label, run, integration in cases:
        cells = [label]
        for side in (["before", "after"] if have_before else ["after"]):
            v = runs.get(f"{side}-{run}", {})
            outcome = v.get(f"refresh_{integration}_outcome")
            req = num(v, f"billed_{integration}")
            if outcome is None:
                cells += ["not run", "—"]
            elif outcome != "success":
                err = v.get(f"refresh_{integration}_error", "")
                cells += [f"refresh {outcome}" + (f" after {fmt_int(req)}" if req else ""),
                          f"({fmt(req * 4 * 0.01) if req else '—'} spent per attempt x 4)"]
                detail.append(f"- {side}, {label}: refresh {outcome}: {err}")
            else:
                cells += [fmt_int(req), fmt(req * 4 * 0.01)]
            if v:
                ops = ", ".join(f"{op} {v[f'billed_{integration}_{op}']}" for op in COST_OPERATIONS
                                if f"billed_{integration}_{op}" in v)
                daily = num(v, f"family_{integration}_aws_cost_daily_usd")
                mtd = num(v, f"family_{integration}_aws_cost_month_to_date_usd")
                extra = ""
                if integration == "payer" and daily is not None and mtd is not None and side == "after":
                    lb = math.ceil(daily / 500) + math.ceil(mtd / 500)
                    gcu = num(v, f"billed_{integration}_GetCostAndUsage", 0)
                    bound = 1.5 * lb + 12
                    extra = (f"; serves {fmt_int(daily)} daily and {fmt_int(mtd)} month-to-date "
                             f"series; counting each as one group, the issue's lower bound "
                             f"⌈d/500⌉ + ⌈m/500⌉ = {lb} and its bound 1.5 x {lb} + 12 = "
                             f"{bound:g}: GetCostAndUsage {fmt_int(gcu)} is "
                             f"{'within' if gcu <= bound else 'over'} it")
                detail.append(f"- {side}, {label}: {ops}; refresh {fmt(num(v, f'refresh_{integration}_seconds'), 2)} s{extra}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("\n" + "\n".join(detail))
    out.append(commitments_table(runs))
    if args.replay:
        out.append(replay_table(args.replay))
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def replay_table(path):
    """The day replay's lines (tests/day_replay.rs, `replay key=value ...`) as the cost table
    of change detection: requests a day and the worst delay behind AWS, before and after."""
    rows = []
    with open(path) as f:
        for line in f:
            # (the test harness may print its "test ... " prefix on the same line)
            if "replay accounts=" in line:
                line = line[line.index("replay accounts="):]
                rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
    out = ["\n## A day of publications: change detection (tests/day_replay.rs)\n",
           "The demo's simulated AWS replays one day as Cost Explorer publishes it (the data day "
           "moving at midnight, new usage at 02:00, 10:00 and 18:00 UTC), one clock stepping "
           "through the day for the simulator and the exporter; requests counted by the "
           "simulator. Before: a full refresh every 6h (`check_interval: off`). After: "
           "`check_interval: auto` (hourly for an organization, whose plan takes more than 5 "
           "requests; every `refresh_interval`, 6h, for a standalone account). The worst delay "
           "is from a change at AWS to the check that serves it: the time between two checks, "
           "once every change was bought at the first check at or after it (checked).\n",
           "| integration | plan (requests) | before: requests a day (USD) | before: worst delay | "
           "after: requests a day (USD) | after: plans bought at | after: worst delay |",
           "|---|---|---|---|---|---|---|"]
    changes = [0, 2, 10, 18]
    for r in rows:
        accounts = int(r["accounts"])
        label = "standalone account" if accounts == 0 else f"{accounts:,}-account organization"
        step = int(r["after_step_hours"])
        plans = [0] + [int(h) for h in r["after_plans_at"].split(",") if h]
        # Each change must be bought at the first check at or after it; a change can land
        # just after a check, so the worst delay is the time between checks.
        checks = range(0, 24, step)
        missed = [c for c in changes if min(h for h in checks if h >= c) not in plans]
        delay = f"{step}h" if not missed else f"changes at {missed} not bought at the next check"
        before, after = int(r["before_requests"]), int(r["after_requests"])
        out.append(f"| {label} | {r['plan']} | {before} ({before * 0.01:.2f}) | 6h | "
                   f"{after} ({after * 0.01:.2f}) | 00:00 and {', '.join(f'{int(h):02d}:00' for h in plans[1:])} | "
                   f"{delay} |")
    return "\n".join(out)


def cmd_ha_report(args):
    """HA.md (bench/run --ha): two replicas on shared S3 storage against one, and a holder kill."""
    header = load_kv(args.header)
    v = load_kv(args.row)
    out = ["# High availability (bench/run --ha)\n"]
    out.append(f"- date: {header.get('date')}; simulated today {header.get('today')} (UTC)")
    out.append(f"- commit: {header.get('commit')} (branch {header.get('branch')})")
    out.append(f"- machine: {header.get('nproc')} CPUs ({header.get('cpu')}), kernel "
               f"{header.get('kernel')}, {header.get('memtotal')} memory")
    out.append(f"- {v.get('moto', 'moto')}'s S3 server on loopback as the shared storage "
               f"(`--storage.path s3://…`, `--storage.lease-duration "
               f"{fmt(num(v, 'ha_lease_duration_s'), 0)}s`, `--storage.poll-interval "
               f"{fmt_ms(num(v, 'ha_poll_s', 0) * 1000)}ms`); the demo's simulator "
               f"(`--demo.simulator`, {v.get('accounts')} accounts) as Cost Explorer, reached by "
               f"each replica through a counting proxy of its own (tests/e2e/e2e.py ha-bench), "
               f"so that every billed request is counted, a killed replica's included")
    out.append(f"- examples/demo.yaml with refresh_interval 6h and check_interval off (each "
               f"refresh buys its whole plan): two integrations, payer and workload")
    out.append(f"- run took {header.get('elapsed', '—')}\n")
    out.append("Requests per day: a refresh's billed requests x 4 refreshes (refresh_interval "
               "6h), as in RESULTS.md; USD at 0.01 a request. The commitments' and anomaly "
               "monitors' requests are asked once a day, so this is an upper bound.\n")
    out.append("| replicas | cost series (one replica's page, calibration run) | billed requests a refresh (per integration; who bought it) "
               "| requests/day @6h | USD/day @6h |")
    out.append("|---|---|---|---|---|")
    for n in (1, 2):
        bill = num(v, f"ha_bill_{n}")
        out.append(f"| {n} | {fmt_int(num(v, 'series'))} | {fmt_int(bill)} "
                   f"({v.get(f'ha_bill_{n}_detail', '—')}) | "
                   f"{fmt_int(bill * REFRESHES_PER_DAY_AT_6H if bill is not None else None)} | "
                   f"{fmt(bill * REFRESHES_PER_DAY_AT_6H * USD_PER_REQUEST if bill is not None else None)} |")
    out.append("")
    out.append(f"Holder kill: with the two replicas serving, the holder of the lease(s) "
               f"{v.get('ha_killed_leases')} SIGKILLed; the survivor scraped every 20 ms from 1 s "
               f"before the kill until 2 s after it held every lease.\n")
    out.append("| scrapes of the survivor | failed | every lease held by the survivor after the kill "
               "| billed requests after the kill |")
    out.append("|---|---|---|---|")
    out.append(f"| {fmt_int(num(v, 'ha_scrapes'))} | {fmt_int(num(v, 'ha_failed_scrapes'))} | "
               f"{fmt(num(v, 'ha_takeover_s'))} s (by design within the lease duration + one "
               f"poll interval = {fmt(num(v, 'ha_lease_duration_s', 0) + num(v, 'ha_poll_s', 0))} s, "
               f"plus the S3 requests' latency and the 20 ms scrape period) | "
               f"{fmt_int(num(v, 'ha_bought_after_kill'))} (the next refresh is not due) |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("freeport").set_defaults(func=cmd_freeport)
    p = sub.add_parser("wait-port")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int)
    p.add_argument("--deadline", type=float, required=True)
    p.set_defaults(func=cmd_wait_port)
    p = sub.add_parser("first200")
    p.add_argument("--url", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--deadline", type=float, required=True)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_first200)
    p = sub.add_parser("wait-refresh")
    p.add_argument("--log", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--integrations", required=True)
    p.add_argument("--deadline", type=float, required=True)
    p.add_argument("--require-success", action="store_true")
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_wait_refresh)
    p = sub.add_parser("proc")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_proc)
    p = sub.add_parser("idle-cpu")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_idle_cpu)
    p = sub.add_parser("quiet")
    p.add_argument("--max-cores", type=float, default=0.3)
    p.add_argument("--deadline", type=float, required=True)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_quiet)
    p = sub.add_parser("page")
    p.add_argument("--plain", required=True)
    p.add_argument("--gzip")
    p.add_argument("--om")
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_page)
    p = sub.add_parser("sha")
    p.add_argument("file")
    p.set_defaults(func=cmd_sha)
    p = sub.add_parser("wrk")
    p.add_argument("--url", required=True)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--header", action="append")
    p.add_argument("--log")
    p.add_argument("--min-bytes", type=int, default=1)
    p.add_argument("--server-pid", type=int)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_wrk)
    p = sub.add_parser("soak")
    p.add_argument("--url", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--log-wrk")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--integration", default="payer")
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--wrk-seconds", type=int, required=True)
    p.add_argument("--deadline", type=float, required=True)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_soak)
    p = sub.add_parser("fit")
    p.add_argument("--target", type=int, required=True)
    p.add_argument("points", nargs="+", help="accounts:series")
    p.set_defaults(func=cmd_fit)
    p = sub.add_parser("rounds")
    p.add_argument("--row", required=True)
    p.set_defaults(func=cmd_rounds)
    p = sub.add_parser("report")
    p.add_argument("--header", required=True)
    p.add_argument("--out")
    p.add_argument("rows", nargs="*")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("costs-report")
    p.add_argument("--header", required=True)
    p.add_argument("--out")
    p.add_argument("--replay", help="the day replay's output (tests/day_replay.rs)")
    p.add_argument("runs", nargs="*")
    p.set_defaults(func=cmd_costs_report)
    p = sub.add_parser("ha-report")
    p.add_argument("--header", required=True)
    p.add_argument("--out")
    p.add_argument("row")
    p.set_defaults(func=cmd_ha_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
