#!/usr/bin/env python3
"""Turns bench/run.sh raw results into the Markdown tables of BENCHMARKS.md.

Usage: report.py RESULTS.jsonl POLICY.json AUDIT.json
Each proxy figure is the median over rounds; ratios are to the direct figure of the same
run (targets were interleaved per round, so background load hits them alike).
"""
import json
import statistics
import sys
from collections import defaultdict


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def check(ok):
    return "met" if ok else "**missed**"


def gbench(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median":
            out[b["run_name"]] = b
    return data.get("context", {}), out


def main():
    rows = load_jsonl(sys.argv[1])
    machine = [r for r in rows if r["kind"] == "machine"]
    print("## Machine\n")
    print(f"{machine[0]['cores']} cores ({machine[0]['cpu']}); load average at start "
          f"{machine[0]['load']}, at end {machine[-1]['load']}; {machine[0]['date']}; "
          f"tree {machine[0].get('rev', '?')}.\n")

    # ---------------------------------------------------------------- policy
    ctx, pol = gbench(sys.argv[2])
    print("## Policy: decide() (policy_bench, median of 5 repetitions)\n")
    print("| catalogue | no body | 4 KiB JSON body |")
    print("| --- | ---: | ---: |")
    for n in (10, 100, 1000):
        nb = pol.get(f"BM_decide_no_body/{n}")
        jb = pol.get(f"BM_decide_json_4k/{n}")
        def us(b):
            if not b:
                return "n/a"
            t = b["real_time"] * {"ns": 1e-3, "us": 1, "ms": 1e3}[b["time_unit"]]
            return f"{t:.2f} µs"
        print(f"| {n} actions | {us(nb)} | {us(jb)} |")
    print("\nTargets: ≤ 2 µs without body, ≤ 10 µs with a 4 KiB JSON body, roughly flat "
          "from 10 to 1,000 actions.\n")

    # ---------------------------------------------------------------- audit
    _, aud = gbench(sys.argv[3])
    print("## Audit (audit_bench, median of 3 repetitions)\n")
    print("| benchmark | figure |")
    print("| --- | ---: |")
    for name, b in aud.items():
        if "items_per_second" in b:
            print(f"| {name} | {b['items_per_second']:,.0f} records/s |")
        elif "bytes_per_second" in b:
            print(f"| {name} | {b['bytes_per_second'] / 1e6:,.0f} MB/s |")
        else:
            print(f"| {name} | {b['real_time']:.2f} {b['time_unit']} |")
    print("\nTargets: ≥ 100,000 records/s appended (redaction + hash chain, 2 KiB pair, "
          "default durability); ≥ 200 MB/s redaction on JSON.\n")

    # ---------------------------------------------------------------- proxy
    http = defaultdict(list)
    for r in rows:
        if r["kind"] == "http":
            http[(r["target"], r["conns"])].append(r)
    targets = []
    for (t, _c) in http:
        if t not in targets:
            targets.append(t)
    rounds = max((len(v) for v in http.values()), default=0)
    print(f"## Proxy, plain HTTP keep-alive (wrk, absolute-form, {rounds} rounds, medians)\n")
    print("| path | conns | req/s | × direct | p50 | added p50 | proxy CPU / req | non-2xx |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary = {}
    for conns in (1, 32):
        d = http.get(("direct", conns), [])
        d_rps, d_p50 = med([r["rps"] for r in d]), med([r["p50_us"] for r in d])
        for t in targets:
            rs = http.get((t, conns), [])
            if not rs:
                continue
            rps, p50 = med([r["rps"] for r in rs]), med([r["p50_us"] for r in rs])
            cpu = med([r["cpu_us_per_req"] for r in rs])
            ratio = rps / d_rps if d_rps else None
            added = p50 - d_p50 if t != "direct" and d_p50 is not None else None
            non = sum(r["non2xx"] for r in rs)
            summary[(t, conns)] = (ratio, added, cpu)
            print(f"| {t} | {conns} | {fmt(rps)} | {fmt(ratio, 2)} | {fmt(p50)} µs | "
                  f"{fmt(added) + ' µs' if added is not None else '—'} | "
                  f"{fmt(cpu, 1) + ' µs' if cpu is not None else '—'} | {non} |")

    tls = defaultdict(list)
    for r in rows:
        if r["kind"] == "tls":
            tls[(r["target"], r["mode"])].append(r)
    print("\n## Proxy, HTTPS (bench/proxy/load_client: CONNECT + TLS 1.3 through runwarden, "
          "TLS direct to the upstream; full handshakes, no resumption)\n")
    print("| path | mode | conns | req/s | × direct | p50 | proxy CPU / req | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in ("keepalive", "newconn"):
        d_rps = med([r["rps"] for r in tls.get(("direct", mode), [])])
        for t in ("direct", "runwarden"):
            rs = tls.get((t, mode), [])
            if not rs:
                continue
            rps = med([r["rps"] for r in rs])
            ratio = rps / d_rps if d_rps else None
            cpu = med([r["cpu_us_per_req"] for r in rs])
            summary[(t, mode)] = (ratio, None, cpu)
            label = "keep-alive" if mode == "keepalive" else "new connection per request"
            print(f"| {t} | {label} | {rs[0]['conns']} | {fmt(rps)} | {fmt(ratio, 2)} | "
                  f"{fmt(med([r['p50_us'] for r in rs]))} µs | "
                  f"{fmt(cpu, 1) + ' µs' if cpu is not None else '—'} | "
                  f"{sum(r['errors'] for r in rs)} |")

    print("\n## Memory (VmRSS)\n")
    print("| process | idle | with idle keep-alive connections |")
    print("| --- | ---: | ---: |")
    idle = {r["target"]: r["kib"] for r in rows if r["kind"] == "rss_idle"}
    held = defaultdict(list)
    for r in rows:
        if r["kind"] == "rss_conns":
            held[r["target"]].append(r)
    for t, kib in idle.items():
        parts = [f"{c['kib'] / 1024:.1f} MiB with {c['open']:,} {c['variant']} "
                 f"({c['errors']} failed to open)" for c in held.get(t, [])]
        print(f"| {t} | {kib / 1024:.1f} MiB | {'; '.join(parts) or '—'} |")
    ver = [r for r in rows if r["kind"] == "audit_verify"]
    if ver:
        print(f"\nAudit log written during the run: `runwarden audit verify` "
              f"{'passed' if ver[0]['ok'] else 'FAILED'}.")

    print("\n## Targets (issue 4)\n")
    print("haproxy, where it applies: the same figure in the same run, with no policy and no "
          "audit (a lower bound for any proxy on this machine).\n")
    print("| target | measured | haproxy | |")
    print("| --- | ---: | ---: | --- |")
    def row(label, value, ok, reference="—"):
        print(f"| {label} | {value} | {reference} | {check(ok) if ok is not None else 'n/a'} |")
    r32 = summary.get(("runwarden", 32), (None, None, None))
    r1 = summary.get(("runwarden", 1), (None, None, None))
    h32 = summary.get(("haproxy", 32), (None, None, None))
    h1 = summary.get(("haproxy", 1), (None, None, None))
    ka = summary.get(("runwarden", "keepalive"), (None, None, None))
    nc = summary.get(("runwarden", "newconn"), (None, None, None))
    rss = idle.get("runwarden")
    row("plain HTTP, 32 conns ≥ 0.6× direct", fmt(r32[0], 2) + "×",
        r32[0] >= 0.6 if r32[0] is not None else None, fmt(h32[0], 2) + "×")
    row("proxy CPU ≤ 12 µs / request (32 conns)", fmt(r32[2], 1) + " µs",
        r32[2] <= 12 if r32[2] is not None else None, fmt(h32[2], 1) + " µs")
    row("added p50 at 1 conn ≤ 30 µs", fmt(r1[1]) + " µs",
        r1[1] <= 30 if r1[1] is not None else None, fmt(h1[1]) + " µs")
    row("intercepted HTTPS keep-alive ≥ 0.45× direct TLS", fmt(ka[0], 2) + "×",
        ka[0] >= 0.45 if ka[0] is not None else None)
    row("new intercepted connections ≥ 0.5× direct", fmt(nc[0], 2) + "×",
        nc[0] >= 0.5 if nc[0] is not None else None)
    row("RSS idle ≤ 30 MiB", f"{rss / 1024:.1f} MiB" if rss else "n/a",
        rss / 1024 <= 30 if rss else None)


if __name__ == "__main__":
    main()
