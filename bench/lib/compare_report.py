#!/usr/bin/env python3
"""Turns bench/compare's raw rounds (compare-raw.tsv) into compare.md and
compare.png (gnuplot). Medians over rounds; ratios against nginx limit_req
in the same run. Standard library only."""

import argparse
import csv
import os
import statistics
import subprocess
import sys
from collections import defaultdict

TARGETS = ["backend", "nginx", "haproxy", "tollgate"]
LABELS = {
    "backend": "backend alone (nginx return 200)",
    "nginx": "nginx limit_req",
    "haproxy": "HAProxy stick-table",
    "tollgate": "tollgate",
}
SCENARIOS = {
    "allowed": "(a) allowed: one IP key, keep-alive, every request passes",
    "tokens": "(b) tokens: distinct bearer tokens round robin, every request passes",
    "refuse": "(c) refuse: one IP key over its limit, every request refused with 429",
}


def fnum(x, digits=1):
    return f"{x:,.{digits}f}"


def summarize(rows):
    rps = [float(r["rps"]) for r in rows]
    dur = [float(r["duration_s"]) for r in rows]
    req = [int(r["requests"]) for r in rows]
    cpu = [float(r["cpu_s"]) for r in rows]
    return {
        "rounds": len(rows),
        "rps": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50": statistics.median(float(r["p50_us"]) for r in rows) / 1000,
        "p99": statistics.median(float(r["p99_us"]) for r in rows) / 1000,
        "cpu_pct": statistics.median(c / d * 100 for c, d in zip(cpu, dur)),
        "cpu_us_req": statistics.median(c * 1e6 / max(n, 1) for c, n in zip(cpu, req)),
        # Raw files from before the user_s column have none.
        "user_us_req": statistics.median(float(r.get("user_s") or "nan") * 1e6 / max(n, 1)
                                         for r, n in zip(rows, req)),
        "rss_mib": max(int(r["rss_kb"]) for r in rows) / 1024,
        "hwm_mib": max(int(r["hwm_kb"]) for r in rows) / 1024,
        "non2xx_pct": 100 * sum(int(r["non2xx"]) for r in rows) / max(sum(req), 1),
        "sockerr": sum(int(r["socket_errors"]) for r in rows),
        "check": rows[-1]["check"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--started", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--versions", required=True)
    ap.add_argument("--settings", required=True)
    ap.add_argument("--tollgate-headers", default="unknown")
    ap.add_argument("--busy", default="0,0", help="machine busy %% before,after the run")
    a = ap.parse_args()

    groups = defaultdict(list)
    with open(a.raw, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            groups[(row["scenario"], row["target"])].append(row)
    scenarios = [s for s in SCENARIOS if any(k[0] == s for k in groups)]
    stats = {k: summarize(v) for k, v in groups.items()}
    # Ratios are medians of per-round ratios: interleaved rounds share the
    # machine's state of the moment, so drift cancels within a round.
    by_round = {(r["scenario"], r["target"], r["round"]): r for rows in groups.values() for r in rows}

    def ratio(s, t, ref, field, scale=1.0):
        vals = []
        for r in groups.get((s, t), []):
            other = by_round.get((s, ref, r["round"]))
            if other and float(other[field]) > 0:
                vals.append(float(r[field]) / float(other[field]) * scale)
        return statistics.median(vals) if vals else None

    md = []
    md.append("# tollgate side by side: nginx limit_req, HAProxy stick tables\n")
    md.append(f"Run {a.started}, one worker/thread per server, loopback only.\n")
    md.append("```sh\n" + a.command.strip() + "\n```\n")
    md.append("Machine:\n\n" + a.machine.strip() + "\n")
    md.append("Versions:\n\n" + a.versions.strip() + "\n")
    md.append(f"Settings: {a.settings}.\n")
    md.append(
        "Columns: median over rounds; *x nginx* (and *p99 x nginx*) is the median over rounds of "
        "the ratio to nginx limit_req in the same round; *% backend* likewise against the backend "
        "alone; *spread* is (max - min) / median req/s over "
        "rounds; CPU is the server's utime + stime during the wrk run (all its processes), "
        "per second of run and per request, and *user us/req* its utime alone per request "
        "(the rest is the kernel's work for it: system calls, TCP); RSS/HWM is VmRSS/VmHWM "
        "of the serving process (the nginx worker; the nginx master adds about 1-2 MiB), largest over rounds; "
        "*non-2xx* is the share of responses with a status above 399.\n"
    )
    notes = []
    busy = [int(x) for x in a.busy.split(",")]
    if max(busy) > 10:
        notes.append(
            f"Other processes kept the machine {busy[0]}% busy just before the run and {busy[1]}% "
            "just after (all cores): absolute numbers are noisy; ratios within a round less so."
        )
    if a.tollgate_headers == "no":
        notes.append(
            "tollgate sent no `X-RateLimit-*` headers: rate limiting and slots are not in its "
            "request path in this build, so its rows measure a plain forwarding proxy."
        )
    for (s, t), st in sorted(stats.items()):
        if st["check"] != "ok":
            notes.append(f"{LABELS[t]} in scenario {s}: {st['check']} in the check before the run.")
        if s != "refuse" and st["non2xx_pct"] > 0:
            notes.append(f"{LABELS[t]} in scenario {s}: {st['non2xx_pct']:.3f}% non-2xx responses.")
        if st["sockerr"]:
            notes.append(f"{LABELS[t]} in scenario {s}: {st['sockerr']} wrk socket errors/timeouts.")
    if notes:
        md.append("**Caveats:**\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")

    for s in scenarios:
        md.append(f"## {SCENARIOS[s]}\n")
        md.append(
            "| server | req/s | spread | x nginx | % backend | p50 ms | p99 ms | p99 x nginx "
            "| CPU % | CPU us/req | user us/req | RSS MiB | HWM MiB | non-2xx |"
        )
        md.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        ng = stats.get((s, "nginx"))
        be = stats.get((s, "backend"))
        for t in TARGETS:
            st = stats.get((s, t))
            if not st:
                continue
            spread = (st["rps_max"] - st["rps_min"]) / st["rps"] * 100 if st["rps"] else 0
            x_ng = ratio(s, t, "nginx", "rps") if ng else None
            p99_ng = ratio(s, t, "nginx", "p99_us") if ng else None
            pct_be = ratio(s, t, "backend", "rps", 100) if be and t != "backend" else None
            x_ng = f"{x_ng:.2f}" if x_ng is not None else "-"
            p99_ng = f"{p99_ng:.2f}" if p99_ng is not None else "-"
            pct_be = f"{pct_be:.0f}%" if pct_be is not None else "-"
            name = LABELS[t] if st["check"] == "ok" else f"{LABELS[t]} ({st['check']})"
            md.append(
                f"| {name} | {fnum(st['rps'], 0)} | {spread:.0f}% | {x_ng} | {pct_be} "
                f"| {st['p50']:.2f} | {st['p99']:.2f} | {p99_ng} | {st['cpu_pct']:.0f} "
                f"| {st['cpu_us_req']:.1f} | {st['user_us_req']:.1f} "
                f"| {st['rss_mib']:.1f} | {st['hwm_mib']:.1f} "
                f"| {st['non2xx_pct']:.1f}% |"
            )
        md.append("")
    md.append("![req/s and p99 latency per scenario](compare.png)\n")
    md.append("Every round is in `compare-raw.tsv`.\n")
    with open(os.path.join(a.out, "compare.md"), "w") as f:
        f.write("\n".join(md))

    chart(a.out, scenarios, stats)


def chart(out, scenarios, stats):
    dat = os.path.join(out, ".compare-chart.dat")
    targets = [t for t in TARGETS if any((s, t) in stats for s in scenarios)]
    with open(dat, "w") as f:
        for s in scenarios:
            f.write(s + " " + " ".join(
                f"{stats[(s, t)]['rps']:.0f}" if (s, t) in stats else "-" for t in targets) + "\n")
        f.write("\n\n")
        for s in scenarios:
            f.write(s + " " + " ".join(
                f"{stats[(s, t)]['p99']:.3f}" if (s, t) in stats else "-" for t in targets) + "\n")
        f.write("\n\n")
        for s in scenarios:
            f.write(s + " " + " ".join(
                f"{stats[(s, t)]['cpu_us_req']:.2f}" if (s, t) in stats else "-" for t in targets) + "\n")
    colors = {"backend": "#999999", "nginx": "#2ca02c", "haproxy": "#1f77b4", "tollgate": "#d62728"}
    plots = lambda idx: ", ".join(
        f"'{dat}' index {idx} using {i + 2}:xtic(1) title '{LABELS[t]}' lc rgb '{colors[t]}'"
        for i, t in enumerate(targets))
    gp = f"""
set terminal pngcairo size 1500,560 font 'sans,10' noenhanced
set output '{os.path.join(out, "compare.png")}'
set datafile missing '-'
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key below horizontal
set grid ytics
set multiplot layout 1,3 title 'tollgate vs nginx limit_req vs HAProxy, one worker each (median of rounds)'
set title 'throughput (req/s, higher is better)'
set yrange [0:*]
set format y '%.0s%c'
plot {plots(0)}
set title 'p99 latency (ms, lower is better)'
set format y '%g'
plot {plots(1)}
set title 'server CPU per request (us, lower is better)'
plot {plots(2)}
unset multiplot
"""
    try:
        subprocess.run(["gnuplot"], input=gp, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"compare_report: gnuplot failed: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        os.unlink(dat)


if __name__ == "__main__":
    main()
