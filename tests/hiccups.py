"""How steady this machine's scheduling is: sleeps 1 ms over and over for N
seconds and reports how often, and by how much, a sleep overran by more than
5 ms. Frames are due every 20 ms, so overruns of this size on an idle machine
bound what any end-to-end latency figure here can promise.

Usage: python3 tests/hiccups.py [seconds, default 20]   (run one per CPU with taskset to probe each)
"""
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
end = time.monotonic() + seconds
overruns = []
samples = 0
while time.monotonic() < end:
    t = time.monotonic()
    time.sleep(0.001)
    late_ms = (time.monotonic() - t) * 1000 - 1
    samples += 1
    if late_ms > 5:
        overruns.append(late_ms)
print(
    f"{samples} sleeps of 1 ms in {seconds:.0f} s: {len(overruns)} overran by > 5 ms"
    + (f", worst {max(overruns):.1f} ms" if overruns else "")
)
