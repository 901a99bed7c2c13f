#!/usr/bin/env python3
"""Summaries for scripts/load.sh: one scenario (`one RUN NAME`) or the final
table (`table RUN NAME...`). Reads oha's JSON, the webhook's /metrics before
and after, the issuer's fetch counter and /proc numbers the script saved."""

import json
import re
import statistics
import sys
from pathlib import Path

# Which signature rate a scenario is compared with, and its target.
SIG = {"hits": "RS256", "hits-many": "EdDSA", "rs256": "RS256", "es256": "ES256", "refused": "RS256",
       "refused-cached": "RS256", "mixed": "RS256", "fill": "EdDSA"}
TARGET = {"hits": ">= 50,000/s, p99 < 1.5 ms", "hits-many": "(reference for refused-cached)", "rs256": ">= 30,000/s",
          "es256": ">= 15,000/s", "refused": ">= hits rate, 0 outbound",
          "refused-cached": ">= hits rate, 0 outbound",
          "mixed": "-", "fill": "RSS < 120 MiB at 100k entries"}
WHAT = {"hits": "cache hits (1 token)",
        "hits-many": "cache hits over 30,000 cached identities", "rs256": "RS256 misses (cache off)",
        "es256": "ES256 misses (cache off)",
        "refused": "refused flood (garbage/unknown iss/expired, cache off)",
        "refused-cached": "refused flood, production cache (negative entries)",
        "mixed": "mixed 90/10, mTLS", "fill": "cache fill (EdDSA, distinct)"}

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def metrics(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        m = SERIES.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(ms, name, **labels):
    s = 0.0
    for (n, lab), v in ms.items():
        if n == name and all(f'{k}="{val}"' in lab for k, val in labels.items()):
            s += v
    return s


def sigrates(run):
    rates = {}
    for line in (run / "sigrate.txt").read_text().splitlines():
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        if f.get("verifier", "jsonwebtoken") == "jsonwebtoken":
            rates[(f["alg"], int(f["threads"]))] = float(f["verifies_per_s"])
        else:
            rates[(f["alg"], int(f["threads"]), "parsed")] = float(f["verifies_per_s"])
    return rates


def num(path, default=0.0):
    try:
        return float(Path(path).read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return default


def scenario(run, name):
    oha_path, drive_path = run / f"{name}.oha.json", run / f"{name}.drive.json"
    if oha_path.exists():
        oha = json.loads(oha_path.read_text())
        codes = oha.get("statusCodeDistribution", {})
        errors = oha.get("errorDistribution", {})
        secs = oha["summary"]["total"]
        pct = oha["latencyPercentiles"]
        load = {"rps": codes.get("200", 0) / secs if secs else 0.0,
                "p50": pct.get("p50", float("nan")) * 1000,
                "p99": pct.get("p99", float("nan")) * 1000,
                "p999": pct.get("p99.9", float("nan")) * 1000,
                "errors": sum(errors.values()) + sum(v for k, v in codes.items() if k != "200"),
                "error_kinds": errors, "driver": "oha"}
    else:
        dr = json.loads(drive_path.read_text())
        load = {"rps": dr["rps"], "p50": dr["p50_ms"], "p99": dr["p99_ms"],
                "p999": dr["p999_ms"], "errors": dr["errors"], "error_kinds": {},
                "driver": "loadtest drive" + (" (ran out of tokens)"
                                              if dr["lines_exhausted"] else "")}
    before = metrics(run / f"{name}.metrics.before")
    after = metrics(run / f"{name}.metrics.after")

    def d(metric, **labels):
        return total(after, metric, **labels) - total(before, metric, **labels)

    entries = [float(x) for x in (run / f"{name}.cache_entries").read_text().split()
               if x.strip()] if (run / f"{name}.cache_entries").exists() else []
    entries.append(total(after, "authn_webhook_cache_entries"))
    reviews = d("authn_webhook_tokenreviews_total")
    tck = num(run / "clk_tck", 100.0) or 100.0
    server_s = (num(run / f"{name}.server_ticks.after")
                - num(run / f"{name}.server_ticks.before")) / tck
    try:
        client_s = sum(float(x) for x in
                       (run / f"{name}.client_cpu").read_text().split()[-1].split("+"))
    except (OSError, IndexError, ValueError):
        client_s = float("nan")
    return {
        **load,
        "name": name,
        "reviews": reviews,
        "authenticated": d("authn_webhook_tokenreviews_total", outcome="authenticated"),
        "rejected": d("authn_webhook_tokenreviews_total", outcome="rejected"),
        "error_outcome": d("authn_webhook_tokenreviews_total", outcome="error"),
        "hits": d("authn_webhook_cache_lookups_total", result="hit"),
        "misses": d("authn_webhook_cache_lookups_total", result="miss"),
        "jwks_fetches": d("authn_webhook_jwks_fetches_total"),
        "issuer_fetches": num(run / f"{name}.fetches.after") - num(run / f"{name}.fetches.before"),
        "peak_rss_mib": num(run / f"{name}.peak_rss_kib") / 1024,
        "end_rss_mib": num(run / f"{name}.end_rss_kib") / 1024,
        "idle_rss_mib": num(run / f"{name}.idle_rss_kib") / 1024,
        "startup_ms": num(run / f"{name}.startup_us") / 1000,
        "max_cache_entries": max(entries),
        "server_us": server_s / reviews * 1e6 if reviews else float("nan"),
        "client_us": client_s / reviews * 1e6 if reviews else float("nan"),
    }


def base(name):
    return name.split(".")[0]


def one(run, name):
    s = scenario(run, name)
    rates = sigrates(run)
    alg = SIG[base(name)]
    sig2 = rates.get((alg, 2), 0.0)
    print(f"   {WHAT[base(name)]} [{s['driver']}]: {s['rps']:,.0f} reviews/s  p50 {s['p50']:.3f} ms  "
          f"p99 {s['p99']:.3f} ms  p99.9 {s['p999']:.3f} ms  errors {s['errors']:.0f}  "
          f"peak RSS {s['peak_rss_mib']:.1f} MiB")
    print(f"   server: {s['reviews']:.0f} reviews ({s['authenticated']:.0f} authenticated, "
          f"{s['rejected']:.0f} rejected, {s['error_outcome']:.0f} error), cache "
          f"{s['hits']:.0f} hits / {s['misses']:.0f} misses, max cache entries "
          f"{s['max_cache_entries']:.0f}")
    print(f"   outbound to the issuer during the run: {s['issuer_fetches']:.0f} requests "
          f"(jwks_fetches_total +{s['jwks_fetches']:.0f}); start-up to ready "
          f"{s['startup_ms']:.1f} ms, idle RSS {s['idle_rss_mib']:.1f} MiB")
    print(f"   CPU per review: server {s['server_us']:.1f} us, load generator "
          f"{s['client_us']:.1f} us")
    if sig2:
        print(f"   ratio to {alg} signature checks on 2 threads ({sig2:,.0f}/s): "
              f"{s['rps'] / sig2:.2f}")
    if s["error_kinds"]:
        print(f"   oha errors: {s['error_kinds']}")
    # What each scenario claims to measure, checked.
    problems = []
    b = base(name)
    if b.startswith("refused"):
        if s["issuer_fetches"] or s["jwks_fetches"]:
            problems.append("a refused token caused requests to the issuer")
        if s["authenticated"]:
            problems.append("a refused-flood token was authenticated")
    if b in ("rs256", "es256") and (s["hits"] or s["authenticated"] != s["reviews"]):
        problems.append("not every review was an authenticated miss")
    if b in ("hits", "hits-many", "mixed", "fill") and s["authenticated"] != s["reviews"]:
        problems.append("not every review authenticated")
    if s["errors"]:
        problems.append(f"{s['errors']:.0f} requests failed")
    for p in problems:
        print(f"   CHECK FAILED: {p}")
    if problems:
        sys.exit(1)


def merged(run, name):
    """Median of each number over the rounds of one scenario."""
    rounds = sorted({p.name.split(".")[1] for p in run.glob(f"{name}.*.metrics.after")})
    runs = [scenario(run, f"{name}.{r}") for r in rounds]
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)):
            out[k] = statistics.median(r[k] for r in runs)
    out["name"] = name
    out["rounds"] = len(runs)
    out["rps_all"] = [r["rps"] for r in runs]
    out["startup_all"] = [r["startup_ms"] for r in runs]
    out["idle_all"] = [r["idle_rss_mib"] for r in runs]
    out["peak_rss_max"] = max(r["peak_rss_mib"] for r in runs)
    out["entries_max"] = max(r["max_cache_entries"] for r in runs)
    return out


