#!/usr/bin/env python3
"""Reads a gpu-check run's logs and writes results.json and summary.txt.

Standard library only: it runs on the GPU machine at the end of the run,
and here (scripts/gpu-check --compare) on what a run brought back.

Correctness is judged on log-probabilities (the logits less one constant
per position, as tandem and vLLM report them) over the reference's top-K
tokens:
  * greedy runs are compared token by token up to their first difference;
    a difference is explained when, in the reference, the two tokens' log-
    probabilities are within the near-tie margin: max(floor, 2 x the largest
    error the run showed up to there);
  * forced runs (Hugging Face fed the CPU reference's sequence) are compared
    at every position;
  * the error limit is LIMITS[kind]; for bf16 arithmetic it is at least
    twice what Hugging Face's own bf16 run differs from its float32 run on
    the same weights (the yardstick), since both round activations to bf16.
"""

import argparse
import glob
import json
import os
import re
import sys

# (max abs log-probability error, near-tie floor) per kind of arithmetic.
LIMITS = {"f32": (2e-3, 1e-3), "bf16": (5e-2, 1e-2)}
MBU_GOAL, SPEEDUP_GOAL = 70.0, 10.0


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def steps(logs):
    out = []
    try:
        with open(os.path.join(logs, "steps.tsv")) as f:
            next(f)
            for line in f:
                n, name, status, rc, secs, note = (line.rstrip("\n").split("\t") + [""] * 6)[:6]
                out.append({"n": int(n), "step": name, "status": status, "rc": rc, "seconds": float(secs or 0), "note": note})
    except OSError:
        pass
    return out


def step_log(logs, name):
    paths = glob.glob(os.path.join(logs, f"[0-9][0-9]-{name}.log"))
    if not paths:
        return ""
    with open(paths[0], errors="replace") as f:
        return f.read()


def tests(text):
    """Top-level go test results: {"pass": [...], "fail": [...], "skip": [...]}."""
    r = {"pass": [], "fail": [], "skip": []}
    for m in re.finditer(r"^--- (PASS|FAIL|SKIP): (\S+)", text, re.M):
        r[m.group(1).lower()].append(m.group(2))
    return r


def benchmarks(text):
    """go test -bench lines: name (without the -GOMAXPROCS suffix), N and metrics by unit."""
    out = []
    for m in re.finditer(r"^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$", text, re.M):
        f = m.group(3).split()
        metrics = {f[i + 1]: float(f[i]) for i in range(0, len(f) - 1, 2) if re.match(r"^[-0-9.e+]+$", f[i])}
        out.append({"name": m.group(1), "n": int(m.group(2)), "metrics": metrics})
    return out


def tandem_run(d):
    """A tandem generate --json result as token ids and per-position tops."""
    if not d or "token_ids" not in d:
        return None
    tops = [{t["token"]: t["logprob"] for t in lp.get("top_logprobs", [])} for lp in d.get("logprobs", [])]
    return {"tokens": d["token_ids"], "tops": tops}


def compare(ref, cand, kind, forced=False, limit=None):
    """Compares cand with ref (see the module doc); None when either is missing."""
    if not ref or not cand:
        return None
    lim, floor = LIMITS[kind]
    lim = limit or lim
    n = min(len(ref["tokens"]), len(cand["tokens"]))
    err, equal, diffs, unexplained, first = 0.0, 0, 0, 0, None
    for i in range(n):
        rt, ct = ref["tops"][i], cand["tops"][i]
        for tok, lp in rt.items():
            if tok in ct:
                err = max(err, abs(lp - ct[tok]))
        a, b = ref["tokens"][i], cand["tokens"][i]
        if a == b:
            equal += 1 if first is None else 0
            continue
        # The reference's margin between its token and the candidate's; a
        # candidate token outside the reference's top-K is at least as far
        # as the K-th.
        gap = rt.get(a, 0) - rt.get(b, min(rt.values()) if rt else 0)
        tie = b in rt and gap <= max(floor, 2 * err)
        diffs += 1
        unexplained += 0 if tie else 1
        if first is None:
            first = {"position": i, "ref_token": a, "token": b, "gap": gap, "near_tie": tie}
        if not forced:
            break
    ok = unexplained == 0 and err <= lim
    return {"kind": kind, "forced": forced, "positions": n, "equal_prefix": equal, "differences": diffs,
            "unexplained": unexplained, "first_difference": first, "max_abs_logprob_err": err,
            "limit": lim, "ok": ok}


