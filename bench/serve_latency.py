"""`fkp serve`: the time from a training's epoch end to the browser's update.

In a scratch workspace (a copy of datasets/) it starts `fkp serve --port 0`, opens its
page in headless Chromium driven by Selenium, then starts a training in another process
(`fkp run`: a small LeNet-style network on the bundled 300-face sample, batch 32,
COUNT + 1 epochs of about a second each). The page records every server-sent event it
receives in `window.__fkp.events` ({name, data, receivedAt: Date.now()}); the latency of
an epoch is `receivedAt - data.at_ms` of its `epoch` event, `at_ms` being the wall-clock
time (unix ms) at which the training wrote the epoch to its live log. Both clocks are
this machine's. Prints the median and the slowest of the first COUNT epochs (20).

A Python client on the same event stream (bench/serve_load.py's, stdlib asyncio) measures
the same thing beside the browser, so the server's share and the browser's can be told
apart; `--sse-only` measures with it alone (no browser needed).

    python3 bench/serve_latency.py [FKP_BINARY] [--count 20] [--sse-only | --inject]

`--inject` is for a page that does not record its events: the script adds an EventSource
of its own to the page that records them the same way (the browser's delivery, without
the page's own code).

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver;
installed with apt-get when missing, as root) and the `selenium` package, which it
installs into a venv (FKP_SELENIUM_VENV, default ~/.cache/fkp-bench-selenium) and re-runs
itself with. Selenium is given the driver's path, so Selenium Manager downloads nothing.
Everything is on 127.0.0.1. About a minute.
"""

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.dont_write_bytecode = True  # no bench/__pycache__ from the import below
from serve_load import Client  # noqa: E402  (the stdlib event-stream client)

