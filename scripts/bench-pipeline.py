#!/usr/bin/env python3
"""Whole-pipeline figures for BENCHMARKS.md, on a running stack (scripts/stack.sh up).

For each rate given: CPU and RSS of every process of the stack (from /proc: utime+stime and
VmRSS/VmHWM) at idle and across an open-loop run of `gridclue-load open`, with that run's latency
and freshness. Prints a Markdown table per run and writes the raw JSON next to it.

    scripts/bench-pipeline.py --rates 1000,5000 --duration 30 [--load target/release/gridclue-load]

Environment: var/stack.env of the stack (sourced by the caller or read from GRIDCLUE_VAR_DIR).
"""
import argparse
import json
import os
import subprocess
import sys
import time

PROCS = ["ingest", "enrich", "sink", "dashboard-api", "devbroker", "clickhouse"]
TICK = os.sysconf("SC_CLK_TCK")


def var_dir():
    return os.environ.get("GRIDCLUE_VAR_DIR", os.path.join(os.getcwd(), "var"))


def stack_env():
    env = dict(os.environ)
    path = os.path.join(var_dir(), "stack.env")
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env.setdefault(k, v)
    return env


def pid_of(name):
    try:
        with open(os.path.join(var_dir(), "run", name + ".pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def sample(pid):
    """(cpu seconds, rss MB, peak rss MB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, rss, hwm


def sample_all():
    out = {}
    for name in PROCS:
        pid = pid_of(name)
        if pid:
            try:
                out[name] = sample(pid)
            except OSError:
                pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,5000", help="req/s, comma separated")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--idle", type=float, default=10, help="seconds of idle sampling")
    ap.add_argument("--load", default="target/release/gridclue-load")
    ap.add_argument("--mix", default="report=1", help="gridclue-load open --mix")
    ap.add_argument("--out", default=None, help="directory for the JSON (default var/bench)")
    ap.add_argument("extra", nargs="*", help="more gridclue-load open arguments (after --)")
    args = ap.parse_args()
    env = stack_env()
    out_dir = args.out or os.path.join(var_dir(), "bench")
    os.makedirs(out_dir, exist_ok=True)

    t0, s0 = time.monotonic(), sample_all()
    time.sleep(args.idle)
    t1, s1 = time.monotonic(), sample_all()
    print(f"### idle ({args.idle:.0f} s)\n")
    print("| process | CPU % of one core | RSS MB |")
    print("|---|---|---|")
    for name in PROCS:
        if name in s0 and name in s1:
            cpu = (s1[name][0] - s0[name][0]) / (t1 - t0) * 100
            print(f"| {name} | {cpu:.1f} | {s1[name][1]:.0f} |")
    print()

    for rate in [float(r) for r in args.rates.split(",")]:
        before, tb = sample_all(), time.monotonic()
        cmd = [args.load, "open", "--rate", str(rate), "--duration", str(args.duration),
               "--mix", args.mix, "--json"] + args.extra
        print(f"running: {' '.join(cmd)}", file=sys.stderr)
        run = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True)
        after, ta = sample_all(), time.monotonic()
        report = json.loads(run.stdout)
        path = os.path.join(out_dir, f"open-{int(rate)}.json")
        with open(path, "w") as f:
            json.dump({"report": report, "before": before, "after": after,
                       "seconds": ta - tb}, f, indent=2)
        clues = max(report["clues_acked"], 1)
        fr, lat = report["freshness"]["ms"], report["latency"]
        print(f"### {rate:.0f} req/s for {args.duration:.0f} s (mix {args.mix})\n")
        print(f"{report['clues_acked']} clues acknowledged ({report['clues_per_s']:.0f}/s); "
              f"{report['errors']} failed, {report['throttled']} throttled; latency from the "
              f"scheduled send p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} / max "
              f"{lat['max_ms']:.1f} ms; freshness (202 → visible) p50 {fr['p50_ms']:.0f} / p99 "
              f"{fr['p99_ms']:.0f} / max {fr['max_ms']:.0f} ms over "
              f"{report['freshness']['visible']} probes ({report['freshness']['timed_out']} never "
              f"visible).\n")
        print("| process | CPU % of one core | CPU µs per clue | RSS MB at end | peak RSS MB |")
        print("|---|---|---|---|---|")
        for name in PROCS:
            if name in before and name in after:
                cpu = after[name][0] - before[name][0]
                print(f"| {name} | {cpu / (ta - tb) * 100:.0f} | {cpu / clues * 1e6:.0f} | "
                      f"{after[name][1]:.0f} | {after[name][2]:.0f} |")
        print(f"\n(raw: {os.path.relpath(path)})\n")


if __name__ == "__main__":
    main()
