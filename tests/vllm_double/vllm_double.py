#!/usr/bin/python3
"""A test double of vLLM's wire protocol -- not an engine.

It speaks what a tern worker sees of a co-located `vllm serve`:
  - HTTP: POST /v1/completions (token ids in and out, SSE streaming, usage
    chunk, vLLM's error JSON), GET /health, /v1/models, /metrics (the vllm:
    names GAIE and tern read), POST /reset_prefix_cache;
  - KV-cache events: ZMQ PUB frames [topic, seq u64 big-endian, msgpack batch]
    and the replay ROUTER socket, in vLLM's newer tagged-map encoding or its
    older array_like one.
Behind it sits a toy scheduler shaped like vLLM's: at most --max-num-seqs
running, the rest wait in FIFO order; one token per running request per step
(the prompt takes one step); paged blocks with a hash-chained prefix cache,
LRU eviction of unreferenced blocks and recompute preemption.

There is no model and no tokenizer. The next token is a hash of the whole
context (prompt + generated) mapped into [100, min(vocab, 128000)) -- greedy
at temperature 0, seeded by `seed` otherwise -- so a request whose prompt
already holds the first k generated tokens continues identically. Text is
" t<id>" per token. EOS is never generated; stop_token_ids end a request.

Test-only knobs live under /double/: POST /double/drop_events {"count": n}
(the next n batches skip the PUB socket but stay replayable) and
GET /double/stats.

Wire shapes follow vllm-project/vllm: vllm/distributed/kv_events.py @0181ea31
(tagged maps, replay frames) and @b4e69e0a (array_like), and
vllm/entrypoints/openai/completion/serving.py @030ea52e (chunks, usage chunk).
Known differences: prompt_tokens_details is always sent (vLLM needs
--enable-prompt-tokens-details); string prompts, n > 1 and echo are refused;
stop tokens are not masked before min_tokens.

Run with /usr/bin/python3 (Debian's python3-zmq and python3-msgpack).
"""
import argparse
import hashlib
import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import uuid
from array import array
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack
import zmq

# H(PYTHONHASHSEED) when set, else 32 random bytes per process (like vLLM).
_seed = os.environ.get("PYTHONHASHSEED")
NONE_HASH = hashlib.sha256(_seed.encode()).digest() if _seed is not None else os.urandom(32)
END_SEQ = (-1).to_bytes(8, "big", signed=True)


def block_hash(parent, tokens):
    """H(parent or NONE_HASH, tokens): a chain like vLLM's, own serialization."""
    h = hashlib.sha256(parent if parent is not None else NONE_HASH)
    h.update(array("I", tokens).tobytes())
    return h.digest()


class EventPublisher:
    """Owns the PUB and replay ROUTER sockets on one thread, like vLLM's ZmqEventPublisher."""

    def __init__(self, ctx, endpoint, replay_endpoint, topic, buffer_steps=10000):
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(endpoint)
        self.replay = None
        if replay_endpoint:
            self.replay = ctx.socket(zmq.ROUTER)
            self.replay.setsockopt(zmq.LINGER, 0)
            self.replay.bind(replay_endpoint)
        self.topic = topic.encode()
        self.buffer = deque(maxlen=buffer_steps)
        self.pending = queue.Queue()
        self.lock = threading.Lock()
        self.drop_next = 0  # guarded by lock
        self.published = 0
        self.dropped = 0
        self.next_seq = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, name="zmq-publisher", daemon=True)
        self.thread.start()

    def publish(self, payload):
        self.pending.put(payload)

    def drop(self, count):
        with self.lock:
            self.drop_next += count

    def stats(self):
        with self.lock:
            return {"published_batches": self.published, "dropped_batches": self.dropped,
                    "next_seq": self.next_seq}

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.pub.close(0)
        if self.replay is not None:
            self.replay.close(0)

    def _run(self):
        poller = zmq.Poller()
        if self.replay is not None:
            poller.register(self.replay, zmq.POLLIN)
        while self.running:
            if self.replay is not None and dict(poller.poll(2)):
                self._serve_replay()
            try:
                payload = self.pending.get(timeout=0.003)
            except queue.Empty:
                continue
            with self.lock:
                seq = self.next_seq
                self.next_seq += 1
                drop = self.drop_next > 0
                if drop:
                    self.drop_next -= 1
                    self.dropped += 1
                else:
                    self.published += 1
            if not drop:
                self.pub.send_multipart([self.topic, seq.to_bytes(8, "big"), payload])
            self.buffer.append((seq, payload))

    def _serve_replay(self):
        frames = self.replay.recv_multipart()
        if len(frames) != 3:  # vLLM ignores anything but [identity, b"", start_seq]
            return
        identity, _, start = frames
        start_seq = int.from_bytes(start, "big")
        for seq, payload in list(self.buffer):
            if seq >= start_seq:
                self.replay.send_multipart([identity, b"", seq.to_bytes(8, "big"), payload])
        self.replay.send_multipart([identity, b"", END_SEQ, b""])