VENV = os.environ.get("FKP_SELENIUM_VENV", os.path.expanduser("~/.cache/fkp-bench-selenium"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Selenium is handed the driver and the browser: its manager must never fetch either.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")
PIPELINE = "lat"

PIPELINE_TOML = """[pipeline]
description = "serve_latency: a small LeNet-style network, {epochs} short epochs"

[ingest]
train = "../datasets/faces300-sparse.csv.gz"

[eda]
plots = []

[prepare]
missing = "mask"
val = 0.2

[model]
side = 96
layers = [
  {{ conv = 16, kernel = 3 }}, "relu", {{ maxpool = 2 }},
  {{ conv = 32, kernel = 3 }}, "relu", {{ maxpool = 2 }},
  {{ conv = 64, kernel = 3 }}, "relu", {{ maxpool = 2 }},
  "flatten",
]
head = [{{ dense = 128 }}, "relu", {{ dropout = 0.2 }}]

[train]
device = "cpu"
epochs = {epochs}
batch_size = 32
seed = {seed}

[evaluate]
truth = "../datasets/faces300-full.csv.gz"
samples = 4
"""

# The page's epoch events of the pipeline: [epoch, at_ms, receivedAt].
PAGE_EPOCHS_JS = """
const f = window.__fkp;
if (!f || !Array.isArray(f.events)) return null;
return f.events
  .filter(e => e.name === 'epoch' && e.data && e.data.pipeline === arguments[0])
  .map(e => [e.data.epoch, e.data.at_ms, e.receivedAt]);
"""


def ensure_selenium():
    try:
        import selenium  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit(f"selenium is missing from {VENV}")
    if not os.path.exists(python):
        print(f"creating {VENV} with selenium...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "selenium"], check=True)
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def ensure_chromium():
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.geteuid() != 0:
        sys.exit("needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver")
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def start_serve(fkp, work):
    log = open(os.path.join(work, "serve.log"), "w+")
    proc = subprocess.Popen([fkp, "serve", "--port", "0"], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log.seek(0)
        for word in log.read().split():
            if word.startswith("http://127.0.0.1:"):
                return proc, int(word.rstrip("/").rsplit(":", 1)[1])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    sys.exit(f"fkp serve did not start:\n{log.read()}")


class StreamThread:
    """bench/serve_load.py's Client on its own event loop, in a thread."""

    def __init__(self, port):
        self.client = Client(0, PIPELINE)
        self.ready = threading.Event()
        self.loop = None
        self.task = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main(port)), daemon=True)
        self.thread.start()

    async def _main(self, port):
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.create_task(self.client.run("127.0.0.1", port))
        await self.client.hello.wait()
        self.ready.set()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    def epochs(self):
        return sorted((int(e), at, received) for e, (at, received) in list(self.client.epochs.items()))

    def stop(self):
        if self.loop and self.task:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=5)


# --inject: what the page does, for a page that does not (yet): an EventSource on
# /api/events recording every event as the page would.
INJECT_JS = """
if (window.__fkp && Array.isArray(window.__fkp.events)) return false;
window.__fkp = { events: [] };
const source = new EventSource('/api/events');
for (const name of ['hello', 'status', 'run', 'progress', 'epoch', 'lagged']) {
  source.addEventListener(name, m => {
    let data = m.data;
    try { data = JSON.parse(m.data); } catch (_) {}
    window.__fkp.events.push({ name, data, receivedAt: Date.now() });
  });
}
return true;
"""


def open_browser(url, profile, inject):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(10)
    driver.get(url)
    if inject and driver.execute_script(INJECT_JS):
        print("--inject: the page records no events itself; an injected EventSource does", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = driver.execute_script(
            "return !!(window.__fkp && Array.isArray(window.__fkp.events)"
            " && window.__fkp.events.some(e => e.name === 'hello'));")
        if ready:
            return driver
        time.sleep(0.2)
    driver.quit()
    sys.exit(f"the page at {url} does not record its events in window.__fkp.events "
             "(or got no `hello` event in 30 s); --sse-only measures with a Python client, --inject "
             "with an EventSource of its own in the page")


def summarize(label, epochs, count):
    """epochs: [(epoch, at_ms, received_ms)]. Prints and returns (median, max) of the first `count`."""
    first = [e for e in sorted(epochs) if e[1] is not None][:count]
    if not first:
        print(f"{label}: no epoch events")
        return None
    latencies = [received - at for _, at, received in first]
    print(f"{label}: epochs {first[0][0]}..{first[-1][0]} ({len(first)}), latency ms: "
          + " ".join(f"{x:.0f}" for x in latencies))
    return statistics.median(latencies), max(latencies), min(latencies), len(first)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fkp", nargs="?", default=os.environ.get("FKP_BIN", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "fkp")))
    parser.add_argument("--count", type=int, default=20, help="epochs to time (default 20)")
    parser.add_argument("--sse-only", action="store_true", help="no browser: the Python client only")
    parser.add_argument("--inject", action="store_true",
                        help="when the page records no events itself, record them with an EventSource "
                             "injected into it (measures the browser, not the page's own code)")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args()
    fkp = os.path.abspath(args.fkp)
    if not os.access(fkp, os.X_OK):
        sys.exit(f"no fkp binary at {fkp}")
    if not args.sse_only:
        ensure_chromium()
        ensure_selenium()

    work = tempfile.mkdtemp(prefix="fkp-serve-latency.")
    profile = tempfile.mkdtemp(prefix="fkp-serve-latency-chromium.")
    serve = train = driver = stream = None
    # A kill (SIGTERM, SIGHUP) unwinds through the finally below like Ctrl-C.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        shutil.copytree(os.path.join(ROOT, "datasets"), os.path.join(work, "datasets"))
        os.mkdir(os.path.join(work, "pipelines"))
        epochs = args.count + 1  # one more: the last is announced as the run ends
        with open(os.path.join(work, "pipelines", f"{PIPELINE}.toml"), "w") as f:
            f.write(PIPELINE_TOML.format(epochs=epochs, seed=int(time.time()) % 100000))
        # Everything before the training, so that the epochs start at once.
        subprocess.run([fkp, "-q", "run", "--until", "prepare", f"pipelines/{PIPELINE}.toml"], cwd=work, check=True)
        serve, port = start_serve(fkp, work)
        url = f"http://127.0.0.1:{port}/"
        stream = StreamThread(port)
        if not stream.ready.wait(10) or stream.client.error:
            sys.exit(f"the event stream did not open: {stream.client.error}")
        if not args.sse_only:
            driver = open_browser(url, profile, args.inject)
            print(f"page open at {url} in {driver.capabilities.get('browserName')} "
                  f"{driver.capabilities.get('browserVersion')}", flush=True)
        train_log = open(os.path.join(work, "train.log"), "w")
        train = subprocess.Popen([fkp, "run", f"pipelines/{PIPELINE}.toml"], cwd=work,
                                 stdout=train_log, stderr=subprocess.STDOUT)
        print(f"training `{PIPELINE}` ({epochs} epochs) in another process...", flush=True)
        deadline = time.monotonic() + args.timeout
        page = []
        while time.monotonic() < deadline:
            page = (driver.execute_script(PAGE_EPOCHS_JS, PIPELINE) or []) if driver else []
            have = len(page) if driver else len(stream.epochs())
            if have >= epochs or train.poll() is not None:
                break
            time.sleep(0.25)
        # The training has ended or we have every epoch: give the last events a moment.
        try:
            train.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
        if driver:
            page = driver.execute_script(PAGE_EPOCHS_JS, PIPELINE) or []
        if train.returncode not in (0, None):
            with open(os.path.join(work, "train.log")) as f:
                print(f.read())
            sys.exit(f"the training failed (exit {train.returncode})")

        sse = stream.epochs()
        print()
        print(f"=== fkp serve: epoch end -> client, {args.count} epochs of about "
              f"{seconds_per_epoch(sse):.1f} s ({os.cpu_count()} cores, load average "
              f"{' '.join(open('/proc/loadavg').read().split()[:3])}) ===")
        rows = []
        if driver:
            rows.append(("headless Chromium page (window.__fkp.events)",
                         summarize("browser", [(int(e), at, rec) for e, at, rec in page], args.count),
                         len({int(e[0]) for e in page})))
        rows.append(("Python event-stream client", summarize("python ", sse, args.count), len(sse)))
        print()
        failed = False
        for label, numbers, received in rows:
            if numbers is None:
                print(f"{label}: no epoch events")
                failed = True
                continue
            median, slowest, fastest, n = numbers
            print(f"{label}: median {median:.0f} ms, slowest {slowest:.0f} ms, fastest {fastest:.0f} ms "
                  f"over {n} epochs; epoch events received: {received} of {epochs}")
            failed |= n < args.count
        return 1 if failed else 0
    finally:
        if driver:
            driver.quit()
        if stream:
            stream.stop()
        for proc, sig in ((train, signal.SIGINT), (serve, signal.SIGTERM)):
            if proc and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)


def interrupt(*_):
    raise KeyboardInterrupt


def seconds_per_epoch(epochs):
    ats = [at for _, at, _ in epochs if at is not None]
    if len(ats) < 2:
        return float("nan")
    return (ats[-1] - ats[0]) / 1000 / (len(ats) - 1)


if __name__ == "__main__":
    sys.exit(main())
