// `tern bench soak` end to end, for a few seconds so it cannot rot: against
// a two-worker `tern up` cluster of the tiny synthetic checkpoint, watching
// its processes, after a warm-up; every interval line and the drift summary
// are printed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { after, before, test } from "node:test";

import { Cluster, binary, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let model;
let cluster;
before(async () => {
  dir = tempDir("tern-e2e-soak-");
  model = synthModel("tiny", path.join(dir, "tiny"));
  cluster = await Cluster.start({ model, workers: 2 });
});
after(async () => {
  if (cluster) await cluster.stop();
  if (dir) removeDir(dir);
});

test("bench soak prints per-interval tier figures and the drift, with no failures", { timeout: 120_000 }, () => {
  const out = spawnSync(
    binary("tern"),
    [
      "bench", "soak", "--url", `http://127.0.0.1:${cluster.port}`, "--model", "tiny", "--tokenizer", model,
      "--seconds", "6", "--interval-s", "2", "--rate", "4", "--input-len", "32", "--output-len", "8",
      "--request-timeout", "30", "--cluster-pid", String(cluster.child.pid), "--warmup-s", "2",
    ],
    { encoding: "utf8", timeout: 90_000 },
  );
  console.log(out.stdout);
  assert.equal(out.status, 0, `${out.stdout}\n${out.stderr}`);
  const intervals = out.stdout.split("\n").filter((l) => l.includes("] interval "));
  const warmups = out.stdout.split("\n").filter((l) => l.includes("] warm-up "));
  assert.equal(intervals.length, 3, out.stdout);
  assert.equal(warmups.length, 1, out.stdout);
  for (const line of [...warmups, ...intervals]) {
    for (const tier of ["tern-gateway", "tern-router", "tern-worker#0", "tern-worker#1"]) {
      assert.match(line, new RegExp(`${tier} rss [\\d.]+ MiB fds \\d+;`), line);
    }
    assert.match(line, /TTFT p50 \d+ ms p99 \d+ ms, e2e p99 \d+ ms, completed \d+, failed 0/);
  }
  assert.match(
    out.stdout,
    /done: completed \d+, failed 0; first -> last interval: .*tern-router RSS [-+][\d.]+ MiB \([-+][\d.]+%, trend [-+][\d.]+ MiB\/h\)/,
  );
});