class Block:
    __slots__ = ("id", "ref", "hash")

    def __init__(self, block_id):
        self.id, self.ref, self.hash = block_id, 0, None


class BlockPool:
    """Paged KV blocks with a prefix cache; events collect in `events` (caller holds the lock)."""

    def __init__(self, num_blocks, block_size, encoding, hash_form):
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free = OrderedDict((b.id, None) for b in self.blocks)  # LRU: evict from the front
        self.cached = {}  # digest -> {block id: None}; several copies may share a digest
        self.block_size, self.encoding, self.hash_form = block_size, encoding, hash_form
        self.events = []

    def external(self, digest):
        if self.hash_form == "bytes":
            return digest
        return int.from_bytes(digest, "big") & ((1 << 64) - 1)

    def num_free(self):
        return len(self.free)

    def num_used(self):
        return len(self.blocks) - len(self.free)

    def num_cached(self):
        return sum(len(ids) for ids in self.cached.values())

    def lookup(self, digests):
        hits = []
        for d in digests:
            ids = self.cached.get(d)
            if not ids:
                break
            hits.append(self.blocks[next(iter(ids))])
        return hits

    def touch(self, blocks):
        for b in blocks:
            if b.ref == 0:
                del self.free[b.id]
            b.ref += 1

    def allocate(self, n):
        out = []
        for _ in range(n):
            block_id, _ = self.free.popitem(last=False)
            b = self.blocks[block_id]
            if b.hash is not None:  # evict: one BlockRemoved per block, like vLLM
                ids = self.cached[b.hash]
                del ids[b.id]
                if not ids:
                    del self.cached[b.hash]
                self.events.append(self._removed([self.external(b.hash)]))
                b.hash = None
            b.ref = 1
            out.append(b)
        return out

    def release(self, blocks):
        for b in reversed(blocks):  # a request's tail blocks are evicted first
            b.ref -= 1
            if b.ref == 0:
                self.free[b.id] = None

    def store(self, blocks, digests, parent, tokens):
        for b, d in zip(blocks, digests):
            b.hash = d
            self.cached.setdefault(d, {})[b.id] = None
        ext_parent = None if parent is None else self.external(parent)
        ext = [self.external(d) for d in digests]
        bs = self.block_size
        if self.encoding == "map":  # omit_defaults: extra_keys, group_idx, kv_cache_spec_* absent
            ev = {"type": "BlockStored", "block_hashes": ext, "parent_block_hash": ext_parent,
                  "token_ids": tokens, "block_size": bs, "lora_id": None, "medium": "GPU",
                  "lora_name": None}
        else:
            ev = ["BlockStored", ext, ext_parent, tokens, bs, None, "GPU", None]
        self.events.append(ev)

    def reset(self):
        """vLLM refuses while any block is referenced; returns whether it cleared."""
        if self.num_used() > 0:
            return False
        for b in self.blocks:
            b.hash = None
        self.cached.clear()
        self.events.append({"type": "AllBlocksCleared"} if self.encoding == "map" else ["AllBlocksCleared"])
        return True

    def _removed(self, ext):
        if self.encoding == "map":
            return {"type": "BlockRemoved", "block_hashes": ext, "medium": "GPU"}
        return ["BlockRemoved", ext, "GPU"]


