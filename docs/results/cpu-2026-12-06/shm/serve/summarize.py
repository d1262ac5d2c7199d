import json,glob,statistics as st,sys,re
D=sys.argv[1]
keys=["output_throughput","mean_ttft_ms","median_ttft_ms","mean_tpot_ms","median_tpot_ms","p99_e2el_ms"]
rows={}
for f in glob.glob(D+"/*.json"):
    m=re.match(r'(tp\w+)-r(\d)-c(\d+)\.json',f.split('/')[-1])
    if not m: continue
    d=json.load(open(f))
    rows.setdefault((m.group(1),int(m.group(3))),[]).append(d)
def fmt(x): return f"{x:.3g}" if x<100 else f"{x:.0f}"
print("| deployment | concurrency | runs | "+" | ".join(keys)+" |")
print("|"+" --- |"*(len(keys)+3))
for (name,c) in sorted(rows, key=lambda k:(k[1],k[0])):
    v=rows[(name,c)]
    cells=[f"{fmt(st.median([d[k] for d in v]))} ({fmt(min(d[k] for d in v))}–{fmt(max(d[k] for d in v))})" for k in keys]
    print(f"| {name} | {c} | {len(v)} | "+" | ".join(cells)+" |")
