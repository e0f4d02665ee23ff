"""bench/table.py: the table bench/run prints, from the simulator's JSON reports of one run."""
import json
import os
import sys


def load(directory, name):
    path = os.path.join(directory, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main():
    directory, mosquitto_rss, node_red_rss, million_rss, twins, restart_ms = sys.argv[1:7]
    mosq, doppel, latency, pg, nr, million = (
        load(directory, n)
        for n in ("mosquitto", "doppel", "doppel-latency", "doppel-postgres", "node-red", "million"))
    rows = []

    def row(system, rate, what, lat, rss):
        rows.append((system, f"{rate:,.0f}" if rate is not None else "-", what,
                     f"{lat['p50']:.1f} / {lat['p99']:.1f}" if lat else "-", rss))

    if mosq:
        row("Mosquitto pass-through", mosq["observed_rate"], "delivered to the subscriber",
            mosq["end_to_end_latency_ms"], f"{mosquitto_rss} MB")
    def node_rows(system, report):
        """A doppel run: PUBACK latency and memory, then its WebSocket sample."""
        mem = report["timeline"][-1]["rss_bytes"] / 1e6 if report["timeline"] else 0
        row(system, report["achieved_rate"], "PUBACK after durable commit",
            report["puback_latency_ms"], f"{mem:.0f} MB")
        row("  WebSocket sample", None, f"{report['ws_changes']:,} changes, {report['ws_resyncs']:,} resyncs",
            report["end_to_end_latency_ms"], "")

    if doppel:
        node_rows("doppel end to end", doppel)
    if latency:
        node_rows(f"doppel at {latency['offered_rate']:,.0f}/s", latency)
    if pg:
        node_rows("doppel on PostgreSQL", pg)
    if nr:
        row("Node-RED flow", nr["observed_rate"], "WebSocket frames out",
            nr["end_to_end_latency_ms"], f"{node_red_rss} MB")

    print()
    print(f"{'system':<24} {'msgs/s':>10}  {'measured as':<32} {'p50 / p99 ms':>16}  {'RSS':>8}")
    print("-" * 96)
    for system, rate, what, lat, rss in rows:
        print(f"{system:<24} {rate:>10}  {what:<32} {lat:>16}  {rss:>8}")
    print()
    if doppel and mosq and mosq["observed_rate"]:
        print(f"doppel / Mosquitto  {doppel['achieved_rate'] / mosq['observed_rate']:.2f} x   (target >= 1.5 x)")
    if doppel and nr and nr["observed_rate"]:
        print(f"doppel / Node-RED   {doppel['achieved_rate'] / nr['observed_rate']:.1f} x   (target >= 10 x)")
    if doppel and pg and doppel["achieved_rate"]:
        print(f"PostgreSQL / fjall  {pg['achieved_rate'] / doppel['achieved_rate']:.2f} x   (doppel end to end on each store)")
    if doppel:
        print(f"doppel ingest       {doppel['achieved_rate']:,.0f} msgs/s (target >= 100,000)")
    if latency:
        print(f"doppel latency      publish -> WebSocket change p99 {latency['end_to_end_latency_ms']['p99']:.1f} ms "
              f"at {latency['achieved_rate']:,.0f} msgs/s (target <= 25 ms at 50,000)")
    if million:
        twins = int(twins)
        active = million["timeline"][-1]["twins_active"] if million["timeline"] else 0
        rss = million["timeline"][-1]["rss_bytes"] if million["timeline"] else 0
        print(f"{twins:,} twins       node RSS {rss / 1e6:,.0f} MB ({million_rss} MB at exit) with {active:,} active twins: "
              f"{rss / max(active, 1):,.0f} B per twin (target <= 1,000 MB in all); "
              f"registered in {million['registration_s']:.0f} s, {million['acked']:,} samples at {million['achieved_rate']:,.0f}/s")
    if restart_ms != "?":
        print(f"restart             a node with {int(twins):,} persisted twins served a shadow {int(restart_ms) / 1000:.2f} s "
              f"after it was started (target <= 5 s)")
    for name, report in (("mosquitto", mosq), ("doppel", doppel), ("doppel-latency", latency),
                         ("node-red", nr), ("million", million)):
        if report and report["errors"]:
            print(f"errors in {name}: {report['errors']}")


main()
