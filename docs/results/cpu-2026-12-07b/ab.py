import sys,re,statistics as st,collections
# lines "== <variant>" followed by Benchmark lines; prints median metric per bench per variant
f=sys.argv[1]; metrics=sys.argv[2].split(',')
cur=None; d=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(f):
    if l.startswith('=='): cur=l[2:].strip(); continue
    if not l.startswith('Benchmark'): continue
    parts=l.split(); name=parts[0]
    for i in range(len(parts)-1):
        if parts[i+1] in metrics: d[name][(cur,parts[i+1])].append(float(parts[i]))
variants=[]
for l in open(f):
    if l.startswith('=='):
        v=l[2:].strip()
        if v not in variants: variants.append(v)
for name in d:
    for m in metrics:
        row=[]
        for v in variants:
            xs=d[name].get((v,m),[])
            row.append(f"{v}:{st.median(xs):.1f}({min(xs):.0f}-{max(xs):.0f})" if xs else f"{v}:-")
        print(f"{name[15:]:40s} {m:6s} "+"  ".join(row))
