#!/usr/bin/env python3
"""Medians (ranges) of serve.sh's tandem bench result files in DIR, by
deployment and concurrency. usage: summarize-serve.py DIR"""
import glob, json, os, statistics as st, sys

rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], '*-r*-c*.json'))):
    name, _, c = os.path.basename(f)[:-5].rsplit('-', 2)
    rows.setdefault((name, int(c[1:])), []).append(json.load(open(f)))

def fmt(v):
    return f"{st.median(v):.4g} ({min(v):.4g}–{max(v):.4g})"

print("| deployment | concurrency | output tok/s | TTFT P50 ms | TPOT P50 ms | completed |")
print("| --- | --- | --- | --- | --- | --- |")
for (name, c), ds in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    print(f"| {name} | {c} | {fmt([d['output_throughput'] for d in ds])} | "
          f"{fmt([d['median_ttft_ms'] for d in ds])} | {fmt([d['median_tpot_ms'] for d in ds])} | "
          f"{sum(d['completed'] for d in ds)}/{sum(d.get('num_prompts', d['completed']) for d in ds)} |")
