#!/usr/bin/python3
"""Reads vLLM KV-cache events as JSON lines, for tests that cannot speak ZMQ (Node).

  read_events.py sub --endpoint tcp://127.0.0.1:P [--topic T] [--max N] [--timeout-ms MS]
      SUB-connects, prints {"ready": true} once connected, then one line per
      message: {"via": "pub", "frames": 3, "topic", "seq", "batch"}; exits after
      N messages, at the timeout, or when stdin closes.
  read_events.py replay --endpoint tcp://127.0.0.1:Q --from S [--timeout-ms MS]
      asks the replay ROUTER as a DEALER ([b"", S as 8 bytes big-endian]) and
      prints one line per reply: {"via": "replay", "frames", "delimiter", "seq"
      (signed), "payload_len", "batch"}, the end marker included, then exits.

Batches are msgpack-decoded: bytes become {"hex": ...}; integers beyond 2^53
become decimal strings so JavaScript keeps them exact.
"""
import argparse
import json
import select
import sys
import time

import msgpack
import zmq


def plain(value):
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, bool) or value is None or isinstance(value, (float, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < (1 << 53) else str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    return repr(value)


def emit(obj):
    print(json.dumps(obj), flush=True)


def decode(payload):
    return plain(msgpack.unpackb(payload, raw=False)) if payload else None


def subscribe(ctx, args):
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sub.setsockopt(zmq.SUBSCRIBE, args.topic.encode())
    sub.connect(args.endpoint)
    if monitor.poll(args.timeout_ms):
        monitor.recv_multipart()
    time.sleep(0.2)  # the subscription follows the handshake; let it reach the publisher
    emit({"ready": True})
    deadline = time.monotonic() + args.timeout_ms / 1000
    count = 0
    while count < args.max and time.monotonic() < deadline:
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.buffer.read1(1 << 16):
            break  # stdin closed: the test is done with us
        if not sub.poll(50):
            continue
        frames = sub.recv_multipart()
        out = {"via": "pub", "frames": len(frames)}
        if len(frames) == 3:
            out.update(topic=frames[0].decode(errors="replace"),
                       seq=int.from_bytes(frames[1], "big"), batch=decode(frames[2]))
        emit(out)
        count += 1
    sub.close(0)
    monitor.close(0)


def replay(ctx, args):
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(args.endpoint)
    dealer.send_multipart([b"", args.start.to_bytes(8, "big")])
    while dealer.poll(args.timeout_ms):
        frames = dealer.recv_multipart()
        out = {"via": "replay", "frames": len(frames)}
        if len(frames) == 3:
            seq = int.from_bytes(frames[1], "big", signed=True)
            out.update(delimiter=frames[0].hex(), seq=seq, seq_hex=frames[1].hex(),
                       payload_len=len(frames[2]), batch=decode(frames[2]))
        emit(out)
        if len(frames) != 3 or out["seq"] == -1:
            break
    dealer.close(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("sub", "replay"))
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--topic", default="")
    ap.add_argument("--max", type=int, default=1 << 30)
    ap.add_argument("--from", dest="start", type=int, default=0)
    ap.add_argument("--timeout-ms", type=int, default=10000)
    args = ap.parse_args()
    ctx = zmq.Context()
    (subscribe if args.mode == "sub" else replay)(ctx, args)
    ctx.term()


if __name__ == "__main__":
    main()
