# Sourced by the benchmark scripts: builds the release binary, makes a scratch folder, and
# starts `msgbatch mock` processes on free loopback ports, all cleaned up on exit.
#
#   start_mock [MOCK ARGS…]    sets $addr to the new mock's base URL
#
# Sets $bin (the binary), $build (what it is), $work (the scratch folder) and $pids (the
# mocks started). BENCH_BIN=PATH measures that binary instead of building the release one
# (say a debug build: the output names it, and its figures are not the release's).

if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
    build="given binary $BENCH_BIN"
else
    cargo build --release --locked --quiet
    bin=$PWD/target/release/msgbatch
    build=release
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

start_mock() {
    "$bin" mock --addr 127.0.0.1:0 "$@" 2> "$work/mock.log" &
    pids+=($!)
    addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/mock.log" 2> /dev/null)
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "the mock did not start"; cat "$work/mock.log"; exit 1; }
}
