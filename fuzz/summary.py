#!/usr/bin/env python3
"""Sums the fuzz campaigns per target: CPU-minutes, executions, the largest edge coverage
reached, and the crash/timeout/OOM artifacts libFuzzer wrote. Prints the README's table
(Markdown). Standard library only.

    python3 fuzz/summary.py [--record]

The logs of fuzz/logs/ are not committed (they are large); fuzz/campaigns.csv keeps the
totals of earlier campaigns, so a fresh checkout's table still counts them. `--record`
adds the current logs' totals to that file (then the logs can go).

CPU time is the `cpu_seconds` line fuzz/run_all.sh appends (GNU time, user + sys); older
logs without it ran alone on one core, so their wall time (`Done N runs in S second(s)`)
is their CPU time.
"""
import csv
import glob
import os
import re
import sys
from datetime import date

ROOT = os.path.dirname(os.path.abspath(__file__))


TARGETS = {f[: -len(".rs")] for f in os.listdir(os.path.join(ROOT, "fuzz_targets"))}


def target_of(path):
    name = os.path.basename(path)[: -len(".log")]
    name = re.sub(r"-\d{8}T\d{4}$", "", name)
    if name not in TARGETS:
        name = re.sub(r"\d+$", "", name)  # a second log of one campaign: npy2 -> npy
    return name


RECORD = os.path.join(ROOT, "campaigns.csv")
FIELDS = ["target", "cpu_seconds", "executions", "edges", "findings", "until"]


def recorded():
    """The committed totals of earlier campaigns, per target."""
    totals = {}
    if os.path.exists(RECORD):
        with open(RECORD, newline="") as f:
            for row in csv.DictReader(line for line in f if not line.startswith("#")):
                t = totals.setdefault(row["target"], {"cpu": 0.0, "execs": 0, "cov": 0, "found": 0})
                t["cpu"] += float(row["cpu_seconds"])
                t["execs"] += int(row["executions"])
                t["cov"] = max(t["cov"], int(row["edges"]))
                t["found"] += int(row["findings"])
    return totals


def from_logs():
    totals = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "logs", "*.log"))):
        with open(path, errors="replace") as f:
            text = f.read()
        t = totals.setdefault(target_of(path), {"cpu": 0.0, "execs": 0, "cov": 0, "found": 0})
        cpu = re.findall(r"cpu_seconds: ([\d.]+) user ([\d.]+) sys", text)
        done = re.findall(r"Done \d+ runs in (\d+) second", text)
        if cpu:
            t["cpu"] += sum(float(u) + float(s) for u, s in cpu)
        else:
            t["cpu"] += sum(float(d) for d in done)
        t["execs"] += sum(int(n) for n in re.findall(r"stat::number_of_executed_units: (\d+)", text))
        covs = [int(c) for c in re.findall(r"cov: (\d+)", text)]
        t["cov"] = max([t["cov"]] + covs)
        t["found"] += len(re.findall(r"Test unit written to .*/(crash|timeout|oom|leak)-", text))
    return totals


def main():
    logs = from_logs()
    if "--record" in sys.argv:
        new = not os.path.exists(RECORD)
        with open(RECORD, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(FIELDS)
            for name, t in sorted(logs.items()):
                w.writerow([name, round(t["cpu"], 1), t["execs"], t["cov"], t["found"], date.today()])
        return
    totals = recorded()
    for name, t in logs.items():
        r = totals.setdefault(name, {"cpu": 0.0, "execs": 0, "cov": 0, "found": 0})
        r["cpu"] += t["cpu"]
        r["execs"] += t["execs"]
        r["cov"] = max(r["cov"], t["cov"])
        r["found"] += t["found"]
    print("| target | CPU-minutes | executions | edges covered | findings (crash, timeout, OOM) |")
    print("|---|---|---|---|---|")
    for name, t in sorted(totals.items()):
        print(f"| `{name}` | {t['cpu'] / 60:.1f} | {t['execs']:,} | {t['cov']} | {t['found']} |")


if __name__ == "__main__":
    main()
