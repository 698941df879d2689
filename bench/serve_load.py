"""The event-stream half of `bench/serve_load.sh`: many `/api/events` clients at once.

Python 3 standard library only (asyncio sockets, HTTP/1.1 with chunked bodies, the
text/event-stream format parsed by hand), so the load does not come from fkp itself.

    python3 bench/serve_load.py clients --port PORT --clients 200 --hold 60 \
        --pipeline NAME --serve-pid PID --ready FILE --out clients.json
        Opens CLIENTS streams, waits until each has its `hello` event, writes FILE
        (the moment to start the training), holds every stream open for HOLD seconds
        while sampling the server's RSS (VmRSS of /proc/PID/status) once a second,
        then closes them and writes what each client received to OUT.

    python3 bench/serve_load.py report --clients clients.json \
        --baseline TIMING.json [--baseline TIMING.json] --loaded TIMING.json
        Prints the summary: events per client, whether every client got every epoch
        event, the server's RSS, and the training's images/s under load against the
        same training with no server (each the train entry's timing.json; with two
        baselines, run before and after the loaded one, against both together, so a
        drift in the machine's load cancels).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time


def now_ms():
    return time.time() * 1000.0


class Client:
    """One event stream: counts its events by name and keeps the epoch events of
    one pipeline (epoch -> [at_ms, received_ms])."""

    def __init__(self, index, pipeline):
        self.index = index
        self.pipeline = pipeline
        self.counts = {}
        self.epochs = {}
        self.hello = asyncio.Event()
        self.error = None
        self.closed_early = False

    def dispatch(self, name, data):
        received = now_ms()
        self.counts[name] = self.counts.get(name, 0) + 1
        if name == "hello":
            self.hello.set()
        elif name == "epoch":
            try:
                body = json.loads(data)
            except ValueError:
                self.error = f"epoch event with bad JSON: {data[:200]!r}"
                return
            if body.get("pipeline") == self.pipeline:
                self.epochs[int(body["epoch"])] = [body.get("at_ms"), received]

    async def run(self, host, port):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            self.error = f"connect: {e}"
            self.hello.set()
            return
        try:
            writer.write(
                (f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode())
            await writer.drain()
            status = (await reader.readline()).decode("latin-1").strip()
            headers = {}
            while True:
                line = (await reader.readline()).decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip().lower()
            if " 200" not in status:
                self.error = f"status {status!r}"
                self.hello.set()
                return
            if "text/event-stream" not in headers.get("content-type", ""):
                self.error = f"content-type {headers.get('content-type')!r}"
                self.hello.set()
                return
            chunked = "chunked" in headers.get("transfer-encoding", "")
            await self.read_events(reader, chunked)
            self.closed_early = True  # the server ended the stream
        except (OSError, asyncio.IncompleteReadError) as e:
            self.error = f"stream: {e!r}"
            self.closed_early = True
        finally:
            self.hello.set()
            writer.close()

    async def read_events(self, reader, chunked):
        buffer = b""
        name, data = "message", []
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                piece = await reader.readexactly(size)
                await reader.readexactly(2)  # CRLF after the chunk
            else:
                piece = await reader.read(65536)
                if not piece:
                    return
            buffer += piece
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                if line == "":
                    if data:
                        self.dispatch(name, "\n".join(data))
                    name, data = "message", []
                elif line.startswith(":"):
                    continue  # keep-alive comment
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def clients_main(args):
    rss_idle = rss_kib(args.serve_pid)
    clients = [Client(i, args.pipeline) for i in range(args.clients)]
    tasks = [asyncio.create_task(c.run(args.host, args.port)) for c in clients]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.hello.wait() for c in clients)), args.connect_timeout)
    except asyncio.TimeoutError:
        pass
    connected = sum(1 for c in clients if c.counts.get("hello") and not c.error)
    rss_connected = rss_kib(args.serve_pid)
    print(f"serve_load.py: {connected} of {args.clients} event streams open "
          f"(server RSS {fmt_mib(rss_idle)} before, {fmt_mib(rss_connected)} with them)", flush=True)
    hold_start = now_ms()
    cpu_start = cpu_seconds(args.serve_pid)
    own_start = time.process_time()
    with open(args.ready, "w") as f:
        f.write(f"{hold_start}\n")
    samples = []
    start = time.monotonic()
    for second in range(1, int(args.hold) + 1):
        samples.append(rss_kib(args.serve_pid))
        await asyncio.sleep(max(0.0, start + second - time.monotonic()))
    samples.append(rss_kib(args.serve_pid))
    hold_end = now_ms()
    cpu_end = cpu_seconds(args.serve_pid)
    own_cpu = time.process_time() - own_start
    still_open = sum(1 for c in clients if c.counts.get("hello") and not c.closed_early)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = {
        "clients": args.clients,
        "connected": connected,
        "open_at_end": still_open,
        "pipeline": args.pipeline,
        "hold_s": args.hold,
        "hold_start_ms": hold_start,
        "hold_end_ms": hold_end,
        "rss_kib_idle": rss_idle,
        "rss_kib_connected": rss_connected,
        "rss_kib_samples": samples,
        "serve_cpu_s": None if cpu_start is None or cpu_end is None else cpu_end - cpu_start,
        "clients_cpu_s": own_cpu,
        "per_client": [
            {"counts": c.counts, "epochs": c.epochs, "error": c.error, "closed_early": c.closed_early}
            for c in clients
        ],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0 if connected == args.clients else 1


def fmt_mib(kib):
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def epochs_of(timing_path):
    with open(timing_path) as f:
        timing = json.load(f)
    return {int(e["epoch"]): e for e in timing["stage"]["epochs"]}


def throughput(epochs, numbers):
    """Images per second over the given epochs together (sum of images / sum of seconds)."""
    images = sum(epochs[n]["images_per_s"] * epochs[n]["seconds"] for n in numbers)
    seconds = sum(epochs[n]["seconds"] for n in numbers)
    return images / seconds if seconds else float("nan")


def report_main(args):
    with open(args.clients) as f:
        run = json.load(f)
    per_client = run["per_client"]
    hold_start, hold_end = run["hold_start_ms"], run["hold_end_ms"]
    print()
    print(f"event streams: {run['connected']} of {run['clients']} connected, "
          f"{run['open_at_end']} still open after {run['hold_s']:.0f} s")
    names = sorted({name for c in per_client for name in c["counts"]})
    for name in names:
        counts = [c["counts"].get(name, 0) for c in per_client]
        print(f"  {name:>9} events per client: min {min(counts)}, median {statistics.median(counts):g}, "
              f"max {max(counts)}")
    totals = [sum(c["counts"].values()) for c in per_client]
    print(f"  {'all':>9} events per client: min {min(totals)}, median {statistics.median(totals):g}, "
          f"max {max(totals)}; {sum(totals)} in all")
    errors = [c["error"] for c in per_client if c["error"]]
    if errors:
        print(f"  {len(errors)} clients had errors, e.g. {errors[0]}")

    # Every epoch that ended while the streams were open (with a second to arrive)
    # must have reached every client.
    seen = {}
    for c in per_client:
        for epoch, (at_ms, _) in c["epochs"].items():
            seen[int(epoch)] = at_ms
    expected = sorted(e for e, at in seen.items() if at is not None and at <= hold_end - 1000)
    missing = [c for c in per_client if any(str(e) not in c["epochs"] for e in expected)]
    print(f"epoch events of `{run['pipeline']}` during the hold: {len(expected)} "
          f"(epochs {expected[0] if expected else '-'}..{expected[-1] if expected else '-'}); "
          f"clients missing any: {len(missing)} of {len(per_client)}")
    delays = [received - at for c in per_client for (at, received) in c["epochs"].values() if at is not None]
    if delays:
        delays.sort()
        print(f"  epoch written -> received by a client: median {statistics.median(delays):.0f} ms, "
              f"p99 {delays[min(len(delays) - 1, int(len(delays) * 0.99))]:.0f} ms, max {delays[-1]:.0f} ms "
              f"({len(delays)} deliveries)")

    samples = [s for s in run["rss_kib_samples"] if s is not None]
    if samples:
        print(f"serve RSS: {fmt_mib(run['rss_kib_idle'])} before the clients, "
              f"{fmt_mib(run['rss_kib_connected'])} with {run['connected']} open, "
              f"max {fmt_mib(max(samples))} over {len(samples)} samples (1 s apart)")
    if run.get("serve_cpu_s") is not None:
        print(f"serve CPU during the hold: {run['serve_cpu_s']:.2f} s in {run['hold_s']:.0f} s "
              f"({run['serve_cpu_s'] / run['hold_s'] * 100:.1f}% of one core); the Python clients: "
              f"{run['clients_cpu_s']:.2f} s ({run['clients_cpu_s'] / run['hold_s'] * 100:.1f}%)")

    ok = bool(expected) and not missing and run["connected"] == run["clients"] and not errors
    if args.baseline and args.loaded:
        bases = [epochs_of(path) for path in args.baseline]
        loaded = epochs_of(args.loaded)
        # Epochs that ran entirely inside the hold (the first epoch warms up: left out).
        inside = sorted(
            e for e, at in seen.items()
            if e > 1 and e in loaded and all(e in b for b in bases) and at is not None
            and at - loaded[e]["seconds"] * 1000 >= hold_start and at <= hold_end)
        common = sorted(e for e in loaded if e > 1 and all(e in b for b in bases))
        labels = ["before", "after"] if len(bases) == 2 else [f"#{i + 1}" for i in range(len(bases))]
        print(f"training images/s (timing.json): loaded run / the same training with no server "
              f"({', '.join(labels)} it)")
        for what, numbers in ((f"inside the {run['hold_s']:.0f} s hold", inside), ("whole run", common)):
            if not numbers:
                print(f"  {what}: no epoch ran entirely inside the hold")
                ok = False
                continue
            l = throughput(loaded, numbers)
            each = [throughput(b, numbers) for b in bases]
            pooled = len(numbers) * len(bases) / sum(len(numbers) / x for x in each)  # harmonic mean
            line = (f"  {what}, epochs {numbers[0]}..{numbers[-1]} ({len(numbers)}): loaded {l:.1f} img/s; "
                    f"no server {' / '.join(f'{x:.1f}' for x in each)} img/s")
            if len(bases) > 1:
                line += f" ({pooled:.1f} together)"
            print(line)
            ratio = l / pooled
            print(f"    ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%, target within 5%)"
                  + ("" if len(bases) == 1 else
                     "; against each: " + ", ".join(f"{l / x:.3f}" for x in each)))
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--clients", type=int, default=200)
    c.add_argument("--hold", type=float, default=60.0)
    c.add_argument("--pipeline", required=True, help="count the epoch events of this pipeline")
    c.add_argument("--serve-pid", type=int, required=True)
    c.add_argument("--ready", required=True, help="written once every stream is open")
    c.add_argument("--out", required=True)
    c.add_argument("--connect-timeout", type=float, default=30.0)
    r = sub.add_parser("report")
    r.add_argument("--clients", required=True)
    r.add_argument("--baseline", action="append",
                   help="timing.json of the training with no server (repeatable: runs before and after)")
    r.add_argument("--loaded", help="timing.json of the training under load")
    args = parser.parse_args()
    if args.command == "clients":
        return asyncio.run(clients_main(args))
    return report_main(args)


if __name__ == "__main__":
    sys.exit(main())
