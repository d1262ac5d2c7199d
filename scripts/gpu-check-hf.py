#!/usr/bin/env python3
"""The Hugging Face side of scripts/gpu-check, run on the lent GPU machine.

It loads the same safetensors directories tandem runs with Hugging Face
transformers on the GPU and writes one JSON file with, per model:

  greedy        its own greedy continuation of the reference prompt, in
                float32 (weights upcast, TF32 off): token ids and the
                top-K log-probabilities of every step;
  forced        the top-K log-probabilities at every position of the CPU
                reference's sequence (prompt + its greedy tokens) in one
                forward pass, float32, so positions stay comparable after a
                near-tie makes two greedy runs part;
  forced_bf16   the same in bfloat16 (models stored in bf16 only): what
                bf16 arithmetic alone moves the numbers by, a yardstick;

and, for the models named with --timing, generate()'s ms/token in
bfloat16 at batch 1. With --ceilings it also measures the GPU's two
ceilings the way METHOD.md asks: a device-to-device copy (bytes read plus
written) and an 8192^3 bf16 matrix product, on random data.

The prompt token ids come from the CPU reference (tandem's tokenizer), so
no tokenizer is loaded here. Log-probabilities are the logits minus one
constant per position (their log-sum-exp), reported as tandem and vLLM
report them.

Where torch or a GPU is missing it says "no CUDA here" and exits 3 at once.
"""

import argparse
import json
import statistics
import sys
import time
import traceback

DEVICE = "cuda"


def fail_no_cuda(why):
    print(f"no CUDA here: {why}", flush=True)
    sys.exit(3)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", action="append", default=[], metavar="NAME=MODEL_DIR:REF_JSON",
                   help="a model directory and the CPU reference (tandem generate --json) to follow")
    p.add_argument("--timing", action="append", default=[], metavar="NAME", help="time generate() on this case")
    p.add_argument("--timing-tokens", type=int, default=64, help="new tokens per timed generate()")
    p.add_argument("--top", type=int, default=20, help="log-probabilities kept per position")
    p.add_argument("--ceilings", action="store_true", help="measure copy bandwidth and bf16 matmul rate")
    p.add_argument("--out", required=True, help="JSON file to write")
    return p.parse_args()


def load_model(torch, path, dtype):
    from transformers import AutoModelForCausalLM
    try:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except TypeError:  # transformers before 4.56 named it torch_dtype
        m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
    return m.to(DEVICE).eval()


