#!/usr/bin/env python3
"""Checks of the alert rules beyond promtool, for tests/e2e/run.sh's step `rules`.

  rules.py runbooks RULES RUNBOOKS
      Every alert has a runbook_url at RUNBOOKS' base URL (the rules file's header names it)
      whose anchor is a section of RUNBOOKS, and every section of RUNBOOKS is an alert's.
  rules.py chart HELM CHART RULES WORK
      The chart's PrometheusRule with the default values is the rules file; with overridden
      thresholds, runbook base, disabled alerts and additional labels, it is the rules file with
      exactly those changes.
"""

import copy
import re
import subprocess
import sys

import yaml

BASE = "https://github.com/aws-cost-exporter/aws-cost-exporter/blob/main/docs/runbooks.md"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def say(message):
    print(message, flush=True)


def anchor(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def alerts_of(rules):
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def cmd_runbooks(rules_path, runbooks_path):
    rules = yaml.safe_load(open(rules_path, encoding="utf-8"))
    text = open(runbooks_path, encoding="utf-8").read()
    sections = [anchor(m.group(1)) for m in re.finditer(r"^## (.+)$", text, re.M)]
    if len(sections) != len(set(sections)):
        fail(f"{runbooks_path}: a section appears twice: {sections}")
    alerts = alerts_of(rules)
    names = set()
    for alert in alerts:
        name = alert["alert"]
        names.add(name)
        url = alert.get("annotations", {}).get("runbook_url")
        if url is None:
            fail(f"{name} has no runbook_url annotation")
        if url != f"{BASE}#{anchor(name)}":
            fail(f"{name}: runbook_url {url!r} is not {BASE}#{anchor(name)}")
        if anchor(name) not in sections:
            fail(f"{name}: {runbooks_path} has no section #{anchor(name)}")
    orphans = sorted(set(sections) - {anchor(n) for n in names})
    if orphans:
        fail(f"{runbooks_path}: sections without an alert: {orphans}")
    say(f"  runbooks: {len(names)} alerts, each with a runbook_url whose section exists; "
        f"{len(sections)} sections, each an alert's")


def render(helm, chart, work, name, args):
    out = f"{work}/prometheusrule-{name}.yaml"
    cmd = [helm, "template", "e2e", chart, "--namespace", "monitoring", "--set", "demo=true",
           "--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"] + args
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"helm template ({name}): {done.stderr}")
    with open(out, "w", encoding="utf-8") as f:
        f.write(done.stdout)
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    if len(docs) != 1 or docs[0]["kind"] != "PrometheusRule":
        fail(f"helm template ({name}): not one PrometheusRule: {out}")
    return docs[0]


def check_equal(what, got, want):
    if got != want:
        import difflib
        diff = "\n".join(difflib.unified_diff(
            yaml.safe_dump(want, sort_keys=True, width=1000).splitlines(),
            yaml.safe_dump(got, sort_keys=True, width=1000).splitlines(), "want", "got", lineterm=""))
        fail(f"{what}:\n{diff}")


def cmd_chart(helm, chart, rules_path, work):
    rules = yaml.safe_load(open(rules_path, encoding="utf-8"))
    default = render(helm, chart, work, "default", [])
    check_equal("PrometheusRule with the default values against the rules file",
                default["spec"]["groups"], rules["groups"])
    for label in ("release", "team"):
        if label in default["metadata"]["labels"]:
            fail(f"default PrometheusRule has label {label}")
    say("  chart: PrometheusRule with the default values == deploy/prometheus/aws-cost-exporter.rules.yml")


    overrides = {"prometheusRule": {
        "labels": {"release": "kube-prometheus-stack"},
        "additionalLabels": {"team": "finops"},
        "runbookBaseUrl": "https://wiki.example.org/aws-cost/runbooks",
        "disabled": ["AwsCostAnomalyOpen", "AwsCostConfigReloadFailed"],
        "thresholds": {"spikeFactor": 2, "spikeMinUsd": 50, "dataStaleHours": 25, "expiryDays": 45,
                       "utilizationRatio": 0.75, "coverageDropRatio": 0.05},
    }}
    with open(f"{work}/prometheusrule-overrides-values.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(overrides, f)
    args = ["-f", f"{work}/prometheusrule-overrides-values.yaml"]
    got = render(helm, chart, work, "overrides", args)
    check_equal("PrometheusRule labels", {k: got["metadata"]["labels"].get(k) for k in ("release", "team")},
                {"release": "kube-prometheus-stack", "team": "finops"})

    # The rules file with exactly the overridden changes, made here independently.
    want = copy.deepcopy(rules["groups"])
    edits = {
        "AwsCostServiceDailySpike": [("expr", "> 1.5 *", "> 2 *"), ("expr", "> 20\n", "> 50\n"),
                                     ("description", "more than 1.5 times", "more than 2 times"),
                                     ("description", "at least 20 USD more", "at least 50 USD more")],
        "AwsCostDataStale": [("expr", "> 13 * 3600", "> 25 * 3600")],
        "AwsCostSavingsPlanExpiring": [("expr", "< 30 > 0", "< 45 > 0")],
        "AwsCostReservationExpiring": [("expr", "< 30 > 0", "< 45 > 0")],
        "AwsCostSavingsPlanUtilizationLow": [("expr", "< 0.8)", "< 0.75)"), ("description", "under 80%", "under 75%")],
        "AwsCostReservationUtilizationLow": [("expr", "< 0.8)", "< 0.75)"), ("description", "under 80%", "under 75%")],
        "AwsCostSavingsPlansCoverageDropped": [("expr", "offset 7d) - 0.1", "offset 7d) - 0.05")],
        "AwsCostReservationCoverageDropped": [("expr", "offset 7d) - 0.1", "offset 7d) - 0.05")],
    }
    for group in want:
        group["rules"] = [r for r in group["rules"]
                          if r.get("alert") not in ("AwsCostAnomalyOpen", "AwsCostConfigReloadFailed")]
        for rule in group["rules"]:
            for field, old, new in edits.get(rule.get("alert"), []):
                where = rule if field == "expr" else rule["annotations"]
                if where[field].count(old) != 1:
                    fail(f"{rule['alert']}: {old!r} is not once in its {field}")
                where[field] = where[field].replace(old, new)
            if "alert" in rule:
                rule["annotations"]["runbook_url"] = rule["annotations"]["runbook_url"].replace(
                    BASE, "https://wiki.example.org/aws-cost/runbooks")
    want = [g for g in want if g["rules"]]
    check_equal("PrometheusRule with overrides against the rules file with those changes",
                got["spec"]["groups"], want)
    with open(f"{work}/prometheusrule-overrides.rules.yml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": got["spec"]["groups"]}, f)
    done = subprocess.run(["promtool", "check", "rules", f"{work}/prometheusrule-overrides.rules.yml"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"promtool check rules of the overridden PrometheusRule: {done.stdout}{done.stderr}")
    say("  chart: with overridden thresholds, runbookBaseUrl, disabled and additionalLabels, the "
        "PrometheusRule is the rules file with exactly those changes")
    return got


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "runbooks" and len(sys.argv) == 4:
        cmd_runbooks(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 2 and sys.argv[1] == "chart" and len(sys.argv) == 6:
        cmd_chart(*sys.argv[2:6])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