def correctness(logs, ref_dir, res):
    hf = load_json(os.path.join(logs, "hf.json")) or {}
    rows = []
    for model in ("llama-160m", "llama-1b"):
        cpu = tandem_run(load_json(os.path.join(ref_dir, f"{model}.cpu.json")))
        cuda = tandem_run(load_json(os.path.join(logs, f"gen-{model}.cuda.json")))
        case = hf.get("cases", {}).get(model, {})
        hf32 = tandem_run(case.get("greedy"))
        forced32 = tandem_run(case.get("forced"))
        forced16 = tandem_run(case.get("forced_bf16"))
        kind = "bf16" if case.get("stored_dtype", "bfloat16" if model == "llama-1b" else "float32") == "bfloat16" else "f32"
        yard = compare(forced32, forced16, "bf16", forced=True, limit=1e9) if forced16 else None
        limit = LIMITS[kind][0]
        if kind == "bf16" and yard:
            limit = max(limit, 2 * yard["max_abs_logprob_err"])
        pairs = [
            ("tandem cuda vs tandem cpu", cpu, cuda, kind, False),
            ("tandem cuda vs HF fp32 (greedy)", hf32, cuda, kind, False),
            ("tandem cpu vs HF fp32 (forced)", forced32, cpu, "f32", True),
        ]
        if model == "llama-160m":
            kv32 = tandem_run(load_json(os.path.join(logs, f"gen-{model}.cuda-kvfp32.json")))
            pairs.append(("tandem cuda bf16 KV vs cuda fp32 KV", kv32, cuda, "bf16", False))
        if model == "llama-1b":
            pairs.append(("tandem up P1->D1 vs tandem cpu", cpu, tandem_run(load_json(os.path.join(logs, "up-generate.json"))), kind, False))
        for label, a, b, k, forced in pairs:
            c = compare(a, b, k, forced, limit if k == "bf16" else None)
            rows.append({"model": model, "pair": label, **(c or {"missing": True})})
        if yard:
            rows.append({"model": model, "pair": "HF bf16 vs HF fp32 (forced, yardstick)", **yard, "ok": None})
    res["correctness"] = rows


