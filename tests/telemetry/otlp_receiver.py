"""A minimal OTLP/HTTP trace receiver for tests, decoding with the official
`opentelemetry-proto` package (PyPI).

Usage: otlp_receiver.py OUT_DIR

Listens on 127.0.0.1, port 0, and prints `listening on PORT` as its first line.
Each POST /v1/traces (application/x-protobuf ExportTraceServiceRequest) is
answered 200 with an empty ExportTraceServiceResponse; its spans are appended
to OUT_DIR/spans.jsonl (one JSON object per span, ids in hex), its raw body
to OUT_DIR/raw.bin and its headers to OUT_DIR/headers.jsonl. Anything else is answered 404 or 415.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
except ImportError as e:  # the test names the install step
    print(f"opentelemetry-proto is not installed ({e}): pip install opentelemetry-proto", file=sys.stderr)
    sys.exit(3)

OUT = sys.argv[1]
LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


def attributes(attrs):
    return {a.key: value(a.value) for a in attrs}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(415)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        lines = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(json.dumps({
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "trace_state": s.trace_state,
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "status": s.status.code,
                        "status_message": s.status.message,
                        "attributes": attributes(s.attributes),
                        "resource": resource,
                        "scope": ss.scope.name,
                    }))
        with LOCK:
            with open(os.path.join(OUT, "spans.jsonl"), "a") as f:
                f.writelines(line + "\n" for line in lines)
            with open(os.path.join(OUT, "raw.bin"), "ab") as f:
                f.write(body)
            with open(os.path.join(OUT, "headers.jsonl"), "a") as f:
                f.write(json.dumps({k.lower(): v for k, v in self.headers.items()}) + "\n")
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
