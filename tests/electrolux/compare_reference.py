#!/usr/bin/env python3
"""Runs electrolux-oss/aws-cost-exporter (the Python peer, v1.1.4) and aws-cost-exporter side by
side on the same electrolux configuration file, both against the demo's simulated Cost Explorer,
and compares the series of every metric the file names.

    python3 tests/electrolux/compare_reference.py \\
        --reference /work/electrolux-ref \\
        --python /work/electrolux-ref/venv/bin/python \\
        --exporter target/release/aws-cost-exporter \\
        --config tests/electrolux/compare_features.yaml [--env K=V ...]

--reference is a directory holding the peer's main.py and app/exporter.py (they are not part of
this repository; --python is an interpreter with the peer's requirements.txt installed: boto3 >=
1.28 so that AWS_ENDPOINT_URL is honoured).

What it does:

1. starts `<exporter> --demo.simulator 127.0.0.1:<free port>` (the simulated Cost Explorer and
   STS; --demo-scale N adds `--demo.scale N`: more accounts, results of several pages) and waits
   until it accepts connections;
2. copies the file to a temporary directory with its top-level `exporter_port` set to a free
   port (nothing else changes);
3. starts the peer, `main.py -c <copy>`, in --reference, and aws-cost-exporter with
   `--config.file <copy> --web.listen-address 127.0.0.1:<free port>`, both with
   AWS_ENDPOINT_URL pointing at the simulator, AWS_REGION/AWS_DEFAULT_REGION us-east-1, the
   default credential chain set to the simulator's demo payer key (--access-key-id,
   --secret-access-key) and the --env variables. The peer is started through a small bootstrap
   that leaves its code untouched: it binds prometheus_client's start_http_server to 127.0.0.1
   (instead of every interface) and writes a marker line to stderr whenever main.py's loop goes
   to sleep after a poll;
4. waits (at most --timeout seconds) until the peer has finished a poll (the marker) and our
   exporter has ended a refresh of every integration (`aws_cost_refresh_success` for each
   integration of `aws_cost_refresh_failures_total`), then scrapes each once (the peer's scrape
   is retried if a new poll started meanwhile);
5. compares, for every metric named in the file (`metric_name:`; the peer's own python_*,
   process_* and our aws_cost_* families are ignored): the set of (name, labels) series and
   each value (equal within a relative 1e-9, or an absolute 1e-9 near zero), and HELP/TYPE of
   the families both serve. Series only on one side and value differences are printed; the exit
   status is 0 when there are none, 1 when there are, 2 when the run itself failed.

Every process it starts runs in its own process group and is stopped (SIGTERM, then SIGKILL)
before it exits, also on failure, on Ctrl-C and on SIGTERM. Standard library only.
"""

import argparse
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# The simulator's demo payer key (accepted for account 111111111111): AWS's documented example.
DEMO_KEYS = [
    ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
]

MARKER = "COMPARE-REFERENCE: poll done"

# Runs the peer's main.py as `python main.py -c FILE` would, with two changes around it (none
# in it): the metrics server listens on 127.0.0.1 only, and each sleep of main.py's polling loop
# (time.sleep called from the __main__ module) first prints MARKER to stderr.
BOOTSTRAP = r"""
import runpy, sys, time
import prometheus_client

_start = prometheus_client.start_http_server
def _start_http_server(port, addr="127.0.0.1", *args, **kwargs):
    return _start(port, addr, *args, **kwargs)
prometheus_client.start_http_server = _start_http_server

_sleep = time.sleep
def _marked_sleep(seconds):
    if sys._getframe(1).f_globals.get("__name__") == "__main__":
        sys.stderr.write("%s\n" % MARKER)
        sys.stderr.flush()
    return _sleep(seconds)
time.sleep = _marked_sleep

sys.argv = ["main.py", "-c", CONFIG]
runpy.run_path("main.py", run_name="__main__")
"""

REL_TOL = 1e-9
ABS_TOL = 1e-9


class RunError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, deadline, proc, what):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunError(f"{what} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RunError(f"{what} did not listen on 127.0.0.1:{port} in time")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode("utf-8")


# ---- the text exposition format -------------------------------------------------------------

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"")


def parse_labels(text, i, line):
    """Parses `{a="x",b="y"}` from text[i] == '{'; returns (labels, index after '}')."""
    labels = {}
    i += 1
    while True:
        while i < len(text) and text[i] in " \t,":
            i += 1
        if i < len(text) and text[i] == "}":
            return labels, i + 1
        m = LABEL.match(text, i)
        if not m:
            raise RunError(f"cannot parse labels in line {line!r}")
        name = m.group(1)
        i = m.end()
        value = []
        while True:
            if i >= len(text):
                raise RunError(f"unterminated label value in line {line!r}")
            c = text[i]
            if c == "\\":
                nxt = text[i + 1] if i + 1 < len(text) else ""
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise RunError(f"label {name} twice in line {line!r}")
        labels[name] = "".join(value)