def performance(logs, res):
    hf = load_json(os.path.join(logs, "hf.json")) or {}
    ceil = hf.get("ceilings", {})
    res["ceilings_torch"] = ceil
    eng = benchmarks(step_log(logs, "engine-bench"))
    decode, prefill = [], None
    for b in eng:
        m = b["metrics"]
        if b["name"].startswith("BenchmarkGPUDecode/"):
            batch = int(b["name"].rsplit("-", 1)[1])
            row = {"batch": batch, "tok_s": m.get("tok/s"), "ms_per_step": m.get("ns/op", 0) / 1e6,
                   "weight_gbs": m.get("weightGB/s"), "copy_gbs": m.get("bwGB/s"), "mbu_pct": m.get("%bw")}
            if ceil.get("copy_gbs") and m.get("weightGB/s"):
                row["mbu_torch_copy_pct"] = 100 * m["weightGB/s"] / ceil["copy_gbs"]
            decode.append(row)
        elif b["name"].startswith("BenchmarkGPUPrefill/"):
            prefill = {"tokens": int(b["name"].rsplit("/", 1)[1]), "tok_s": m.get("tok/s"),
                       "tflops": (m.get("GFLOP/s") or 0) / 1e3, "peak_tflops": (m.get("peakGFLOP/s") or 0) / 1e3,
                       "peak_pct": m.get("%peak")}
            if ceil.get("bf16_tflops"):
                prefill["peak_torch_pct"] = 100 * prefill["tflops"] / ceil["bf16_tflops"]
    res["decode"], res["prefill"] = decode, prefill
    t = hf.get("timing", {}).get("llama-1b")
    b1 = next((d for d in decode if d["batch"] == 1 and d.get("tok_s")), None)
    gen = load_json(os.path.join(logs, "gen-llama-1b.cuda.json")) or {}
    res["hf_generate"] = None
    if t:
        res["hf_generate"] = {**t, "tandem_bench_ms_per_token": 1e3 / b1["tok_s"] if b1 else None,
                              "tandem_generate_ms_per_token": gen.get("ms_per_token")}
        if b1:
            res["hf_generate"]["speedup"] = t["ms_per_token"] / (1e3 / b1["tok_s"])
    res["nccl"] = []
    for b in benchmarks(step_log(logs, "nccl-bench")):
        _, op, size = b["name"].split("/")
        res["nccl"].append({"op": op, "size": size, "algbw_gbs": b["metrics"].get("algbw_GB/s"),
                            "busbw_gbs": b["metrics"].get("busbw_GB/s"), "us_per_call": b["metrics"].get("ns/op", 0) / 1e3})


def environment(logs, res):
    smi = ""
    try:
        with open(os.path.join(logs, "nvidia-smi.csv")) as f:
            smi = f.readline().strip()
    except OSError:
        pass
    res["gpu"] = smi
    libs = set()
    for name in ("cuda-tests", "nccl-tests", "engine-bench", "gen-llama-160m", "gen-llama-1b", "up"):
        for line in step_log(logs, name).splitlines():
            line = line.strip()
            if "/libfake" in line:  # the NCCL tests' fake library, not the GPU's
                continue
            if line.startswith("compute backend:") or re.search(r"\b(NCCL \S+ from |: driver .*cuBLAS)", line):
                libs.add(re.sub(r"^\S+_test\.go:\d+: ", "", line))
    res["libraries"] = sorted(libs)
    hf = load_json(os.path.join(logs, "hf.json")) or {}
    res["torch"] = {k: hf.get(k) for k in ("torch", "transformers", "device", "libraries", "errors")}
    res["tests"] = {name: tests(step_log(logs, name)) for name in ("cuda-tests", "nccl-tests")}


def fmt(v, f="{:.1f}"):
    return "-" if v is None else f.format(v)


