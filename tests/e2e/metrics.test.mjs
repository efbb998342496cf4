// Metrics end to end: two workers, a router and the gateway on a tiny
// synthetic checkpoint, each tier's /metrics scraped by a real Prometheus
// (Debian's `prometheus`, started here on 127.0.0.1) that also loads the
// chart's alerting rules.
//  - `promtool check metrics` on every tier's /metrics: no finding but the
//    one docs/metrics.md names (':' in the four `vllm:` names);
//  - after bounded shared-prefix chat traffic (streaming and not, openai SDK),
//    Prometheus answers a gateway TTFT p90, one running gauge per worker and
//    predicted / reported prefix-hit rates in [0, 1];
//  - every query of the Grafana dashboard (helm/tern/files/grafana/tern.json)
//    parses, names only metrics that docs/metrics.md documents and the
//    cluster exports, and the panels this traffic must fill return data;
//  - the alerting rules load and evaluate without errors.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { binary, freePort, removeDir, synthModel, tempDir, testsDir } from "../lib/tern.mjs";

const repoRoot = path.resolve(testsDir, "..");
const dashboardFile = path.join(repoRoot, "helm", "tern", "files", "grafana", "tern.json");
const rulesFile = path.join(repoRoot, "helm", "tern", "files", "prometheus", "alerts.yaml");
const catalogueFile = path.join(repoRoot, "docs", "metrics.md");

const MODEL = "tiny";
const NUM_WORKERS = 2;
// `$__rate_interval` of the dashboard's queries, as Grafana would pick it for
// a short time range with a 1 s scrape interval.
const RATE_INTERVAL = "1m";

// Panels the test traffic must fill: each of their queries returns at least
// one series with a finite value (titles as in the dashboard).
const PANELS_WITH_DATA = [
  "Requests by endpoint and status",
  "Tokens per second",
  "Router requests",
  "Time to first token (client view)",
  "Inter-token latency (client view)",
  "End-to-end latency (client view)",
  "Time to first token (engine view)",
  "End-to-end latency (engine view)",
  "Router queue time",
  "Prefix-hit rate per worker: predicted vs reported",
  "Prefix-hit rate, all workers",
  "Routed prompt tokens per worker",
  "Routing decision time",
  "Cached prefix blocks per worker",
  "Healthy workers",
  "Worker health",
  "Workers per circuit state",
  "KV cache usage",
  "Running sequences per worker",
  "Batch size",
  "Engine step duration",
  "Engine steps per second",
  "KV blocks",
  "CPU",
  "Resident memory",
  "Open file descriptors",
  "Scrape targets up",
];

// The only finding `promtool check metrics` may report (docs/metrics.md).
const VLLM_NAMES = [
  "vllm:num_requests_running",
  "vllm:num_requests_waiting",
  "vllm:kv_cache_usage_perc",
  "vllm:cache_config_info",
];
const ALLOWED_FINDINGS = new Set(VLLM_NAMES.map((n) => `${n} metric names should not contain ':'`));

let dir;
const procs = [];
let gatewayBase;
let routerMetricsURL;
let workerMetricsURLs = [];
let promBase;
let prom;
const metricsTexts = {}; // tier -> /metrics text, after the traffic
let evalTime; // seconds: when the dashboard's queries are evaluated

class Proc {
  constructor(name, file, args) {
    this.name = name;
    this.logs = [];
    this.child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 300) this.logs.shift();
    };
    this.child.stdout.on("data", keep);
    this.child.stderr.on("data", keep);
    this.failed = false;
    this.exited = new Promise((resolve) => {
      this.child.on("exit", resolve);
      this.child.on("error", (e) => {
        this.failed = true;
        keep(`cannot run ${file}: ${e.message}\n`);
        resolve();
      });
    });
    procs.push(this);
  }
  running() {
    return !this.failed && this.child.exitCode === null && this.child.signalCode === null;
  }
  signal(sig) {
    if (this.running()) this.child.kill(sig);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function allLogs() {
  return procs.map((p) => `--- ${p.name}\n${p.logs.slice(-30).join("")}`).join("\n");
}

async function waitUntil(what, limitMs, check) {
  const end = Date.now() + limitMs;
  let lastError;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      lastError = e; // not up yet
    }
    const dead = procs.find((p) => !p.running());
    if (dead) throw new Error(`${dead.name} exited while waiting for ${what}:\n${allLogs()}`);
    if (Date.now() > end) {
      throw new Error(`${what} not reached in ${limitMs} ms (${lastError?.message ?? "no error"}):\n${allLogs()}`);
    }
    await sleep(100);
  }
}

