# Medians of an A/B file (ab.sh's output): compare.py ab.txt tok/s,other-ms/step,...
# prints each benchmark's old -> new medians of the given metrics.
import sys,collections
d=collections.defaultdict(lambda: collections.defaultdict(list))
v=None
metrics=sys.argv[2].split(',')
for line in open(sys.argv[1]):
    if line.startswith('=='): v=line.split()[1]; continue
    if not line.startswith('Bench'): continue
    name=line.split()[0]
    for part in line.split('\t')[2:]:
        p=part.split()
        if len(p)==2: d[(name,v)][p[1]].append(float(p[0]))
names=sorted(set(k[0] for k in d))
med=lambda l: sorted(l)[len(l)//2] if l else float('nan')
for n in names:
    print(n.replace('Benchmark',''), '  '.join(f"{m} {med(d[(n,'old')][m]):.4g}->{med(d[(n,'new')][m]):.4g}" for m in metrics))
