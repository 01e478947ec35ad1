#!/usr/bin/env python3
"""Rebuilds recorded Messages streams with the official Python SDK, for a differential check.

    python3 scripts/sdk_rebuild.py STREAM.sse [...]

For each file, prints one JSON line: {"file": NAME, "message": {...}} with the Message the
SDK's stream accumulator builds from those bytes, or {"file": NAME, "error": "..."} when the
SDK cannot. The SDK's version is pinned: tests/it/sdk.rs compares msgbatch's rebuild with this
output and refuses any other version. Install it with `pip install anthropic==2.14.0`.
"""

import json
import sys
import warnings

import anthropic
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event

PINNED = "2.14.0"

# The events the SDK's Stream passes to the accumulator; it skips `ping` and any other name.
MESSAGE_EVENTS = {
    "message_start",
    "message_delta",
    "message_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
}


def rebuild(path):
    with open(path, "rb") as f:
        data = f.read()
    snapshot = None
    json_bufs = {}
    for sse in SSEDecoder().iter_bytes(iter([data])):
        if sse.event == "error":
            raise RuntimeError(f"error event: {sse.data}")
        if sse.event not in MESSAGE_EVENTS:
            continue
        snapshot = accumulate_event(
            event=sse.json(), current_snapshot=snapshot, json_bufs=json_bufs
        )
    if snapshot is None:
        raise RuntimeError("no message_start")
    return snapshot.to_dict()


def main():
    # The SDK's models warn when they serialise a block type they do not know (compaction,
    # say); the block is kept all the same, which is what is compared.
    warnings.filterwarnings("ignore")
    if anthropic.__version__ != PINNED:
        print(
            f"anthropic {anthropic.__version__} is installed; this check is pinned to {PINNED}",
            file=sys.stderr,
        )
        return 3
    for path in sys.argv[1:]:
        name = path.rsplit("/", 1)[-1]
        try:
            line = {"file": name, "message": rebuild(path)}
        except Exception as e:  # the SDK's own failure is part of what is compared
            line = {"file": name, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(line, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