class Request:
    def __init__(self, rid, prompt, p):
        self.id, self.prompt, self.output = rid, prompt, []
        self.max_tokens, self.min_tokens = p["max_tokens"], p["min_tokens"]
        self.stop_ids, self.ignore_eos = set(p["stop_token_ids"]), p["ignore_eos"]
        self.greedy = p["temperature"] == 0
        seed = p["seed"]
        self.seed = b"greedy" if self.greedy else (
            b"seed:%d" % seed if seed is not None else os.urandom(16))
        self.logprobs = p["logprobs"]
        self.blocks, self.digests = [], []
        self.num_stored = 0  # leading blocks already in the prefix cache
        self.cached_tokens = -1
        self.state = "waiting"
        self.out = queue.Queue()

    def tokens(self):
        return self.prompt + self.output


class Engine:
    """The scheduler; one step thread, request threads submit and abort under `lock`."""

    def __init__(self, args, publisher):
        self.args, self.publisher = args, publisher
        self.bs = args.block_size
        self.pool = BlockPool(args.num_blocks, args.block_size, args.kv_events_encoding, args.hash)
        self.eos = set(args.eos_token_id or [])
        # Generated ids avoid the lowest ids and Llama 3's special tokens (128000 up).
        small = args.vocab_size <= 200
        self.lo, self.hi = (0, args.vocab_size) if small else (100, min(args.vocab_size, 128000))
        self.lock = threading.Lock()
        self.waiting, self.running = deque(), []
        self.c = {"requests": 0, "finished": 0, "aborted": 0, "preemptions": 0,
                  "prefix_query_tokens": 0, "prefix_hit_tokens": 0,
                  "prompt_tokens": 0, "generation_tokens": 0, "stop": 0, "length": 0, "abort": 0}
        # The structured_outputs field of the latest request that had one.
        self.last_structured_outputs = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="step", daemon=True)
        self.thread.start()

    def submit(self, req):
        with self.lock:
            self.c["requests"] += 1
            self.waiting.append(req)

    def abort(self, req):
        with self.lock:
            if req.state == "waiting":
                self.waiting.remove(req)
            elif req.state == "running":
                self.running.remove(req)
                self.pool.release(req.blocks)
                req.blocks = []
            else:
                return
            req.state = "aborted"
            self.c["aborted"] += 1
            self.c["abort"] += 1

    def reset_prefix_cache(self):
        with self.lock:
            return self.pool.reset()

    def _loop(self):
        period = self.args.step_ms / 1000.0
        next_t = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                self._step()
                events, self.pool.events = self.pool.events, []
            if events and self.publisher is not None:
                if self.args.kv_events_encoding == "map":
                    batch = {"ts": time.time(), "events": events, "data_parallel_rank": 0}
                else:
                    batch = [time.time(), events, 0]
                self.publisher.publish(msgpack.packb(batch, use_bin_type=True))
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t = max(next_t, time.monotonic() - period)

    def _step(self):
        # Decode: each running request writes the KV of its newest token; a
        # full pool preempts the newest admitted request (vLLM's recompute).
        for req in list(self.running):
            while req.state == "running" and self._blocks_for(len(req.tokens())) > len(req.blocks):
                if self.pool.num_free() == 0:
                    self._preempt(self.running[-1])
                else:
                    req.blocks += self.pool.allocate(1)
        while self.waiting and len(self.running) < self.args.max_num_seqs:
            if not self._admit(self.waiting[0]):
                break  # FCFS: the head of the queue waits for blocks
            req = self.waiting.popleft()
            req.state = "running"
            self.running.append(req)
        for req in list(self.running):
            self._cache_full_blocks(req)
            self._sample(req)

    def _blocks_for(self, n):
        return (n + self.bs - 1) // self.bs

    def _hash_upto(self, req, num_full):
        toks = req.tokens()
        while len(req.digests) < num_full:
            i = len(req.digests)
            parent = req.digests[-1] if i else None
            req.digests.append(block_hash(parent, toks[i * self.bs:(i + 1) * self.bs]))

    def _admit(self, req):
        n = len(req.tokens())
        self._hash_upto(req, n // self.bs)
        # At least one token is computed, so a fully cached prompt recomputes its last block.
        hits = self.pool.lookup(req.digests[:(n - 1) // self.bs])
        need = self._blocks_for(n) - len(hits)
        evictable = sum(1 for b in hits if b.ref == 0)
        if need + evictable > self.pool.num_free():
            return False
        self.pool.touch(hits)
        req.blocks = hits + self.pool.allocate(need)
        req.num_stored = len(hits)
        hit_tokens = len(hits) * self.bs
        self.c["prefix_query_tokens"] += n
        self.c["prefix_hit_tokens"] += hit_tokens
        if req.cached_tokens < 0:
            req.cached_tokens = hit_tokens
            self.c["prompt_tokens"] += len(req.prompt)
        return True

    def _preempt(self, req):
        self.running.remove(req)
        self.pool.release(req.blocks)
        req.blocks, req.num_stored, req.state = [], 0, "waiting"
        self.waiting.appendleft(req)
        self.c["preemptions"] += 1

    def _cache_full_blocks(self, req):
        toks = req.tokens()  # all computed once this step runs
        full = len(toks) // self.bs
        if full <= req.num_stored:
            return
        self._hash_upto(req, full)
        start = req.num_stored
        parent = req.digests[start - 1] if start else None
        self.pool.store(req.blocks[start:full], req.digests[start:full], parent,
                        toks[start * self.bs:full * self.bs])
        req.num_stored = full

    def _next_token(self, req, context):
        digest = hashlib.sha256(req.seed + array("I", context).tobytes()).digest()
        span = self.hi - self.lo
        tok = self.lo + int.from_bytes(digest[:8], "big") % span
        while tok in self.eos:
            tok = self.lo + (tok - self.lo + 1) % span
        return tok

    def _sample(self, req):
        tok = self._next_token(req, req.tokens())
        req.output.append(tok)
        self.c["generation_tokens"] += 1
        top = None
        if req.logprobs is not None:  # a made-up distribution: the sampled token first
            span = self.hi - self.lo
            top = [(tok, -0.125)]
            for i in range(1, max(req.logprobs, 1)):
                top.append((self.lo + (tok - self.lo + i * 7919) % span, -1.0 - i))
        finish, stop_reason = None, None
        if len(req.output) >= req.min_tokens and tok in req.stop_ids:
            finish, stop_reason = "stop", tok
        elif tok in self.eos and not req.ignore_eos:
            finish = "stop"
        elif len(req.output) >= req.max_tokens or len(req.tokens()) >= self.args.max_model_len:
            finish = "length"
        req.out.put({"token": tok, "top": top, "finish": finish, "stop_reason": stop_reason,
                     "cached_tokens": req.cached_tokens})
        if finish is not None:
            self.running.remove(req)
            self.pool.release(req.blocks)
            req.blocks, req.state = [], "finished"
            self.c["finished"] += 1
            self.c[finish] += 1

    def stats(self):
        with self.lock:
            s = {"running": len(self.running), "waiting": len(self.waiting),
                 "cached_blocks": self.pool.num_cached(), "used_blocks": self.pool.num_used(),
                 "free_blocks": self.pool.num_free()}
            s.update({k: self.c[k] for k in ("requests", "finished", "aborted", "preemptions",
                                             "prefix_query_tokens", "prefix_hit_tokens")})
        # What a launcher put in the environment (the Neuron settings are
        # only reported back: a double has no cores to pin).
        s["env"] = {k: os.environ.get(k) for k in ("NEURON_RT_VISIBLE_CORES", "PYTHONHASHSEED")}
        s["last_structured_outputs"] = self.last_structured_outputs
        if self.publisher is not None:
            s.update(self.publisher.stats())
        return s

    def metrics(self):
        a = self.args
        model = a.served_model_name.replace("\\", "\\\\").replace('"', '\\"')
        base = f'model_name="{model}",engine="0"'
        with self.lock:
            running, waiting = len(self.running), len(self.waiting)
            usage = self.pool.num_used() / len(self.pool.blocks)
            c = dict(self.c)
        out = []

        def metric(name, kind, help_text, samples):
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            for suffix, labels, value in samples:
                out.append(f"{name}{suffix}{{{labels}}} {float(value)!r}\n")

        metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
               [("", base, running)])
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
               [("", base, waiting)])
        metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
               [("", base, usage)])
        info = (f'block_size="{a.block_size}",cache_dtype="auto",enable_prefix_caching="True",'
                f'gpu_memory_utilization="0.9",num_cpu_blocks="None",num_gpu_blocks="{a.num_blocks}",'
                f'prefix_caching_hash_algo="sha256",engine="0"')
        metric("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig",
               [("", info, 1)])
        metric("vllm:prefix_cache_queries", "counter",
               "Prefix cache queries, in terms of number of queried tokens.",
               [("_total", base, c["prefix_query_tokens"])])
        metric("vllm:prefix_cache_hits", "counter",
               "Prefix cache hits, in terms of number of cached tokens.",
               [("_total", base, c["prefix_hit_tokens"])])
        metric("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine.",
               [("_total", base, c["preemptions"])])
        metric("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
               [("_total", base, c["prompt_tokens"])])
        metric("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
               [("_total", base, c["generation_tokens"])])
        metric("vllm:request_success", "counter", "Count of successfully processed requests.",
               [("_total", f'{base},finished_reason="{r}"', c[r]) for r in ("stop", "length", "abort")])
        return "".join(out)


