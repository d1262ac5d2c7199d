#!/usr/bin/env python3
"""Per-op table (median ms per step over the runs) of a benchmark output
made with -ops: one column per benchmark, one row per op."""
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if not line.startswith("Benchmark"):
        continue
    f = line.split()
    name = re.sub(r"-\d+$", "", f[0]).replace("Benchmark", "")
    m = {f[i + 1]: float(f[i]) for i in range(2, len(f) - 1, 2)}
    runs.setdefault(name, []).append(m)
ops = ["embed", "norm", "q_proj", "k_proj", "v_proj", "rope", "kv_write", "attention", "o_proj",
       "residual", "up_proj", "gate_proj", "act", "down_proj", "lm_head", "logits"]
names = list(runs)
print("| op (ms/step) | " + " | ".join(names) + " |")
print("| --- |" + " --- |" * len(names))
for op in ops + ["total"]:
    cells = []
    for n in names:
        if op == "total":
            v = statistics.median(sum(r.get(o + "-ms/step", 0) for o in ops) for r in runs[n])
        else:
            v = statistics.median(r.get(op + "-ms/step", 0) for r in runs[n])
        cells.append(f"{v:.3g}")
    print(f"| {op} | " + " | ".join(cells) + " |")
