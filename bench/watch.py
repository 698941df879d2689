"""`fkp watch` latency and idle cost.

Runs `fkp watch` on a small pipeline (the bundled 300-face sample, LeNet, 1 epoch),
then, after the first round:
  * saves 20 edits of `[evaluate] samples` (each value new, so evaluate must run)
    and times each save to the `evaluate running` line fkp prints (the
    affected stage starting): median, fastest and slowest;
  * leaves the watch idle for IDLE seconds and reads the CPU time the process
    used meanwhile from /proc/<pid>/stat (all its threads).
Once with inotify (default debounce 200 ms) and once with --poll (interval 1 s).

    python3 bench/watch.py [FKP_BINARY] [IDLE_SECONDS]
"""

import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FKP = os.path.abspath(
    sys.argv[1] if len(sys.argv) > 1
    else os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "fkp"))
IDLE = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
EDITS = 20
TICKS = os.sysconf("SC_CLK_TCK")

PIPELINE = """[ingest]
train = "{root}/datasets/faces300-sparse.csv.gz"
[prepare]
missing = "mask"
[model]
arch = "lenet"
[train]
device = "cpu"
epochs = 1
[evaluate]
samples = {samples}
"""


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(extra_args):
    work = tempfile.mkdtemp(prefix="fkp-watch-bench.")
    pipeline = os.path.join(work, "p.toml")

    def save(samples):
        with open(pipeline, "w") as f:
            f.write(PIPELINE.format(root=ROOT, samples=samples))

    save(1)
    proc = subprocess.Popen([FKP, "watch", "p.toml", *extra_args], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()

    def read():
        for line in proc.stderr:
            lines.put((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()

    def wait_for(text, limit=300):
        deadline = time.monotonic() + limit
        while True:
            at, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if text in line:
                return at

    wait_for("waiting for changes")
    latencies = []
    for i in range(EDITS):
        time.sleep(0.3)  # let the previous round's events settle
        saved = time.monotonic()
        save(i + 2)
        started = wait_for("evaluate   running")
        latencies.append(started - saved)
        wait_for("waiting for changes")

    time.sleep(1.0)
    before = cpu_seconds(proc.pid)
    time.sleep(IDLE)
    idle_cpu = cpu_seconds(proc.pid) - before
    proc.send_signal(2)
    code = proc.wait(timeout=60)
    subprocess.run(["rm", "-rf", work])
    ms = sorted(1000 * x for x in latencies)
    return {
        "median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1],
        "idle_cpu_s": idle_cpu, "idle_cpu_pct": 100 * idle_cpu / IDLE, "exit": code,
    }


print(f"fkp: {FKP}; {EDITS} edits each; idle {IDLE:.0f} s")
print(f"{'mode':<22} {'median':>9} {'fastest':>9} {'slowest':>9} {'idle CPU':>12} {'exit':>5}")
for name, args in [("inotify, debounce 200", []), ("poll 1 s, debounce 200", ["--poll"])]:
    r = measure(args)
    print(f"{name:<22} {r['median_ms']:>7.0f}ms {r['min_ms']:>7.0f}ms {r['max_ms']:>7.0f}ms "
          f"{r['idle_cpu_s']:>6.2f} s {r['idle_cpu_pct']:>4.2f}% {r['exit']:>5}", flush=True)