def top_entries(torch, logits, k):
    """One position's chosen (argmax) token and its top-k log-probabilities."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    v, i = torch.topk(lp, k)
    top = [{"token": int(t), "logprob": float(x)} for t, x in zip(i.tolist(), v.tolist())]
    return {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}


def greedy(torch, model, prompt, n, k):
    out = model(torch.tensor([prompt], device=DEVICE), use_cache=True)
    steps = []
    for _ in range(n):
        e = top_entries(torch, out.logits[0, -1], k)
        steps.append(e)
        out = model(torch.tensor([[e["token"]]], device=DEVICE), past_key_values=out.past_key_values, use_cache=True)
    return {"token_ids": [e["token"] for e in steps], "logprobs": steps}


def forced(torch, model, prompt, tokens, k):
    seq = prompt + tokens[:-1]
    logits = model(torch.tensor([seq], device=DEVICE)).logits[0]
    steps = [top_entries(torch, logits[len(prompt) - 1 + i], k) for i in range(len(tokens))]
    return {"token_ids": [e["token"] for e in steps], "logprobs": steps, "fed_token_ids": tokens}


def time_generate(torch, model, prompt, n):
    """Median ms/token after the first token, and time to first token."""
    ids = torch.tensor([prompt], device=DEVICE)
    mask = torch.ones_like(ids)

    def run(new):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(8)  # warm-up: kernels, allocator
    firsts, per = [], []
    for _ in range(3):
        t1, tn = run(1), run(n)
        firsts.append(t1)
        per.append((tn - t1) / (n - 1))
    return {"dtype": "bfloat16", "new_tokens": n, "ms_per_token": 1e3 * statistics.median(per),
            "ttft_ms": 1e3 * statistics.median(firsts), "runs": 3}


def ceilings(torch):
    def median_ms(f, reps=10):
        f()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            f()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        return statistics.median(times)

    n = 1 << 28  # 1 GiB of float32, far beyond the L2
    a = torch.empty(n, dtype=torch.float32, device=DEVICE).uniform_()
    b = torch.empty_like(a)
    copy_ms = median_ms(lambda: b.copy_(a))
    del a, b
    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device=DEVICE)
    y = torch.randn(m, m, dtype=torch.bfloat16, device=DEVICE)
    mm_ms = median_ms(lambda: torch.mm(x, y))
    return {"copy_bytes": 4 * n, "copy_gbs": 2 * 4 * n / (copy_ms / 1e3) / 1e9,
            "matmul_n": m, "bf16_tflops": 2 * m ** 3 / (mm_ms / 1e3) / 1e12}


def torch_libraries():
    """The CUDA libraries torch mapped, to compare with what tandem opened."""
    out = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.rsplit(" ", 1)[-1].strip()
                if any(s in p for s in ("libcuda.so", "libcublas.so", "libnvrtc.so", "libnccl.so", "libcudart.so")):
                    out.add(p)
    except OSError:
        pass
    return sorted(out)


def main():
    args = parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        fail_no_cuda(f"torch/transformers cannot be imported ({e})")
    if not torch.cuda.is_available():
        fail_no_cuda("torch sees no GPU (torch.cuda.is_available() is False)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        res = run(torch, transformers, args)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    if res["errors"]:
        sys.exit(1)


def attempt(res, what, f):
    """Runs f; a failure is recorded and printed, and the rest goes on."""
    try:
        return f()
    except Exception as e:  # any failure of one part must not lose the others
        traceback.print_exc()
        res["errors"].append(f"{what}: {type(e).__name__}: {e}")
        return None


def run(torch, transformers, args):
    res = {"torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name(0), "cases": {}, "timing": {}, "errors": []}
    if args.ceilings:
        c = attempt(res, "ceilings", lambda: ceilings(torch))
        if c:
            res["ceilings"] = c
            print(f"ceilings: copy {c['copy_gbs']:.0f} GB/s, bf16 matmul {c['bf16_tflops']:.1f} TFLOP/s", flush=True)
    for case in args.case:
        name, rest = case.split("=", 1)
        path, ref_path = rest.rsplit(":", 1)
        t0 = time.perf_counter()
        res["cases"][name] = c = {}
        attempt(res, name, lambda: run_case(torch, args, res, c, name, path, ref_path))
        torch.cuda.empty_cache()
        print(f"{name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    res["libraries"] = torch_libraries()
    return res


def run_case(torch, args, res, c, name, path, ref_path):
    with open(ref_path) as f:
        ref = json.load(f)
    prompt, tokens = ref["prompt_token_ids"], ref["token_ids"]
    with open(f"{path}/config.json") as f:
        cfg = json.load(f)
    c["stored_dtype"] = stored = cfg.get("torch_dtype") or cfg.get("dtype")
    m = load_model(torch, path, torch.float32)
    c["greedy"] = greedy(torch, m, prompt, len(tokens), args.top)
    c["forced"] = forced(torch, m, prompt, tokens, args.top)
    del m
    if stored != "bfloat16" and name not in args.timing:
        return
    m = load_model(torch, path, torch.bfloat16)
    if stored == "bfloat16":
        c["forced_bf16"] = forced(torch, m, prompt, tokens, args.top)
    if name in args.timing:
        t = res["timing"][name] = time_generate(torch, m, prompt, args.timing_tokens)
        print(f"{name}: generate() {t['ms_per_token']:.2f} ms/token, TTFT {t['ttft_ms']:.1f} ms (bf16, batch 1)", flush=True)


if __name__ == "__main__":
    main()