class BadRequest(Exception):
    def __init__(self, message, status=400, kind="BadRequestError", param=None):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param


# The /v1/completions fields the double reads or knowingly accepts (vLLM's protocol).
KNOWN_FIELDS = {
    "model", "prompt", "max_tokens", "stream", "stream_options", "return_token_ids", "temperature",
    "top_p", "top_k", "min_p", "seed", "ignore_eos", "min_tokens", "stop_token_ids", "logprobs",
    "return_tokens_as_token_ids", "request_id", "n", "echo", "stop", "user", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "skip_special_tokens", "cache_salt", "priority",
    "include_stop_str_in_output", "spaces_between_special_tokens", "prompt_logprobs",
    "structured_outputs",
}


def parse_completion(body, args):
    """Validates a /v1/completions body the way vLLM would; returns (prompt, params)."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    ignored = set(body) - KNOWN_FIELDS
    if ignored:  # vLLM accepts unknown fields with a warning
        print(f"WARNING: fields present in the request but ignored: {sorted(ignored)}",
              file=sys.stderr, flush=True)
    model = body.get("model")
    if model is not None and model != args.served_model_name:
        raise BadRequest(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        raise BadRequest("the vLLM double has no tokenizer: send prompt as token ids", param="prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        raise BadRequest("the vLLM double serves one prompt per request", param="prompt")
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        raise BadRequest("prompt must be a non-empty list of token ids", param="prompt")
    for t in prompt:
        if t < 0 or t >= args.vocab_size:
            raise BadRequest(f"Token id {t} is out of vocabulary", param="prompt")
    n, limit = len(prompt), args.max_model_len
    if n >= limit:
        raise BadRequest(f"This model's maximum context length is {limit} tokens. However, you "
                         f"requested {n} tokens in the messages, Please reduce the length of the "
                         f"messages.", param="prompt")

    def number(key, default, kind=(int,)):
        v = body.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, kind):
            raise BadRequest(f"{key} has the wrong type", param=key)
        return v

    max_tokens = number("max_tokens", limit - n)
    if max_tokens < 1:
        raise BadRequest("max_tokens must be at least 1", param="max_tokens")
    if n + max_tokens > limit:
        raise BadRequest(f"This model's maximum context length is {limit} tokens. However, you "
                         f"requested {n + max_tokens} tokens ({n} in the messages, {max_tokens} in "
                         f"the completion). Please reduce the length of the messages or completion.",
                         param="max_tokens")
    temperature = number("temperature", 1.0, (int, float))
    top_p = number("top_p", 1.0, (int, float))
    top_k = number("top_k", 0)
    if temperature < 0 or not 0 < top_p <= 1 or top_k < -1:
        raise BadRequest("invalid sampling parameters (temperature, top_p, top_k)")
    if number("n", 1) != 1 or body.get("echo"):
        raise BadRequest("the vLLM double supports n=1 without echo")
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(isinstance(t, int) for t in stop_ids):
        raise BadRequest("stop_token_ids must be a list of token ids", param="stop_token_ids")
    logprobs = number("logprobs", None)
    if logprobs is not None and logprobs < 0:
        raise BadRequest("logprobs must be non-negative", param="logprobs")
    structured = body.get("structured_outputs")
    if structured is not None:
        # Checked for vLLM's shape and recorded; the double cannot constrain
        # its made-up tokens, so the output ignores it.
        kinds = [k for k in ("json", "regex", "choice", "json_object", "grammar")
                 if isinstance(structured, dict) and structured.get(k) not in (None, False)]
        if len(kinds) != 1:
            raise BadRequest("structured_outputs needs exactly one of json, regex, choice, "
                             "json_object, grammar", param="structured_outputs")
    stream_options = body.get("stream_options")
    if stream_options is not None and not body.get("stream"):
        raise BadRequest("Stream options can only be defined when `stream=True`.")
    return prompt, {
        "max_tokens": max_tokens, "min_tokens": number("min_tokens", 0),
        "temperature": temperature, "seed": number("seed", None), "stop_token_ids": stop_ids,
        "ignore_eos": bool(body.get("ignore_eos")), "logprobs": logprobs,
        "as_ids": bool(body.get("return_tokens_as_token_ids")),
        "return_token_ids": bool(body.get("return_token_ids")), "stream": bool(body.get("stream")),
        # vLLM: stream_options present -> include_usage defaults to true.
        "include_usage": bool(stream_options is not None and
                              stream_options.get("include_usage", True) is not False),
        "request_id": body.get("request_id"), "structured_outputs": structured,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vllm-double"
    engine = None  # set in main
    args = None

    def log_message(self, fmt, *a):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/health":
            self._send(200, b"", "application/json")
        elif path == "/v1/models":
            a = self.args
            self._json(200, {"object": "list", "data": [{
                "id": a.served_model_name, "object": "model", "created": int(time.time()),
                "owned_by": "vllm", "root": a.served_model_name, "parent": None,
                "max_model_len": a.max_model_len}]})
        elif path == "/metrics":
            self._send(200, self.engine.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/double/stats":
            self._json(200, self.engine.stats())
        else:
            self._error(BadRequest("Not Found", 404, "NotFoundError"))

    def do_POST(self):
        path = self.path.split("?")[0]
        try:
            raw = self._read_body()
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            return self._error(BadRequest(f"invalid JSON body: {e}"))
        if path == "/v1/completions":
            try:
                self._complete(*parse_completion(body, self.args))
            except BadRequest as e:
                self._error(e)
        elif path == "/double/drop_events":
            count = body.get("count", 1) if isinstance(body, dict) else 1
            if self.engine.publisher is not None:
                self.engine.publisher.drop(int(count))
            self._json(200, {"dropping": int(count)})
        elif path == "/reset_prefix_cache":
            self.engine.reset_prefix_cache()
            self._send(200, b"", "application/json")
        else:
            self._error(BadRequest("Not Found", 404, "NotFoundError"))

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status, data, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _error(self, e):
        self._json(e.status, {"error": {"message": str(e), "type": e.kind, "param": e.param,
                                        "code": e.status}})

    def _client_gone(self):
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _next_output(self, req):
        """The next engine output, or None once the client has gone (the request is aborted).

        Checked every 20 ms even while outputs flow: a non-streaming client is
        never written to before the end, a waiting request has no outputs.
        """
        while True:
            now = time.monotonic()
            if now - getattr(self, "_checked_at", 0) >= 0.02:
                self._checked_at = now
                if self._client_gone():
                    self.engine.abort(req)
                    self.close_connection = True
                    return None
            try:
                return req.out.get(timeout=0.02)
            except queue.Empty:
                pass

    def _complete(self, prompt, p):
        base = self.headers.get("X-Request-Id") or p["request_id"] or uuid.uuid4().hex
        rid, created, model = f"cmpl-{base}", int(time.time()), self.args.served_model_name
        req = Request(rid + "-0", prompt, p)
        if p["structured_outputs"] is not None:
            self.engine.last_structured_outputs = p["structured_outputs"]
        self.engine.submit(req)
        if p["stream"]:
            return self._stream(req, p, rid, created, model)
        out, last = [], None
        while last is None or last["finish"] is None:
            last = self._next_output(req)
            if last is None:
                return
            out.append(last)
        tokens = [o["token"] for o in out]
        usage = self._usage(len(prompt), len(tokens), last["cached_tokens"])
        self._json(200, {"id": rid, "object": "text_completion", "created": created, "model": model,
                         "choices": [{"index": 0, "text": "".join(f" t{t}" for t in tokens),
                                      "logprobs": self._logprobs(out, p, 0),
                                      "finish_reason": last["finish"],
                                      "stop_reason": last["stop_reason"], "prompt_logprobs": None,
                                      "prompt_token_ids": prompt if p["return_token_ids"] else None,
                                      "token_ids": tokens if p["return_token_ids"] else None}],
                         "usage": usage, "system_fingerprint": None, "kv_transfer_params": None})

    def _stream(self, req, p, rid, created, model):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        n, offset, cached = 0, 0, 0
        try:
            while True:
                o = self._next_output(req)
                if o is None:
                    return
                text = f" t{o['token']}"
                choice = {"index": 0, "text": text, "logprobs": self._logprobs([o], p, offset),
                          "finish_reason": o["finish"], "stop_reason": o["stop_reason"],
                          "prompt_token_ids": req.prompt if p["return_token_ids"] and n == 0 else None,
                          "token_ids": [o["token"]] if p["return_token_ids"] else None}
                self._event({"id": rid, "object": "text_completion", "created": created,
                             "model": model, "choices": [choice]})
                n, offset, cached = n + 1, offset + len(text), o["cached_tokens"]
                if o["finish"] is not None:
                    break
            if p["include_usage"]:
                self._event({"id": rid, "object": "text_completion", "created": created,
                             "model": model, "choices": [],
                             "usage": self._usage(len(req.prompt), n, cached)})
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except OSError:  # the client went away mid-stream
            self.engine.abort(req)
            self.close_connection = True

    def _event(self, obj):
        self._chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    @staticmethod
    def _usage(prompt_tokens, completion_tokens, cached):
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens,
                "prompt_tokens_details": {"cached_tokens": max(cached, 0)}}

    @staticmethod
    def _logprobs(outputs, p, offset):
        if p["logprobs"] is None:
            return None
        name = (lambda t: f"token_id:{t}") if p["as_ids"] else (lambda t: f" t{t}")
        lp = {"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []}
        for o in outputs:
            lp["text_offset"].append(offset)
            lp["tokens"].append(name(o["token"]))
            lp["token_logprobs"].append(o["top"][0][1])
            lp["top_logprobs"].append({name(t): v for t, v in o["top"]})
            offset += len(f" t{o['token']}")
        return lp


def serve_args(argv):
    """`vllm serve MODEL [flags]` as a launcher runs it (tern-worker --launch
    with this file on PATH as `vllm`): the flags the double understands are
    mapped onto its own; the model's vocabulary and EOS ids come from
    MODEL/config.json and generation_config.json; Neuron and engine tuning
    flags are accepted and ignored. KV events follow --kv-events-config, with
    "*" bound as 127.0.0.1 (tests stay on loopback)."""
    ap = argparse.ArgumentParser(prog="vllm serve (test double)")
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--served-model-name")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int)
    ap.add_argument("--kv-events-config")
    known, _ignored = ap.parse_known_args(argv)
    out = ["--port", str(known.port), "--block-size", str(known.block_size),
           "--max-num-seqs", str(known.max_num_seqs),
           "--served-model-name", known.served_model_name or os.path.basename(known.model.rstrip("/"))]
    config_path = os.path.join(known.model, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
        out += ["--vocab-size", str(config["vocab_size"])]
        eos = config.get("eos_token_id")
        gen_path = os.path.join(known.model, "generation_config.json")
        if os.path.exists(gen_path):
            with open(gen_path) as f:
                eos = json.load(f).get("eos_token_id", eos)
        for token in (eos if isinstance(eos, list) else [eos] if eos is not None else []):
            out += ["--eos-token-id", str(token)]
        max_len = known.max_model_len or config.get("max_position_embeddings", 4096)
    else:
        max_len = known.max_model_len or 4096
    out += ["--max-model-len", str(max_len),
            "--num-blocks", str(max(1024, -(-max_len // known.block_size) * 4))]
    if known.kv_events_config:
        kv = json.loads(known.kv_events_config)
        if kv.get("enable_kv_cache_events"):
            loopback = lambda e: e.replace("tcp://*:", "tcp://127.0.0.1:")
            out += ["--kv-events-endpoint", loopback(kv.get("endpoint", "tcp://*:5557"))]
            if kv.get("replay_endpoint"):
                out += ["--kv-replay-endpoint", loopback(kv["replay_endpoint"])]
            if kv.get("topic"):
                out += ["--kv-events-topic", kv["topic"]]
    return out


def main():
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        argv = serve_args(argv[1:])
    ap = argparse.ArgumentParser(description="A test double of vLLM's wire protocol (not an engine).")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--served-model-name", default="vllm-double")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--num-blocks", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--vocab-size", type=int, default=128256)
    ap.add_argument("--eos-token-id", type=int, action="append")
    ap.add_argument("--kv-events-endpoint", help="PUB socket, bound (e.g. tcp://127.0.0.1:5557)")
    ap.add_argument("--kv-replay-endpoint", help="replay ROUTER socket, bound")
    ap.add_argument("--kv-events-encoding", choices=("map", "array"), default="map")
    ap.add_argument("--kv-events-topic", default="")
    ap.add_argument("--hash", choices=("int", "bytes"), default="int")
    ap.add_argument("--step-ms", type=float, default=10.0)
    ap.add_argument("--ready-file")
    args = ap.parse_args(argv)
    if args.num_blocks * args.block_size < args.max_model_len:  # vLLM refuses to start too
        ap.error(f"--max-model-len {args.max_model_len} does not fit in the KV cache "
                 f"({args.num_blocks} blocks of {args.block_size} tokens)")

    ctx = zmq.Context()
    publisher = None
    if args.kv_events_endpoint:
        publisher = EventPublisher(ctx, args.kv_events_endpoint, args.kv_replay_endpoint,
                                   args.kv_events_topic)
    Handler.engine = Engine(args, publisher)
    Handler.args = args
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{args.port}\n")
    print(f"vllm double ready on port {args.port}", flush=True)
    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    Handler.engine.stopping.set()
    if publisher is not None:
        publisher.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
