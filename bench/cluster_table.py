"""Prints bench/cluster's table from the reports and metrics in the directory it is given."""

import glob
import json
import os
import re
import sys

d = sys.argv[1]


def report(name):
    with open(os.path.join(d, name + ".json")) as f:
        return json.load(f)


def metric_sum(name, prefix):
    total = 0.0
    for path in glob.glob(os.path.join(d, prefix + "-n*.metrics")):
        for line in open(path):
            if line.startswith(name + " "):
                total += float(line.split()[1])
    return total


def quantiles(name, prefix):
    """The forwarding latency quantiles (seconds → ms), the busiest node's summary."""
    best = {}
    for path in glob.glob(os.path.join(d, prefix + "-n*.metrics")):
        found = {}
        for line in open(path):
            m = re.match(name + r'\{quantile="([0-9.]+)"\} (\S+)', line)
            if m:
                found[m.group(1)] = float(m.group(2)) * 1000
        if found and found.get("0.99", 0) >= best.get("0.99", 0):
            best = found
    return best


print()
print("| nodes | msgs/s acked | PUBACK p50 | PUBACK p99 | forwarded | forward p50 | forward p99 |")
print("|---|---|---|---|---|---|---|")
for n in (1, 3):
    r = report(f"c{n}")
    forwarded = metric_sum("doppel_cluster_forwarded_total", f"c{n}")
    share = forwarded / r["sent"] * 100 if r["sent"] else 0
    q = quantiles("doppel_cluster_forward_seconds", f"c{n}")
    p = r["puback_latency_ms"]
    fq = (f"{q['0.5']:.1f} ms", f"{q['0.99']:.1f} ms") if q else ("–", "–")
    print(f"| {n} | {r['achieved_rate']:,.0f} | {p['p50']:.1f} ms | {p['p99']:.1f} ms "
          f"| {share:.0f} % | {fq[0]} | {fq[1]} |")

r = report("failover")
started = float(open(os.path.join(d, "failover_started_at")).read())
killed = float(open(os.path.join(d, "killed_at")).read()) - started
points = r["timeline"]
before = [p["acked_rate"] for p in points if p["t_s"] < killed - 1]
steady = sorted(before)[len(before) // 2] if before else 0
print()
print(f"failover: kill -9 of n3 at t = {killed:.1f} s; steady rate {steady:,.0f} msgs/s; "
      f"reconnects {r['reconnects']}; unacknowledged at the loss "
      f"{r['errors'].get('unacknowledged_at_loss', 0)}")
print()
print("| t (s) | acked msgs/s |")
print("|---|---|")
for p in points:
    if killed - 3 <= p["t_s"] <= killed + 15:
        mark = " ← kill -9" if abs(p["t_s"] - killed) < 0.5 else ""
        print(f"| {p['t_s']:.0f} | {p['acked_rate']:,.0f}{mark} |")
# The failover time: from the kill to the first second whose rate is back to 95 % of steady.
after = [p for p in points if p["t_s"] > killed + 0.5]
back = next((p["t_s"] for p in after if p["acked_rate"] >= steady * 0.95), None)
dip = min((p["acked_rate"] for p in after), default=0)
if back is not None:
    print(f"\nlowest rate after the kill {dip:,.0f} msgs/s ({dip / steady * 100:.0f} % of steady); "
          f"back to 95 % of steady {back - killed:.1f} s after the kill")
print()
print("shard assignment (1024 shards, rendezvous hashing):")
print(open(os.path.join(d, "assignment.txt")).read())
