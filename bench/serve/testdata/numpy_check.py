# Recomputes a saved result's statistics from its per-request arrays with
# numpy (default linear interpolation, population std), as vllm bench
# serve does, and prints every key that disagrees. Reads the result JSON
# path from argv[1]; exits 1 on any difference or missing key.
import json
import sys

import numpy as np

r = json.load(open(sys.argv[1]))
for key in ["completed", "failed", "request_throughput", "output_throughput", "total_token_throughput",
            "ttfts", "itls", "input_lens", "output_lens", "errors", "request_ids", "duration",
            "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
            "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms", "p99_e2el_ms", "request_goodput"]:
    if key not in r:
        print("missing key", key)
        sys.exit(1)
ok = [i for i, e in enumerate(r["errors"]) if not e]
ttfts = [r["ttfts"][i] for i in ok]
e2els = [r["latencies"][i] for i in ok]
itls = [x for i in ok for x in r["itls"][i]]
tpots = [(r["latencies"][i] - r["ttfts"][i]) / (r["output_lens"][i] - 1) for i in ok if r["output_lens"][i] > 1]
samples = {"ttft": ttfts, "tpot": tpots, "itl": itls, "e2el": e2els}
bad = []
for m, xs in samples.items():
    want = {"mean": np.mean(xs) * 1000, "median": np.median(xs) * 1000, "std": np.std(xs) * 1000}
    for p in [50, 90, 95, 99, 99.9]:
        want["p" + (str(int(p)) if int(p) == p else str(p))] = np.percentile(xs, p) * 1000
    for stat, v in want.items():
        key = f"{stat}_{m}_ms"
        if key not in r:
            bad.append(f"{key} missing")
        elif abs(r[key] - v) > 1e-9 * max(1.0, abs(v)):
            bad.append(f"{key}: result {r[key]!r}, numpy {v!r}")
if r["completed"] != len(ok) or r["completed"] + r["failed"] != len(r["ttfts"]):
    bad.append("completed/failed disagree with the per-request arrays")
if abs(r["output_throughput"] - sum(r["output_lens"]) / r["duration"]) > 1e-9:
    bad.append("output_throughput")
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