def table(run, names):
    rates = sigrates(run)
    rows = [merged(run, n) for n in dict.fromkeys(names)]
    print("\n## Signature checks per second (same run)\n")
    print("| alg | jsonwebtoken 1 thread | 2 threads | key parsed once 1 thread | 2 threads |")
    print("|---|---:|---:|---:|---:|")
    for alg in ("RS256", "ES256", "EdDSA"):
        if (alg, 1) in rates:
            p1 = rates.get((alg, 1, "parsed"), 0.0)
            p2 = rates.get((alg, 2, "parsed"), 0.0)
            print(f"| {alg} | {rates[(alg, 1)]:,.0f} | {rates[(alg, 2)]:,.0f} | "
                  f"{p1:,.0f} | {p2:,.0f} |")
    print("\n## Scenarios\n")
    print("\nMedians over the rounds; reviews/s of each round in brackets.\n")
    print("| scenario | reviews/s | p50 ms | p99 ms | p99.9 ms | errors | "
          "hits/misses | outbound | peak RSS MiB | CPU us/review server+client | "
          "vs sig (2 thr) | target |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|---|")
    for s in rows:
        alg = SIG[s["name"]]
        sig2 = rates.get((alg, 2), 0.0)
        ratio = f"{s['rps'] / sig2:.2f} x {alg}" if sig2 else "-"
        rps = f"{s['rps']:,.0f}"
        if s["rounds"] > 1:
            rps += " (" + " / ".join(f"{x:,.0f}" for x in s["rps_all"]) + ")"
        print(f"| {WHAT[s['name']]} | {rps} | {s['p50']:.3f} | {s['p99']:.3f} | "
              f"{s['p999']:.3f} | {s['errors']:.0f} | {s['hits']:.0f}/{s['misses']:.0f} | "
              f"{s['issuer_fetches']:.0f} | {s['peak_rss_mib']:.1f} | "
              f"{s['server_us']:.1f}+{s['client_us']:.1f} | {ratio} | "
              f"{TARGET[s['name']]} |")
    starts = [x for s in rows for x in s["startup_all"] if x > 0]
    idle = [x for s in rows for x in s["idle_all"] if x > 0]
    print()
    if starts:
        print(f"start-up to ready (exec to /readyz 200, {len(starts)} starts): median "
              f"{statistics.median(starts):.1f} ms, max {max(starts):.1f} ms (target < 200 ms)")
    if idle:
        print(f"idle RSS after ready: median {statistics.median(idle):.1f} MiB, max "
              f"{max(idle):.1f} MiB (target < 25 MiB)")
    for s in rows:
        if s["name"] == "fill":
            print(f"cache fill: max cache entries seen {s['entries_max']:.0f} "
                  f"(max_entries 100000); RSS at end {s['end_rss_mib']:.1f} MiB (median), "
                  f"peak {s['peak_rss_max']:.1f} MiB (highest round) (target < 120 MiB)")


def main():
    mode, run = sys.argv[1], Path(sys.argv[2])
    if mode == "one":
        one(run, sys.argv[3])
    else:
        table(run, sys.argv[3:])


if __name__ == "__main__":
    main()