def summary(res):
    out = []
    w = out.append
    w(f"tandem GPU check ({res['mode']}): {res['gpu'] or 'no GPU seen'}")
    w("")
    w(f"{'step':<16}{'status':<14}{'s':>6}  note")
    for s in res["steps"]:
        status = {"no-cuda": "no CUDA here"}.get(s["status"], s["status"])
        w(f"{s['step']:<16}{status:<14}{s['seconds']:>6.1f}  {s['note'][:110]}")
    for name, t in res["tests"].items():
        if any(t.values()):
            w(f"  {name}: {len(t['pass'])} pass, {len(t['fail'])} fail {t['fail'] or ''}, {len(t['skip'])} skip")
    if res["libraries"]:
        w("")
        w("libraries opened:")
        for line in res["libraries"]:
            w(f"  {line[:300]}")
    w("")
    w("correctness: greedy tokens equal up to the first near-tie; max |Δ logprob| over the reference's top-20")
    w(f"{'model':<11}{'compared':<42}{'equal':>7}{'first diff':>24}{'max|Δ|':>10}{'limit':>9}  verdict")
    for r in res["correctness"]:
        if r.get("missing"):
            w(f"{r['model']:<11}{r['pair']:<42}{'':>7}{'':>24}{'':>10}{'':>9}  not measured")
            continue
        fd = r["first_difference"]
        diff = "-" if not fd else f"@{fd['position']} gap {fd['gap']:.3g}{' tie' if fd['near_tie'] else ''}"
        eq = f"{r['positions'] - r['differences']}/{r['positions']}" if r["forced"] else f"{r['equal_prefix']}/{r['positions']}"
        verdict = "yardstick" if r["ok"] is None else ("ok" if r["ok"] else "FAIL")
        w(f"{r['model']:<11}{r['pair']:<42}{eq:>7}{diff:>24}{r['max_abs_logprob_err']:>10.2e}{r['limit']:>9.1e}  {verdict}")
    w("")
    ceil = res.get("ceilings_torch") or {}
    w(f"performance (llama-1b bf16); torch ceilings: copy {fmt(ceil.get('copy_gbs'), '{:.0f}')} GB/s, bf16 matmul {fmt(ceil.get('bf16_tflops'))} TFLOP/s")
    if res["decode"]:
        w(f"  {'decode':<9}{'tok/s':>9}{'ms/step':>9}{'weight GB/s':>13}{'MBU vs Go copy':>16}{'MBU vs torch copy':>19}")
        for d in res["decode"]:
            w(f"  batch {d['batch']:<3}{fmt(d['tok_s']):>9}{fmt(d['ms_per_step'], '{:.2f}'):>9}{fmt(d['weight_gbs'], '{:.0f}'):>13}"
              f"{fmt(d['mbu_pct']) + '% of ' + fmt(d['copy_gbs'], '{:.0f}'):>16}{fmt(d.get('mbu_torch_copy_pct')) + '%':>19}")
        b1 = next((d for d in res["decode"] if d["batch"] == 1), None)
        if b1 and b1.get("mbu_torch_copy_pct") is not None:
            w(f"  MBU at batch 1: {b1['mbu_torch_copy_pct']:.1f}% (goal >= {MBU_GOAL:.0f}%: {'met' if b1['mbu_torch_copy_pct'] >= MBU_GOAL else 'not met'})")
    else:
        w("  decode: not measured")
    p = res["prefill"]
    if p:
        w(f"  prefill {p['tokens']}: {fmt(p['tok_s'], '{:.0f}')} tok/s, {fmt(p['tflops'])} TFLOP/s = {fmt(p['peak_pct'])}% of the Go MatMul's {fmt(p['peak_tflops'])}, {fmt(p.get('peak_torch_pct'))}% of torch's")
    else:
        w("  prefill: not measured")
    h = res["hf_generate"]
    if h:
        sp = h.get("speedup")
        w(f"  HF generate() bf16: {h['ms_per_token']:.2f} ms/token; tandem batch 1: {fmt(h.get('tandem_bench_ms_per_token'), '{:.2f}')} ms/token (bench), "
          f"{fmt(h.get('tandem_generate_ms_per_token'), '{:.2f}')} (generate); {fmt(sp)}x faster (goal >= {SPEEDUP_GOAL:.0f}x: {'met' if sp and sp >= SPEEDUP_GOAL else 'not met'})")
    else:
        w("  HF generate(): not measured")
    if res["nccl"]:
        w("  NCCL, one rank (busbw is 0 where nothing crosses a link):")
        for n in res["nccl"]:
            w(f"    {n['op']:<10}{n['size']:>10}  algbw {fmt(n['algbw_gbs'], '{:.1f}'):>8} GB/s  busbw {fmt(n['busbw_gbs'], '{:.1f}'):>8} GB/s  {fmt(n['us_per_call'], '{:.1f}'):>9} us/call")
    else:
        w("  NCCL: not measured")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", required=True, choices=["device", "rehearsal", "compare"])
    p.add_argument("--logs", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--summary", required=True)
    a = p.parse_args()
    res = {"mode": a.mode, "steps": steps(a.logs)}
    for part in (environment, performance):
        part(a.logs, res)
    correctness(a.logs, a.ref, res)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    with open(a.summary, "w") as f:
        f.write(summary(res))


if __name__ == "__main__":
    sys.exit(main())
