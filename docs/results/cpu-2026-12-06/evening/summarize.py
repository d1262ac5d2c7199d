# Median (lowest-highest) of each benchmark row over its runs: summarize.py FILE METRIC,METRIC,...
import re,sys,statistics as st,collections
rows=collections.OrderedDict()
for l in open(sys.argv[1]):
    m=re.match(r'Benchmark(\S+?)-2\s+\d+\s+\d+ ns/op\s+(.*)',l)
    if not m: continue
    name=m.group(1); vals=dict((k,float(v)) for v,k in re.findall(r'([\d.]+) (\S+)',m.group(2)))
    rows.setdefault(name,[]).append(vals)
keys=sys.argv[2].split(',')
def f(x): return f"{x:.3g}" if x<100 else f"{x:.0f}"
print("| "+" | ".join(["benchmark"]+keys)+" |")
print("|"+" --- |"*(len(keys)+1))
for n,v in rows.items():
    cells=[]
    for k in keys:
        xs=[r[k] for r in v if k in r]
        cells.append(f"{f(st.median(xs))} ({f(min(xs))}–{f(max(xs))})" if xs else "-")
    print(f"| {n} | "+" | ".join(cells)+f" |")