def parse_exposition(text):
    """Returns ({family: {"help": str, "type": str}}, {(name, labels tuple): [values]})."""
    meta = {}
    samples = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                entry = meta.setdefault(parts[2], {})
                value = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    value = value.replace("\\n", "\n").replace("\\\\", "\\")
                entry[parts[1].lower()] = value
            continue
        m = NAME.match(line)
        if not m:
            raise RunError(f"cannot parse line {line!r}")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, line)
        rest = line[i:].split()
        if not rest:
            raise RunError(f"no value in line {line!r}")
        value = float(rest[0])
        key = (name, tuple(sorted(labels.items())))
        samples.setdefault(key, []).append(value)
    return meta, samples


# ---- the file -------------------------------------------------------------------------------

METRIC_NAME = re.compile(r"""(?:^|[\s{,-])metric_name\s*:\s*("[^"]*"|'[^']*'|[^\s,}#]+)""", re.M)


def file_metric_names(text):
    names = []
    for m in METRIC_NAME.finditer(text):
        name = m.group(1).strip("'\"")
        if name not in names:
            names.append(name)
    return names


def with_port(text, port):
    line = f"exporter_port: {port}"
    pattern = re.compile(r"^exporter_port\s*:.*$", re.M)
    if pattern.search(text):
        return pattern.sub(line, text, count=1)
    return f"{line}\n{text}"


# ---- processes ------------------------------------------------------------------------------


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, what, argv, env, cwd, log_path):
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.procs.append((what, proc))
        return proc

    def stop_all(self):
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for what, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            # Anything left in its group (there should be nothing).
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs = []


def read(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def tail(path, lines=30):
    return "\n".join(read(path).splitlines()[-lines:])


# ---- comparison -----------------------------------------------------------------------------


def same(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def fmt_series(name, labels):
    inner = ",".join(
        '%s="%s"' % (k, v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
        for k, v in labels
    )
    return "%s{%s}" % (name, inner)


def compare(names, peer_text, ours_text, out):
    peer_meta, peer = parse_exposition(peer_text)
    ours_meta, ours = parse_exposition(ours_text)
    differences = 0
    notes = []
    total_peer = total_ours = 0
    out.append("")
    out.append("%-50s %8s %8s %8s %8s %8s" % ("metric", "peer", "ours", "only-p", "only-o", "value"))
    details = []
    for name in names:
        p = {k: v for k, v in peer.items() if k[0] == name}
        o = {k: v for k, v in ours.items() if k[0] == name}
        total_peer += len(p)
        total_ours += len(o)
        only_p = sorted(set(p) - set(o))
        only_o = sorted(set(o) - set(p))
        diffs = []
        for key in sorted(set(p) | set(o)):
            pv, ov = p.get(key, []), o.get(key, [])
            if len(pv) > 1 or len(ov) > 1:
                diffs.append((key, pv, ov, "sample repeated"))
            elif pv and ov and not same(pv[0], ov[0]):
                diffs.append((key, pv[0], ov[0], None))
        out.append(
            "%-50s %8d %8d %8d %8d %8d"
            % (name, len(p), len(o), len(only_p), len(only_o), len(diffs))
        )
        differences += len(only_p) + len(only_o) + len(diffs)
        for key in only_p:
            details.append("  only on the peer: %s %r" % (fmt_series(*key), p[key][0]))
        for key in only_o:
            details.append("  only on ours:     %s %r" % (fmt_series(*key), o[key][0]))
        for key, pv, ov, why in diffs:
            if why:
                details.append("  %s: %s peer=%r ours=%r" % (why, fmt_series(*key), pv, ov))
            else:
                delta = ov - pv
                details.append(
                    "  value differs:    %s peer=%r ours=%r (ours-peer=%.6g)"
                    % (fmt_series(*key), pv, ov, delta)
                )
        # HELP and TYPE: compared where both serve the family; a family without series
        # declared on one side only is a note.
        pm, om = peer_meta.get(name), ours_meta.get(name)
        if pm and om:
            for field in ("help", "type"):
                if pm.get(field) != om.get(field):
                    differences += 1
                    details.append(
                        "  %s differs:      %s peer=%r ours=%r"
                        % (field.upper(), name, pm.get(field), om.get(field))
                    )
        elif pm or om:
            if p or o:
                differences += 1
                details.append(
                    "  HELP/TYPE only on %s: %s" % ("the peer" if pm else "ours", name)
                )
            else:
                notes.append(
                    "note: %s has no series; only %s declares it (HELP/TYPE)"
                    % (name, "the peer" if pm else "ours")
                )
    out.append("%-50s %8d %8d" % ("total", total_peer, total_ours))
    peer_families = {
        n
        for n in peer_meta
        if not n.startswith(("python_", "process_"))
    }
    unnamed = sorted(peer_families - set(names))
    if unnamed:
        notes.append("note: the peer serves families the file's metric_name lines did not give: %s" % ", ".join(unnamed))
    if details:
        out.append("")
        out.append("Differences:")
        out.extend(details)
    out.extend(notes)
    return differences, total_peer, total_ours


# ---- main -----------------------------------------------------------------------------------


def child_env(endpoint, key_id, secret, extra, home):
    # Empty AWS config and credentials files: neither side reads the user's ~/.aws.
    for name in ("aws-config", "aws-credentials"):
        open(os.path.join(home, name), "w").close()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("ENVYAML_STRICT_DISABLE", "ENV_FILE")
    }
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.path.join(home, "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "aws-credentials"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def probe_key(endpoint):
    """Which of DEMO_KEYS the simulator knows: an unknown key id is refused with
    UnrecognizedClientException before anything else is checked, so one unsigned Cost Explorer
    request per key tells."""
    for key_id, secret in DEMO_KEYS:
        body = b'{"TimePeriod":{"Start":"2000-01-01","End":"2000-01-02"},"Granularity":"DAILY","Metrics":["UnblendedCost"]}'
        request = urllib.request.Request(
            endpoint + "/",
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "AWSInsightsIndexService.GetCostAndUsage",
                "Authorization": "AWS4-HMAC-SHA256 Credential=%s/20000101/us-east-1/ce/aws4_request, SignedHeaders=host, Signature=0" % key_id,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                return key_id, secret
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            if "UnrecognizedClient" not in text and "InvalidClientTokenId" not in text:
                return key_id, secret
        except OSError:
            pass
    return DEMO_KEYS[0]


def our_ready(text):
    """True once every integration has ended a refresh."""
    integrations = set(re.findall(r'^aws_cost_refresh_failures_total\{integration="([^"]*)"', text, re.M))
    done = set(re.findall(r'^aws_cost_refresh_success\{integration="([^"]*)"\}', text, re.M))
    return bool(integrations) and integrations <= done


def run(args, out):
    config_text = read(args.config)
    if not config_text:
        raise RunError(f"cannot read {args.config}")
    names = file_metric_names(config_text)
    if not names:
        raise RunError(f"no metric_name in {args.config}")
    extra = {}
    for item in args.env:
        if "=" not in item:
            raise RunError(f"--env {item!r} is not K=V")
        k, v = item.split("=", 1)
        extra[k] = v

    procs = Processes()

    def on_signal(signum, frame):
        procs.stop_all()
        sys.exit(2)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    work = tempfile.mkdtemp(prefix="compare-reference-")
    try:
        sim_port, peer_port, our_port = free_port(), free_port(), free_port()
        while len({sim_port, peer_port, our_port}) < 3:
            peer_port, our_port = free_port(), free_port()
        config = os.path.join(work, os.path.basename(args.config))
        with open(config, "w", encoding="utf-8") as f:
            f.write(with_port(config_text, peer_port))
        deadline = time.monotonic() + args.timeout

        sim_log = os.path.join(work, "simulator.log")
        sim = procs.start(
            "simulator",
            [args.exporter, "--demo.simulator", f"127.0.0.1:{sim_port}"]
            + (["--demo.scale", str(args.demo_scale)] if args.demo_scale else []),
            None,
            work,
            sim_log,
        )
        wait_for_port(sim_port, deadline, sim, "the simulator")
        endpoint = f"http://127.0.0.1:{sim_port}"
        if args.access_key_id:
            key_id, secret = args.access_key_id, args.secret_access_key or ""
        else:
            key_id, secret = probe_key(endpoint)
        env = child_env(endpoint, key_id, secret, extra, work)

        peer_log = os.path.join(work, "peer.log")
        peer = procs.start(
            "peer",
            [
                args.python,
                "-c",
                "MARKER = %r\nCONFIG = %r\n" % (MARKER, config) + BOOTSTRAP,
            ],
            env,
            args.reference,
            peer_log,
        )
        our_log = os.path.join(work, "ours.log")
        ours = procs.start(
            "ours",
            [
                args.exporter,
                "--config.file",
                config,
                "--web.listen-address",
                f"127.0.0.1:{our_port}",
            ],
            env,
            work,
            our_log,
        )

        out.append(f"config:    {args.config} ({len(names)} metrics: {', '.join(names)})")
        out.append(
            f"simulator: {endpoint} (payer key {key_id}"
            + (f", --demo.scale {args.demo_scale}" if args.demo_scale else "")
            + ")"
        )
        logs = "" if args.keep else ", removed at the end unless --keep"
        out.append(f"peer:      http://127.0.0.1:{peer_port}/metrics  (log {peer_log}{logs})")
        out.append(f"ours:      http://127.0.0.1:{our_port}/metrics  (log {our_log}{logs})")
        if extra:
            out.append("env:       " + " ".join(f"{k}={'***' if 'SECRET' in k else v}" for k, v in extra.items()))

        peer_text = ours_text = None
        while time.monotonic() < deadline and (peer_text is None or ours_text is None):
            if peer.poll() is not None:
                raise RunError(f"the peer exited with status {peer.returncode}:\n{tail(peer_log)}")
            if ours.poll() is not None:
                raise RunError(f"our exporter exited with status {ours.returncode}:\n{tail(our_log)}")
            if peer_text is None:
                before = read(peer_log)
                if MARKER in before:
                    try:
                        text = scrape(peer_port)
                    except OSError:
                        text = None
                    after = read(peer_log)
                    # A poll that started after the marker clears the metrics: scrape again
                    # at its end.
                    if text is not None and after.count(MARKER) == before.count(MARKER) and (
                        after[len(before):].find("Querying cost data") < 0
                    ):
                        peer_text = text
            if ours_text is None:
                try:
                    text = scrape(our_port)
                except OSError:
                    text = None
                if text is not None and our_ready(text):
                    ours_text = text
            if peer_text is None or ours_text is None:
                time.sleep(0.2)
        if peer_text is None or ours_text is None:
            missing = " and ".join(
                w for w, t in (("the peer", peer_text), ("ours", ours_text)) if t is None
            )
            raise RunError(
                f"{missing} did not finish a poll within {args.timeout}s\n--- peer log ---\n{tail(peer_log)}\n--- our log ---\n{tail(our_log)}"
            )
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            for name, text in (("peer.prom", peer_text), ("ours.prom", ours_text)):
                with open(os.path.join(args.save, name), "w", encoding="utf-8") as f:
                    f.write(text)
            for path in (peer_log, our_log, sim_log):
                shutil.copy(path, args.save)

        # What went wrong on either side, for the reader.
        peer_errors = [l for l in read(peer_log).splitlines() if " ERROR " in l]
        our_errors = [
            l for l in read(our_log).splitlines() if "level=error" in l or "level=warn" in l
        ]
        success = re.findall(r'^aws_cost_refresh_success\{integration="([^"]*)"\} (\S+)', ours_text, re.M)
        out.append(
            "ours:      refresh_success "
            + ", ".join(f"{i}={v}" for i, v in success)
        )
        for l in peer_errors[:20]:
            out.append(f"peer log:  {l}")
        for l in our_errors[:20]:
            out.append(f"our log:   {l}")

        differences, n_peer, n_ours = compare(names, peer_text, ours_text, out)
        out.append("")
        if differences:
            out.append(f"DIFFERENT: {differences} difference(s) ({n_peer} series on the peer, {n_ours} on ours)")
            return 1
        out.append(f"IDENTICAL: {n_peer} series on each side")
        return 0
    finally:
        procs.stop_all()
        for s, handler in old.items():
            signal.signal(s, handler)
        if args.keep:
            out.append(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="directory with the peer's main.py and app/")
    parser.add_argument("--python", required=True, help="interpreter with the peer's requirements")
    parser.add_argument("--exporter", required=True, help="aws-cost-exporter binary (also the simulator)")
    parser.add_argument("--config", required=True, help="electrolux configuration file")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="environment for both exporters (repeatable)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for both (default 60)")
    parser.add_argument("--access-key-id", help="default-chain key of both (default: the simulator's demo payer key, probed)")
    parser.add_argument("--secret-access-key")
    parser.add_argument("--demo-scale", type=int, help="accounts in the simulated organization (--demo.scale; more accounts, more pages)")
    parser.add_argument("--save", metavar="DIR", help="save both pages and the logs here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    for path in (os.path.join(args.reference, "main.py"), os.path.join(args.reference, "app", "exporter.py")):
        if not os.path.isfile(path):
            parser.error(f"{path} is missing")
    args.reference = os.path.abspath(args.reference)
    args.exporter = os.path.abspath(args.exporter) if os.sep in args.exporter else args.exporter
    args.config = os.path.abspath(args.config)
    out = []
    try:
        status = run(args, out)
    except RunError as e:
        out.append(f"ERROR: {e}")
        status = 2
    print("\n".join(out))
    return status


if __name__ == "__main__":
    sys.exit(main())
