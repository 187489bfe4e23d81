#!/usr/bin/env python3
"""A slow backend for bench/slots: a fixed pool of --workers workers, each
request takes a uniformly random --min-ms..--max-ms, and requests that find
every worker busy wait for one (like a worker pool behind a listen backlog).

It records its own concurrency every --interval seconds into --stats (TSV):

  t          seconds since start
  inflight   requests inside the backend now (waiting for a worker or served)
  inflight_max  the most at once since the previous line (exact, not sampled)
  busy       workers busy now
  completed  responses sent so far

Standard library only. Stops on SIGTERM/SIGINT."""

import argparse
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, workers, min_ms, max_ms, seed):
        self.lock = threading.Lock()
        self.workers = threading.Semaphore(workers)
        self.rng = random.Random(seed)
        self.min_s = min_ms / 1000
        self.max_s = max_ms / 1000
        self.inflight = 0
        self.inflight_max = 0
        self.busy = 0
        self.completed = 0

    def service_time(self):
        with self.lock:
            return self.rng.uniform(self.min_s, self.max_s)


BODY = b"done\n"


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tollgate's pool expects
        # Header and body go out in two writes; with Nagle on, the body waits
        # for tollgate's delayed ACK (40 ms), which would hold each slot 40 ms
        # longer than the work takes.
        disable_nagle_algorithm = True

        def do_GET(self):
            with state.lock:
                state.inflight += 1
                state.inflight_max = max(state.inflight_max, state.inflight)
            try:
                delay = state.service_time()
                with state.workers:
                    with state.lock:
                        state.busy += 1
                    time.sleep(delay)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY)
                    self.wfile.flush()
                    with state.lock:
                        state.busy -= 1
                        state.completed += 1
            finally:
                with state.lock:
                    state.inflight -= 1

        def log_message(self, fmt, *args):
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True


def sampler(state, path, interval, stop):
    start = time.monotonic()
    with open(path, "w", buffering=1) as f:
        f.write("t\tinflight\tinflight_max\tbusy\tcompleted\n")
        while not stop.wait(interval):
            with state.lock:
                line = (f"{time.monotonic() - start:.3f}\t{state.inflight}\t{state.inflight_max}"
                        f"\t{state.busy}\t{state.completed}\n")
                state.inflight_max = state.inflight
            f.write(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--min-ms", type=int, default=100)
    ap.add_argument("--max-ms", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    a = ap.parse_args()

    state = State(a.workers, a.min_ms, a.max_ms, a.seed)
    server = Server(("127.0.0.1", a.port), make_handler(state))
    stop = threading.Event()
    t = threading.Thread(target=sampler, args=(state, a.stats, a.interval, stop), daemon=True)
    t.start()

    def on_signal(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"slots backend on 127.0.0.1:{a.port}, {a.workers} workers, {a.min_ms}-{a.max_ms} ms",
          file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.1)
    stop.set()
    t.join(timeout=2)


if __name__ == "__main__":
    main()
