#!/usr/bin/env python3
"""otlp_fault_server.py: an OTLP/HTTP receiver for test_otlp_export.c that
fails on cue. It listens on 127.0.0.1 (port 0 unless --port), writes its port
to --port-file once it listens (written then renamed, so a reader never sees
half of it), and answers POSTs on any path.

Each request is appended to --record as one line of tab-separated fields:

    n=3  t=1.234  peer=41234  path=/v1/traces  status=200  len=811  sha=<hex>  <name>: <value> ...

n counts requests from 1, t is seconds since the server started, peer the
client's port (one per connection: keep-alive shows as one peer), len the
body as received, sha the SHA-256 of the body after gunzip when it came with
Content-Encoding: gzip, then every request header, names lower-cased.

Modes (they combine; the first that applies answers):
    --close            accept a connection and close it without a word
    --slow-ms MS       sleep MS before answering (a long one: a receiver that hangs)
    --503-for S        503 with Retry-After for S seconds from the first request
    --retry-after-date when --503-for answers, Retry-After is an HTTP-date 2 s
                       ahead instead of delta-seconds 1
    --429-count N      429 (no Retry-After) to the first N requests
    --400-every K      400 to every K-th request
    --partial N        200 with a partial success that rejected N items:
                       ExportTraceServiceResponse / ExportLogsServiceResponse
                       (same wire shape: field 1 { field 1 varint N }) or, to a
                       JSON request, {"partialSuccess":{"rejectedSpans":"N"}}
                       (rejectedLogRecords on /v1/logs)
otherwise 200 with an empty body of the request's Content-Type.
SIGTERM ends it at once.
"""
import argparse
import email.utils
import gzip
import hashlib
import http.server
import os
import signal
import socket
import threading
import time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def partial_protobuf(n):
    inner = b"\x08" + varint(n)  # rejected_spans / rejected_log_records: field 1, varint
    return b"\x0a" + varint(len(inner)) + inner  # partial_success: field 1, length-delimited


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.first = None
        self.start = time.monotonic()


def make_handler(args, state):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

        def log_message(self, *a):
            pass

        def handle(self):
            if args.close:
                self.connection.close()
                return
            super().handle()

        def answer(self, status, body=b"", ctype=None, extra=()):
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            for k, v in extra:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            now = time.monotonic()
            with state.lock:
                state.count += 1
                n = state.count
                if state.first is None:
                    state.first = now
                since_first = now - state.first
            plain = body
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                try:
                    plain = gzip.decompress(body)
                except OSError:
                    plain = b"<not gzip>"
            ctype = self.headers.get("Content-Type", "application/x-protobuf")
            status, rbody, extra = 200, b"", []
            if args.slow_ms:
                time.sleep(args.slow_ms / 1000.0)
            if args.s503_for is not None and since_first < args.s503_for:
                status = 503
                if args.retry_after_date:
                    extra.append(("Retry-After", email.utils.formatdate(time.time() + 2, usegmt=True)))
                else:
                    extra.append(("Retry-After", "1"))
            elif n <= args.s429_count:
                status = 429
            elif args.s400_every and n % args.s400_every == 0:
                status = 400
            elif args.partial is not None:
                if ctype.startswith("application/json"):
                    key = "rejectedLogRecords" if self.path.endswith("/logs") else "rejectedSpans"
                    rbody = ('{"partialSuccess":{"%s":"%d","errorMessage":"some were bad"}}'
                             % (key, args.partial)).encode()
                else:
                    rbody = partial_protobuf(args.partial)
            fields = ["n=%d" % n, "t=%.3f" % (now - state.start), "peer=%d" % self.client_address[1],
                      "path=%s" % self.path, "status=%d" % status, "len=%d" % len(body),
                      "sha=%s" % hashlib.sha256(plain).hexdigest()]
            fields += ["%s: %s" % (k.lower(), v) for k, v in self.headers.items()]
            if args.record:
                with state.lock, open(args.record, "a") as f:
                    f.write("\t".join(fields) + "\n")
            self.answer(status, rbody, ctype if status == 200 else None, extra)

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--record")
    p.add_argument("--close", action="store_true")
    p.add_argument("--slow-ms", type=int, default=0)
    p.add_argument("--503-for", dest="s503_for", type=float)
    p.add_argument("--retry-after-date", action="store_true")
    p.add_argument("--429-count", dest="s429_count", type=int, default=0)
    p.add_argument("--400-every", dest="s400_every", type=int, default=0)
    p.add_argument("--partial", type=int)
    args = p.parse_args()

    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    state = State()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args, state))
    srv.daemon_threads = True
    srv.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
