# Reads result JSON as vLLM's result readers do (json.load of a file, or
# one result a line when --append-result wrote it) and checks every key
# vllm bench serve writes is there with the type it writes, in its order
# (date .. num_prompts, the --metadata keys, then the traffic keys).
# argv: PATH, the number of results the file must hold, the backend.
# Exits 1 naming each problem.
import json
import re
import sys

path, want_n, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [l for l in open(path).read().split("\n") if l.strip()]
bad = []
if len(lines) != want_n:
    bad.append(f"{len(lines)} results, want {want_n}")
num = (int, float)
keys = {
    "date": str, "endpoint_type": str, "backend": str, "label": (str, type(None)), "model_id": str,
    "tokenizer_id": str, "num_prompts": int, "request_rate": (str, float, int), "burstiness": num,
    "max_concurrency": (int, type(None)), "duration": num, "completed": int, "failed": int,
    "total_input_tokens": int, "total_output_tokens": int, "request_throughput": num,
    "request_goodput": (float, int, type(None)), "output_throughput": num, "total_token_throughput": num,
    "input_lens": list, "output_lens": list, "ttfts": list, "itls": list, "latencies": list,
    "start_times": list, "queue_times": list, "errors": list, "max_output_tokens_per_s": num,
    "max_concurrent_requests": int, "rtfx": num,
}
for m in ["ttft", "tpot", "itl", "e2el"]:
    for s in ["mean", "median", "std", "p99"]:
        keys[f"{s}_{m}_ms"] = num
for n, line in enumerate(lines):
    r = json.loads(line)
    for k, typ in keys.items():
        if k not in r:
            bad.append(f"result {n}: no {k}")
        elif not isinstance(r[k], typ) or isinstance(r[k], bool):
            bad.append(f"result {n}: {k} is {type(r[k]).__name__}")
    if not re.fullmatch(r"\d{8}-\d{6}", r.get("date", "")):
        bad.append(f"result {n}: date {r.get('date')!r}")
    if r.get("request_rate") != "inf" and not isinstance(r.get("request_rate"), float):
        bad.append(f"result {n}: request_rate {r.get('request_rate')!r}, want \"inf\" or a float")
    if not isinstance(r.get("burstiness"), float):
        bad.append(f"result {n}: burstiness {r.get('burstiness')!r}, want a float")
    if r.get("backend") != backend or r.get("endpoint_type") != backend:
        bad.append(f"result {n}: backend {r.get('backend')!r}, want {backend!r}")
    order = list(r)
    if order[:7] != ["date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts"] or \
            order[7:9] != ["tp", "note"] or r["tp"] != "2" or r["note"] != "a b=c" or order[9] != "request_rate":
        bad.append(f"result {n}: keys begin {order[:10]}, metadata tp={r.get('tp')!r} note={r.get('note')!r}")
    for k in ["input_lens", "output_lens", "ttfts", "itls", "latencies", "errors"]:
        if len(r.get(k, [])) != r.get("num_prompts"):
            bad.append(f"result {n}: {k} has {len(r.get(k, []))} entries for {r.get('num_prompts')} prompts")
    # What the readers compute from it.
    if r["completed"] and abs(sum(r["output_lens"]) / r["duration"] - r["output_throughput"]) > 1e-6:
        bad.append(f"result {n}: output_throughput")
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
