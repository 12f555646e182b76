#!/usr/bin/env python3
# The bare atomic write skycanary's file stores do (temp file, fsync, rename, fsync of the
# directory), 3.3 KB, N times, in DIR (default: $TMPDIR or /tmp). Prints p50 / p90 / max in ms.
# Usage: python3 benches/atomic_write_probe.py [DIR] [N]
import os, shutil, sys, time, tempfile
d = tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
data = b"x" * 3300
ts = []
for i in range(n):
    t0 = time.perf_counter()
    tmp = os.path.join(d, ".s.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data); os.fsync(fd); os.close(fd)
    os.rename(tmp, os.path.join(d, "s.json"))
    dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
    ts.append((time.perf_counter() - t0) * 1000)
ts.sort()
shutil.rmtree(d)
print(f"{d}: atomic write x{n}: p50 {ts[n//2]:.2f} ms, p90 {ts[int(n*0.9)]:.2f} ms, max {ts[-1]:.2f} ms")
