#!/usr/bin/env python3
"""Sum Recv-Q/Send-Q by role: ssq2.py [samples] [interval]. Roles: fake (load's sockets on the fake's port),
client (load's other sockets), proxy-up (tars/nginx sockets to the fake), proxy-down (tars/nginx others)."""
import subprocess, sys, time, re, collections
n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
dt = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
for _ in range(n):
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if len(f) < 5: continue
        proc = re.search(r'"([^"]+)"', line); proc = proc.group(1) if proc else "?"
        rows.append((int(f[0]), int(f[1]), f[2].rsplit(":",1)[1], f[3].rsplit(":",1)[1], proc))
    loadlocal = collections.Counter(l for rq,sq,l,p,pr in rows if pr.startswith("load"))
    fakeport = loadlocal.most_common(1)[0][0] if loadlocal else None
    agg = collections.defaultdict(lambda: [0,0,0])
    for rq,sq,l,p,pr in rows:
        if pr.startswith("load"):
            k = "fake" if l == fakeport else "client"
        elif pr in ("tars", "nginx"):
            k = pr + ("-up" if p == fakeport else "-down")
        else: continue
        a=agg[k]; a[0]+=rq; a[1]+=sq; a[2]+=1
    print(time.strftime("%T"), "  ".join(f"{k}: n={v[2]} r={v[0]//1024}K s={v[1]//1024}K" for k,v in sorted(agg.items())), flush=True)
    time.sleep(dt)
