#!/usr/bin/env bash
# Hostile gateways against the release binary: what memory a run takes when a gateway answers
# without end, and how long decoding one very long SSE line takes. A small Python server on a
# free loopback port plays the gateway; each case runs `msgbatch run` under /usr/bin/time -v
# and prints its peak RSS next to the bound it must stay under, its CPU time, and how its
# first attempt ended.
#
#   scripts/bench-hostile.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
bin=$PWD/target/release/msgbatch
work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/hostile.py" << 'PY'
# Each path prefix is one way of misbehaving; the request body is read first, as a gateway does.
import http.server, json, socketserver, sys

MB = 1024 * 1024
CHUNK = b"a" * (64 * 1024)

def message_head():
    return b'{"id":"msg_h","type":"message","role":"assistant","model":"claude-haiku-4-5","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":10},"content":[{"type":"text","text":"'

def sse(name, data):
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def start(self, content_type, length=None):
        self.send_response(200)
        self.send_header("content-type", content_type)
        if length is None:
            self.send_header("connection", "close")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def forever(self, head, filler):
        self.wfile.write(head)
        while True:
            self.wfile.write(filler)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        path = self.path
        try:
            if path.startswith("/big300/"):
                # A valid Message of 300 MB, its length declared.
                head, tail = message_head(), b'"}]}'
                self.start("application/json", len(head) + 300 * MB + len(tail))
                self.wfile.write(head)
                for _ in range(300 * MB // len(CHUNK)):
                    self.wfile.write(CHUNK)
                self.wfile.write(tail)
            elif path.startswith("/endless/"):
                self.start("application/json")
                self.forever(message_head(), CHUNK)
            elif path.startswith("/pings/"):
                self.start("text/event-stream")
                self.forever(b"", sse("ping", {"type": "ping"}) * 1000)
            elif path.startswith("/line/"):
                self.start("text/event-stream")
                self.forever(b"data: ", CHUNK)
            elif path.startswith("/line20/"):
                # One content delta of 20 MB, written in 16 KB pieces.
                self.start("text/event-stream")
                start = {"type": "message_start", "message": {"id": "msg_h", "type": "message",
                         "role": "assistant", "model": "claude-haiku-4-5", "content": [],
                         "stop_reason": None, "stop_sequence": None,
                         "usage": {"input_tokens": 5, "output_tokens": 1}}}
                self.wfile.write(sse("message_start", start))
                self.wfile.write(sse("content_block_start", {"type": "content_block_start",
                                 "index": 0, "content_block": {"type": "text", "text": ""}}))
                line = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": "a" * (20 * MB)}})
                for at in range(0, len(line), 16 * 1024):
                    self.wfile.write(line[at:at + 16 * 1024])
                    self.wfile.flush()
                self.wfile.write(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
                self.wfile.write(sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 10}}))
                self.wfile.write(sse("message_stop", {"type": "message_stop"}))
                self.close_connection = True
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
python3 "$work/hostile.py" > "$work/port" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")

# case NAME PATH JOBS CONCURRENCY STREAM BOUND_MB [RUN ARGS…]
case_() {
    local name=$1 path=$2 jobs=$3 concurrency=$4 stream=$5 bound=$6
    shift 6
    awk -v n="$jobs" -v s="$stream" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "{\"custom_id\":\"h-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"q %d\"}]}}\n", i, s, i;
    }' > "$work/jobs.jsonl"
    rm -f "$work/h.db"*
    /usr/bin/time -v -o "$work/time.txt" env BENCH_KEY=bench "$bin" --db "$work/h.db" --quiet \
        run "$work/jobs.jsonl" --base-url "http://127.0.0.1:$port" \
        --messages-path "/$path/v1/messages" --api-key-env BENCH_KEY \
        --concurrency "$concurrency" --max-attempts 1 "$@" > /dev/null 2> "$work/err.txt" || true
    local rss user sys
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
    user=$(sed -n 's/.*User time (seconds): //p' "$work/time.txt")
    sys=$(sed -n 's/.*System time (seconds): //p' "$work/time.txt")
    python3 - "$work/h.db" "$name" "$rss" "$bound" "$user" "$sys" << 'PY'
import sqlite3, sys
db, name, rss, bound, user, sys_ = sys.argv[1:7]
con = sqlite3.connect(db)
row = con.execute("SELECT COALESCE(error_message, 'answered') FROM attempts ORDER BY id LIMIT 1").fetchone()
done = con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
mb = int(rss) / 1024
verdict = "ok" if mb <= float(bound) else "OVER"
print(f"{name:<44} peak RSS {mb:6.0f} MB (bound {bound} MB, {verdict}), "
      f"CPU {float(user) + float(sys_):5.2f} s; {dict(done)}; first attempt: {row[0] if row else '-'}")
PY
}

case_ "one 300 MB answer, --max-answer-mb 400, c=16" big300 1 16 false 330 --max-answer-mb 400
case_ "one 300 MB answer, default bound, c=16" big300 1 16 false 100
case_ "endless body, 4 jobs, c=1" endless 4 1 false 100
case_ "endless pings stream, 4 jobs, c=1" pings 4 1 true 100
case_ "endless SSE line, 4 jobs, c=1" line 4 1 true 100
case_ "endless body, 8 jobs, c=8 (8 x 64 MB bound)" endless 8 8 false 600
case_ "one 20 MB SSE line (CPU time is the figure)" line20 1 1 true 200
