// The Prometheus alerting rules the Helm chart ships
// (helm/tern/files/prometheus/alerts.yaml): valid for Prometheus
// (`promtool check rules`), and each alert fires on the series meant to fire
// it and stays silent on the others (`promtool test rules` with
// tests/deploy/alerts.rules-test.yaml, which pins every alert's labels,
// severity included, and its rendered summary and description).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { testsDir } from "../lib/tern.mjs";

const rulesFile = path.resolve(testsDir, "..", "helm", "tern", "files", "prometheus", "alerts.yaml");
const unitTestFile = path.join(testsDir, "deploy", "alerts.rules-test.yaml");

function promtool(args) {
  const out = spawnSync("promtool", args, { encoding: "utf8", timeout: 120_000 });
  if (out.error) throw new Error(`cannot run promtool (Debian package prometheus): ${out.error.message}`);
  return { status: out.status, output: `${out.stdout}${out.stderr}` };
}

const alertNames = [...readFileSync(rulesFile, "utf8").matchAll(/^\s*- alert: (\w+)\s*$/gm)].map((m) => m[1]);

test("promtool check rules accepts the rule file", () => {
  const { status, output } = promtool(["check", "rules", rulesFile]);
  assert.equal(status, 0, output);
  assert.match(output, new RegExp(`SUCCESS: ${alertNames.length} rules found`), output);
});

test("every alert has a unit test that fires it and one that does not", () => {
  assert.ok(alertNames.length >= 6, `alerts: ${alertNames}`);
  const unitTests = readFileSync(unitTestFile, "utf8");
  for (const name of alertNames) {
    assert.match(unitTests, new RegExp(`alertname: ${name}\\s+exp_alerts: \\[\\]`), `${name}: no case where it stays silent`);
    assert.match(unitTests, new RegExp(`alertname: ${name}\\s+exp_alerts:\\s*\\n\\s*- exp_labels:`), `${name}: no case where it fires`);
  }
});

test("promtool test rules: every alert fires and stays silent as specified", () => {
  const { status, output } = promtool(["test", "rules", unitTestFile]);
  assert.equal(status, 0, output);
  assert.match(output, /SUCCESS/, output);
});
