#!/usr/bin/env python3
"""Sums the fuzz campaigns in fuzz/logs/ per target: CPU-minutes, executions, the largest
edge coverage reached, and the crash/timeout/OOM artifacts libFuzzer wrote. Prints the
README's table (Markdown). Standard library only.

    python3 fuzz/summary.py

CPU time is the `cpu_seconds` line fuzz/run_all.sh appends (GNU time, user + sys); older
logs without it ran alone on one core, so their wall time (`Done N runs in S second(s)`)
is their CPU time.
"""
import glob
import os
import re

ROOT = os.path.dirname(os.path.abspath(__file__))


TARGETS = {f[: -len(".rs")] for f in os.listdir(os.path.join(ROOT, "fuzz_targets"))}


def target_of(path):
    name = os.path.basename(path)[: -len(".log")]
    name = re.sub(r"-\d{8}T\d{4}$", "", name)
    if name not in TARGETS:
        name = re.sub(r"\d+$", "", name)  # a second log of one campaign: npy2 -> npy
    return name


def main():
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
    print("| target | CPU-minutes | executions | edges covered | findings (crash, timeout, OOM) |")
    print("|---|---|---|---|---|")
    for name, t in totals.items():
        print(f"| `{name}` | {t['cpu'] / 60:.1f} | {t['execs']:,} | {t['cov']} | {t['found']} |")


if __name__ == "__main__":
    main()
