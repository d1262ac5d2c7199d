# Mean 1-minute load average of each run in loadavg.txt, and the nice-weighted
# background load it implies: max(0, L - 3) * 1024/9548.
import re
runs=[]; cur=None
for l in open(__import__('sys').argv[1] if len(__import__('sys').argv) > 1 else 'loadavg.txt'):
    p=l.split()
    if len(p)>2 and p[1]=='start':
        cur={'name':p[2],'start':p[0],'s':[float(p[4])]}; runs.append(cur)
    elif len(p)>2 and p[1]=='end':
        cur['end']=p[0]; cur['s'].append(float(p[4].split('=')[-1]) if False else float(p[4]) if p[3]=='load:' else float(p[5]))
        cur=None
    elif cur and len(p)>=3 and p[1]==cur['name']:
        cur['s'].append(float(p[2]))
for r in runs:
    L=sum(r['s'])/len(r['s'])
    print(f"{r['name']:16s} {r['start']}-{r.get('end','?')}  samples {len(r['s']):3d}  mean load {L:5.1f}  min {min(r['s']):5.1f} max {max(r['s']):5.1f}  background {max(0,L-3)*1024/9548:.2f}")
