"""A minimal OTLP/HTTP trace receiver for umbra-trace's tests.

Decodes every POST to /v1/traces with the official OpenTelemetry protobuf
definitions (the `opentelemetry-proto` package from PyPI), so the tests check
what a real collector would see, not what our own encoder thinks it wrote.

    python otlp_receiver.py [--delay SECONDS] [--status CODE] [--reject N]

Listens on 127.0.0.1 on a free port and prints `port N` once it is ready.
GET /spans answers the decoded spans as JSON (ids in lowercase hex), GET
/requests the requests seen (path, headers, decode errors).
"""

import argparse
import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(v, kind)
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return repr(getattr(v, kind))


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def decode(body):
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "resource": resource,
                    "scope": {"name": ss.scope.name, "version": ss.scope.version},
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "trace_state": s.trace_state,
                    "flags": s.flags,
                    "name": s.name,
                    "kind": s.kind,
                    "start_time_unix_nano": s.start_time_unix_nano,
                    "end_time_unix_nano": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "links": [
                        {
                            "trace_id": link.trace_id.hex(),
                            "span_id": link.span_id.hex(),
                            "flags": link.flags,
                            "attributes": attrs(link.attributes),
                        }
                        for link in s.links
                    ],
                    "status": {"code": s.status.code, "message": s.status.message},
                })
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering a POST")
    ap.add_argument("--status", type=int, default=200, help="HTTP status to answer POSTs with")
    ap.add_argument("--reject", type=int, default=0, help="rejected_spans to report as a partial success")
    args = ap.parse_args()

    lock = threading.Lock()
    spans = []
    requests = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def answer(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            with lock:
                if self.path == "/spans":
                    body = json.dumps(spans).encode()
                elif self.path == "/requests":
                    body = json.dumps(requests).encode()
                else:
                    return self.answer(404, b"not found", "text/plain")
            self.answer(200, body, "application/json")

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "error": None}
            decoded = []
            try:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    raise ValueError("content-type %r" % self.headers.get("Content-Type"))
                if self.path != "/v1/traces":
                    raise ValueError("path %r" % self.path)
                decoded = decode(body)
            except Exception as e:  # reported through /requests, the test fails on it
                seen["error"] = str(e)
            if args.delay:
                time.sleep(args.delay)
            with lock:
                requests.append(seen)
                spans.extend(decoded)
            if seen["error"]:
                return self.answer(400, seen["error"].encode(), "text/plain")
            resp = trace_service_pb2.ExportTraceServiceResponse()
            if args.reject:
                resp.partial_success.rejected_spans = args.reject
                resp.partial_success.error_message = "rejected by the test receiver"
            self.answer(args.status, resp.SerializeToString(), "application/x-protobuf")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("port %d" % server.server_address[1], flush=True)
    # Exit when the test closes our stdin (or dies), so no receiver outlives it.
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