async function fetchText(url) {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return await response.text();
}

// Samples of one metric in Prometheus text: [{labels, value}].
function samples(text, name) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/);
    if (!m || m[1] !== name) continue;
    const labels = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

// Metric names a /metrics text exposes: sample names and every family named
// by a TYPE line (a histogram as its _bucket, _sum and _count series).
function exposedNames(text) {
  const names = new Set();
  for (const line of text.split("\n")) {
    const type = line.match(/^# TYPE (\S+) (\w+)/);
    if (type) {
      const [, name, kind] = type;
      if (kind === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
      else if (kind === "summary") for (const s of ["", "_sum", "_count"]) names.add(name + s);
      else names.add(name);
      continue;
    }
    const sample = line.match(/^([a-zA-Z_:][\w:]*)[{ ]/);
    if (sample) names.add(sample[1]);
  }
  return names;
}

// Metric names docs/metrics.md documents (first column of its tables; a
// histogram as its _bucket, _sum and _count series).
function documentedNames() {
  const names = new Set();
  for (const line of readFileSync(catalogueFile, "utf8").split("\n")) {
    if (!line.startsWith("|")) continue;
    const cells = line.split("|").map((c) => c.trim());
    const metrics = [...cells[1].matchAll(/`([a-zA-Z_:][\w:]*)`/g)].map((m) => m[1]);
    // A histogram exports NAME_bucket, NAME_sum and NAME_count; a summary
    // NAME (its quantiles), NAME_sum and NAME_count.
    const histogram = /histogram/.test(cells[2] ?? "");
    const summary = /summary/.test(cells[2] ?? "");
    for (const name of metrics) {
      if (histogram) for (const s of ["_bucket", "_sum", "_count"]) names.add(name + s);
      else names.add(name);
      if (summary) for (const s of ["_sum", "_count"]) names.add(name + s);
    }
  }
  return names;
}

const PROMQL_WORDS = new Set([
  "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
  "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2",
  "inf", "nan",
]);

// Metric names a PromQL expression selects: identifiers that are not
// functions, keywords, label names, strings or durations.
function promqlMetricNames(expr) {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set();
  for (const m of stripped.matchAll(/(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)) {
    if (!PROMQL_WORDS.has(m[1].toLowerCase())) names.add(m[1]);
  }
  return [...names];
}

// Grafana template variables as the test evaluates them: every variable
// matches everything, `$__rate_interval` is RATE_INTERVAL.
function substitute(expr) {
  return expr
    .replace(/\$\{?__rate_interval\}?/g, RATE_INTERVAL)
    .replace(/\$\{?__interval\}?/g, "15s")
    .replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, ".*");
}

async function promQuery(query, time = undefined) {
  const params = new URLSearchParams({ query });
  if (time !== undefined) params.set("time", String(time));
  const response = await fetch(`${promBase}/api/v1/query?${params}`, { signal: AbortSignal.timeout(30_000) });
  return await response.json();
}

// The single value of a query that must return exactly one series.
async function scalarOf(query) {
  const answer = await promQuery(query, evalTime);
  assert.equal(answer.status, "success", `${query}: ${JSON.stringify(answer)}`);
  assert.equal(answer.data.result.length, 1, `${query}: ${JSON.stringify(answer.data.result)}`);
  return Number(answer.data.result[0].value[1]);
}

before(async () => {
  try {
    dir = tempDir("tern-e2e-metrics-");
    const modelDir = synthModel("tiny", `${dir}/${MODEL}`);
    const workerAddresses = [];
    for (let i = 0; i < NUM_WORKERS; i++) {
      const address = `127.0.0.1:${await freePort()}`;
      const metrics = `127.0.0.1:${await freePort()}`;
      new Proc(`worker ${i + 1}`, binary("tern-worker"), [
        "--model", modelDir, "--listen", address, "--metrics-listen", metrics, "--max-num-seqs", "8",
        "--tp", "1", "--kv-cache-gib", "0.25", "--log-level", "warning",
      ]);
      workerAddresses.push(address);
      workerMetricsURLs.push(`http://${metrics}/metrics`);
    }
    const routerAddress = `127.0.0.1:${await freePort()}`;
    const routerMetrics = `127.0.0.1:${await freePort()}`;
    routerMetricsURL = `http://${routerMetrics}/metrics`;
    new Proc("router", binary("tern-router"), [
      "--listen", routerAddress, "--workers", workerAddresses.join(","), "--policy", "prefix",
      "--health-interval-ms", "300", "--metrics-listen", routerMetrics, "--log-level", "warning",
    ]);
    await waitUntil("every worker healthy", 120_000, async () => {
      const healthy = samples(await fetchText(routerMetricsURL), "tern_router_worker_healthy");
      return workerAddresses.every((a) => healthy.some((s) => s.labels.worker === a && s.value === 1));
    });
    const gatewayAddress = `127.0.0.1:${await freePort()}`;
    gatewayBase = `http://${gatewayAddress}`;
    new Proc("gateway", binary("tern-gateway"), [
      "--listen", gatewayAddress, "--router", routerAddress, "--model", modelDir,
      "--served-model-name", MODEL, "--log-level", "warning",
    ]);
    await waitUntil("gateway ready", 30_000, async () => (await fetch(`${gatewayBase}/health`)).ok);
    await waitUntil("worker metrics endpoints", 10_000, async () => {
      await Promise.all(workerMetricsURLs.map(fetchText));
      return true;
    });

    // Prometheus: 1 s scrapes of the three tiers, the chart's alerting rules.
    const promDir = path.join(dir, "prometheus");
    mkdirSync(path.join(promDir, "data"), { recursive: true });
    const hostPort = (url) => new URL(url).host;
    const config = {
      global: { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" },
      rule_files: [rulesFile],
      scrape_configs: [
        { job_name: "gateway", static_configs: [{ targets: [gatewayAddress] }] },
        { job_name: "router", static_configs: [{ targets: [routerMetrics] }] },
        { job_name: "worker", static_configs: [{ targets: workerMetricsURLs.map(hostPort) }] },
      ],
    };
    // JSON is YAML.
    writeFileSync(path.join(promDir, "prometheus.yml"), JSON.stringify(config, null, 2));
    const promPort = await freePort();
    promBase = `http://127.0.0.1:${promPort}`;
    prom = new Proc("prometheus", "prometheus", [
      `--config.file=${path.join(promDir, "prometheus.yml")}`,
      `--storage.tsdb.path=${path.join(promDir, "data")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ]);
    await waitUntil("prometheus ready", 60_000, async () => (await fetch(`${promBase}/-/ready`)).ok);
    await waitUntil("every target scraped and up", 30_000, async () => {
      const targets = (await (await fetch(`${promBase}/api/v1/targets`)).json()).data.activeTargets;
      return targets.length === NUM_WORKERS + 2 && targets.every((t) => t.health === "up");
    });
  } catch (e) {
    await stopAll();
    throw e;
  }
});

async function stopAll() {
  for (const p of procs) p.signal("SIGTERM");
  const timer = setTimeout(() => procs.forEach((p) => p.signal("SIGKILL")), 10_000);
  await Promise.all(procs.map((p) => p.exited));
  clearTimeout(timer);
}

after(async () => {
  await stopAll();
  if (dir) removeDir(dir);
});

function tierURLs() {
  return [
    ["gateway", `${gatewayBase}/metrics`],
    ["router", routerMetricsURL],
    ...workerMetricsURLs.map((url, i) => [`worker ${i + 1}`, url]),
  ];
}

// `promtool check metrics` on one tier's text: no finding but the allowed ones.
function checkMetrics(when, tier, text) {
  const out = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8", timeout: 60_000 });
  assert.ok(!out.error, `cannot run promtool: ${out.error?.message}`);
  const findings = `${out.stdout}${out.stderr}`.split("\n").map((l) => l.trim()).filter(Boolean);
  const unexpected = findings.filter((f) => !ALLOWED_FINDINGS.has(f));
  assert.deepEqual(unexpected, [], `${tier} (${when}): promtool check metrics findings`);
  // Exit 0 when clean, 3 when it found only lint problems (the allowed ones).
  assert.equal(out.status, findings.length ? 3 : 0, `${tier} (${when}): promtool exit ${out.status}\n${findings.join("\n")}`);
  console.log(`${tier} (${when}): promtool check metrics: ${findings.length ? findings.join("; ") : "clean"}`);
}

describe("metrics scraped by Prometheus", { timeout: 600_000 }, () => {
  test("promtool check metrics on every idle tier: only the documented ':' finding for the vllm: names", async () => {
    for (const [tier, url] of tierURLs()) checkMetrics("idle", tier, await fetchText(url));
  });

  test("shared-prefix chat traffic, streaming and not, through the openai SDK", async () => {
    const client = new OpenAI({ apiKey: "sk-local", baseURL: `${gatewayBase}/v1`, maxRetries: 0, timeout: 120_000 });
    const prefixes = ["rivers", "mountains", "harbours"].map((topic) => [
      {
        role: "system",
        content: `You are a guide who knows everything about ${topic}. `.repeat(12) + "Answer briefly.",
      },
    ]);
    const questions = ["Which is the longest?", "Which is the oldest?", "Where should I go first?", "Name one."];
    const requests = [];
    for (let wave = 0; wave < 3; wave++) {
      for (let p = 0; p < prefixes.length; p++) {
        for (let q = 0; q < questions.length; q++) {
          requests.push({ wave, messages: [...prefixes[p], { role: "user", content: `${questions[q]} (${wave})` }] });
        }
      }
    }
    const one = async ({ messages }, i) => {
      const body = { model: MODEL, messages, max_tokens: 12, temperature: 0.7, seed: i };
      if (i % 2 === 0) {
        const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
        let chunks = 0;
        for await (const chunk of stream) if (chunk.choices?.[0]?.delta?.content !== undefined) chunks++;
        assert.ok(chunks > 0, "streamed chunks");
      } else {
        const res = await client.chat.completions.create(body);
        assert.ok(res.usage.completion_tokens > 0);
      }
    };
    // Waves a few scrapes apart, so every counter has samples before and after.
    const start = Date.now();
    for (let wave = 0; wave < 3; wave++) {
      const batch = requests.map((r, i) => [r, i]).filter(([r]) => r.wave === wave);
      for (let k = 0; k < batch.length; k += 4) {
        await Promise.all(batch.slice(k, k + 4).map(([r, i]) => one(r, i)));
      }
      await sleep(2_500);
    }
    // One request for a model nobody serves: an error answer.
    await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "Hi" }] }));
    console.log(`traffic: ${requests.length + 1} requests in ${((Date.now() - start) / 1000).toFixed(1)} s`);

    // Prometheus has scraped the final state of every tier.
    for (const [tier, url] of tierURLs()) metricsTexts[tier] = await fetchText(url);
    const generated = samples(metricsTexts.gateway, "tern_gateway_generation_tokens_total").reduce((a, s) => a + s.value, 0);
    assert.ok(generated > 0, "the gateway counted generated tokens");
    await waitUntil("Prometheus has the final token count", 30_000, async () => {
      const answer = await promQuery('sum(tern_gateway_generation_tokens_total{job="gateway"})');
      return Number(answer.data.result[0]?.value[1]) === generated;
    });
    await sleep(3_000); // three more scrapes of every target
    evalTime = Date.now() / 1000;
  });

  test("promtool check metrics on every tier after the traffic: only the documented finding", () => {
    assert.ok(evalTime, "the traffic test ran");
    for (const [tier, text] of Object.entries(metricsTexts)) checkMetrics("after traffic", tier, text);
  });

  test("Prometheus answers TTFT p90, one running gauge per worker, hit rates in [0, 1]", async (t) => {
    assert.ok(evalTime, "the traffic test ran");
    const ttft = await scalarOf(
      `histogram_quantile(0.9, sum by (le) (rate(tern_gateway_time_to_first_token_seconds_bucket[${RATE_INTERVAL}])))`);
    assert.ok(Number.isFinite(ttft) && ttft > 0, `TTFT p90 ${ttft}`);

    const running = await promQuery('tern_worker_running_sequences{job="worker"}', evalTime);
    assert.equal(running.status, "success");
    const instances = running.data.result.map((r) => r.metric.instance).sort();
    assert.deepEqual(instances, workerMetricsURLs.map((u) => new URL(u).host).sort(), "one running gauge per worker");

    const rates = {};
    for (const kind of ["predicted", "reported"]) {
      rates[kind] = await scalarOf(
        `sum(rate(tern_router_worker_${kind}_cached_tokens_total[${RATE_INTERVAL}]))` +
        ` / sum(rate(tern_router_worker_routed_prompt_tokens_total[${RATE_INTERVAL}]))`);
      assert.ok(Number.isFinite(rates[kind]) && rates[kind] >= 0 && rates[kind] <= 1, `${kind} hit rate ${rates[kind]}`);
    }
    console.log(`TTFT p90 ${ttft.toFixed(3)} s; prefix-hit rate predicted ${rates.predicted.toFixed(3)}, reported ${rates.reported.toFixed(3)}`);
  });

  test("every dashboard query parses, names documented and exported metrics; the traffic's panels have data", async () => {
    assert.ok(evalTime, "the traffic test ran");
    const dashboard = JSON.parse(readFileSync(dashboardFile, "utf8"));
    const documented = documentedNames();
    const exported = new Set(["up"]);
    for (const text of Object.values(metricsTexts)) for (const n of exposedNames(text)) exported.add(n);
    documented.add("up");

    const panels = [];
    const walk = (list) => {
      for (const p of list ?? []) {
        if (p.type === "row") walk(p.panels);
        else panels.push(p);
      }
    };
    walk(dashboard.panels);
    const titles = new Set(panels.map((p) => p.title));
    for (const title of PANELS_WITH_DATA) assert.ok(titles.has(title), `no panel titled "${title}"`);

    const problems = [];
    const missing = new Set();
    let total = 0;
    let nonEmpty = 0;
    const empty = [];
    for (const panel of panels) {
      for (const target of panel.targets ?? []) {
        total++;
        const where = `"${panel.title}" ${target.refId}`;
        const expr = substitute(target.expr);
        const answer = await promQuery(expr, evalTime);
        if (answer.status !== "success") {
          problems.push(`${where}: ${answer.errorType}: ${answer.error}\n    ${expr}`);
          continue;
        }
        for (const name of promqlMetricNames(expr)) {
          if (!documented.has(name)) problems.push(`${where}: ${name} is not in docs/metrics.md`);
          if (!exported.has(name)) missing.add(name);
        }
        const result = answer.data.result;
        const values = answer.data.resultType === "vector" ? result.map((r) => Number(r.value[1])) : [];
        if (result.length > 0) nonEmpty++;
        else empty.push(where);
        if (PANELS_WITH_DATA.includes(panel.title) && !values.some(Number.isFinite)) {
          problems.push(`${where}: no data (${result.length} series: ${values.join(", ")})\n    ${expr}`);
        }
      }
    }
    // The template variables' queries (label_values(metric, label)) too.
    for (const v of dashboard.templating.list.filter((v) => v.type === "query")) {
      const definition = v.definition ?? v.query?.query ?? v.query;
      const m = substitute(definition).match(/^label_values\((.+),\s*(\w+)\)$/);
      if (!m) {
        problems.push(`variable ${v.name}: unexpected query ${definition}`);
        continue;
      }
      const answer = await promQuery(`count by (${m[2]}) (${m[1]})`, evalTime);
      const values = answer.status === "success" ? answer.data.result.map((r) => r.metric[m[2]]).filter(Boolean) : [];
      for (const name of promqlMetricNames(m[1])) {
        if (!documented.has(name)) problems.push(`variable ${v.name}: ${name} is not in docs/metrics.md`);
        if (!exported.has(name)) missing.add(name);
      }
      console.log(`variable ${v.name}: ${values.join(", ") || "(no values)"}`);
      if (!values.length) problems.push(`variable ${v.name}: ${definition} has no values`);
    }
    for (const name of missing) problems.push(`${name} is not exported by the cluster`);
    console.log(`dashboard: ${total} queries, ${nonEmpty} returned data; empty: ${empty.join(", ") || "none"}`);
    const undocumentedExports = [...exported].filter((n) => !documented.has(n));
    if (undocumentedExports.length) console.log(`exported but not in docs/metrics.md: ${undocumentedExports.join(", ")}`);
    assert.deepEqual(problems, [], problems.join("\n"));
  });

  test("Prometheus loads the alerting rules and evaluates them without errors", async () => {
    await waitUntil("rules evaluated", 20_000, async () => {
      const groups = (await (await fetch(`${promBase}/api/v1/rules`)).json()).data.groups;
      return groups.length > 0 && groups.every((g) => g.lastEvaluation && !g.lastEvaluation.startsWith("0001"));
    });
    const groups = (await (await fetch(`${promBase}/api/v1/rules`)).json()).data.groups;
    const rules = groups.flatMap((g) => g.rules);
    const alertCount = [...readFileSync(rulesFile, "utf8").matchAll(/^\s*- alert: /gm)].length;
    assert.equal(rules.length, alertCount);
    const broken = rules.filter((r) => r.health === "err").map((r) => `${r.name}: ${r.lastError}`);
    assert.deepEqual(broken, []);
    const firing = rules.filter((r) => r.state === "firing").map((r) => r.name);
    console.log(`alert rules: ${rules.length} loaded, health ${[...new Set(rules.map((r) => r.health))].join("/")}, firing: ${firing.join(", ") || "none"}`);
  });
});
