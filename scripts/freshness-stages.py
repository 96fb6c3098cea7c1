#!/usr/bin/env python3
"""Where a clue's freshness goes, stage by stage, on a running stack (scripts/stack.sh up).

Posts probe reports one at a time (optionally while `gridclue-load open` adds background load)
and, for each, polls every few milliseconds until it shows up at each stage:

    posted → 202 (ingest, after the broker's ack)
          → processed_at_ms (enrich stamped the fact; read back from ClickHouse)
          → visible in clue_events (the sink's insert of the fact acknowledged)
          → visible in `clues FINAL` (the latest-state table)
          → 200 from GET /v1/clues/{id} (what the load tool's freshness probes wait for)

and prints p50/p90/p99/max of each stage's share and of the whole. Polling resolution is
--poll-ms (each poll is itself a ClickHouse query, so it also costs CPU).

    scripts/freshness-stages.py --probes 40 --every-ms 250
    scripts/freshness-stages.py --probes 40 --background-rate 1000 --load target/release/gridclue-load

Environment: var/stack.env of the stack (read from GRIDCLUE_VAR_DIR, else ./var).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def var_dir():
    return os.environ.get("GRIDCLUE_VAR_DIR", os.path.join(os.getcwd(), "var"))


def stack_env():
    env = dict(os.environ)
    with open(os.path.join(var_dir(), "stack.env")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env.setdefault(k, v)
    return env


def inside(x, y, ring):
    """Ray casting: is (x, y) inside the ring?"""
    n, hit = len(ring), False
    for i in range(n):
        (x1, y1), (x2, y2) = ring[i], ring[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            hit = not hit
    return hit


def sample_points(path, n, rng):
    with open(path) as f:
        grids = [g for g in json.load(f)["features"] if g["geometry"]["type"] == "Polygon"]
    points = []
    while len(points) < n:
        ring = rng.choice(grids)["geometry"]["coordinates"][0]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        x, y = rng.uniform(min(xs), max(xs)), rng.uniform(min(ys), max(ys))
        if inside(x, y, ring):
            points.append((x, y))
    return points


class Stack:
    def __init__(self, env):
        self.ingest = env["GRIDCLUE_INGEST_URL"]
        self.ch = env["GRIDCLUE_CLICKHOUSE_URL"]
        self.db = env["GRIDCLUE_CLICKHOUSE_DATABASE"]
        self.token = env["GRIDCLUE_DEMO_REPORTER_TOKEN"]

    def query(self, sql):
        url = f"{self.ch}/?database={urllib.parse.quote(self.db)}&query={urllib.parse.quote(sql)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode().strip()

    def post(self, clue_id, lon, lat):
        body = json.dumps({"clue_id": clue_id, "category": "manhole_cover", "lat": lat,
                           "lon": lon, "description": "freshness probe"}).encode()
        req = urllib.request.Request(f"{self.ingest}/v1/clues", data=body, method="POST", headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Idempotency-Key": clue_id})
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 202:
                raise RuntimeError(f"POST answered {r.status}")

    def api_visible(self, clue_id):
        req = urllib.request.Request(f"{self.ingest}/v1/clues/{clue_id}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise


def wait_for(check, poll_s, deadline):
    while time.time() < deadline:
        if check():
            return time.time()
        time.sleep(poll_s)
    return None


def probe(stack, clue_id, lon, lat, poll_s, timeout_s):
    """Times in ms after the POST was sent, per stage (None: not seen before the timeout)."""
    t0 = time.time()
    stack.post(clue_id, lon, lat)
    acked = time.time()
    deadline = acked + timeout_s
    seen = {}
    uuid_sql = f"toUUID('{clue_id}')"  # a uuid4 this script made, not user input

    def events():
        v = stack.query(f"SELECT processed_at_ms FROM clue_events WHERE clue_id = {uuid_sql} AND seq = 0 LIMIT 1")
        if v:
            seen["processed"] = int(v) / 1000.0
        return bool(v)

    def clues():
        return stack.query(f"SELECT count() FROM clues FINAL WHERE clue_id = {uuid_sql}") not in ("", "0")

    checks = {"clue_events": events, "clues FINAL": clues,
              "GET /v1/clues": lambda: stack.api_visible(clue_id)}
    threads = []
    for name, check in checks.items():
        def run(name=name, check=check):
            seen[name] = wait_for(check, poll_s, deadline)
        t = threading.Thread(target=run)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    ms = lambda t: None if t is None else (t - t0) * 1000.0
    return {"202": ms(acked), "enrich processed": ms(seen.get("processed")),
            **{k: ms(seen[k]) for k in checks}}


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100.0 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--every-ms", type=float, default=300, help="pause between probes")
    ap.add_argument("--poll-ms", type=float, default=10)
    ap.add_argument("--timeout-s", type=float, default=30)
    ap.add_argument("--background-rate", type=float, default=0,
                    help="run gridclue-load open at this rate (reports) meanwhile")
    ap.add_argument("--load", default="target/debug/gridclue-load")
    ap.add_argument("--map", default="data/district/grids.geojson")
    ap.add_argument("--json", action="store_true", help="print the raw probes as JSON too")
    args = ap.parse_args()
    env = stack_env()
    stack = Stack(env)
    rng = random.Random(2026)
    points = sample_points(args.map, args.probes, rng)
    background = None
    if args.background_rate > 0:
        secs = args.probes * (args.every_ms / 1000.0 + 1.5) + 10
        background = subprocess.Popen(
            [args.load, "open", "--rate", str(args.background_rate), "--duration", str(int(secs)),
             "--mix", "report=1", "--reporters", "1", "--sse", "0", "--probe-every-ms", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)  # past the load's ramp
    results = []
    try:
        for i, (lon, lat) in enumerate(points):
            r = probe(stack, str(uuid.uuid4()), lon, lat, args.poll_ms / 1000.0, args.timeout_s)
            results.append(r)
            print(f"probe {i + 1}/{args.probes}: " + ", ".join(
                f"{k} {'-' if v is None else f'{v:.0f}'}" for k, v in r.items()) + " ms",
                  file=sys.stderr)
            time.sleep(args.every_ms / 1000.0)
    finally:
        if background:
            background.terminate()
            background.wait()
    stages = list(results[0].keys())
    load = os.getloadavg()
    print(f"{len(results)} probes, background {args.background_rate:.0f} clues/s, poll "
          f"{args.poll_ms:.0f} ms, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| stage (ms after the POST) | p50 | p90 | p99 | max | share of p50 |")
    print("|---|---|---|---|---|---|")
    prev, total = None, None
    complete = [r for r in results if all(v is not None for v in r.values())]
    if complete:
        total = pct([r[stages[-1]] for r in complete], 50)
    for s in stages:
        vals = [r[s] for r in complete]
        if not vals:
            continue
        step = [r[s] - (r[prev] if prev else 0) for r in complete]
        share = pct(step, 50) / total * 100 if total else 0
        print(f"| {s} (+{pct(step, 50):.0f} p50 from the previous) | {pct(vals, 50):.0f} | "
              f"{pct(vals, 90):.0f} | {pct(vals, 99):.0f} | {max(vals):.0f} | {share:.0f}% |")
        prev = s
    missing = len(results) - len(complete)
    if missing:
        print(f"\n{missing} probes did not reach every stage within {args.timeout_s:.0f} s")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
