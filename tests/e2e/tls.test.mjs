// Mutual TLS between the tiers, end to end: `tern up --tls` (a throw-away CA
// and one certificate per tier, written to --tls-dir) on a tiny synthetic
// checkpoint, then:
//  - a chat completion served end to end over HTTPS at the gateway, through
//    mutual TLS gateway -> router -> worker;
//  - the router and the worker refuse plaintext gRPC, a client that presents
//    no certificate, and one whose certificate another CA signed, while a
//    client with the cluster's own client certificate is answered (so the
//    refusals are not vacuous);
//  - `openssl s_client` against the router: a TLS 1.3 handshake whose chain
//    verifies against the throw-away CA, and a request refused without a
//    client certificate.
// Each check prints what it found.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import grpc from "@grpc/grpc-js";

import { Cluster, removeDir, synthModel, tempDir } from "../lib/tern.mjs";

let dir;
let tlsDir;
let cluster;
let routerAddress;
let workerAddress;

const file = (name) => path.join(tlsDir, name);

before(async () => {
  dir = tempDir("tern-e2e-tls-");
  tlsDir = path.join(dir, "tls");
  const model = synthModel("tiny", path.join(dir, "tern-e2e-tiny"));
  cluster = await Cluster.start({ model, extraArgs: ["--tls", "--tls-dir", tlsDir, "--max-model-len", "256"] });
  const logs = cluster.logs.join("");
  routerAddress = logs.match(/starting router on (\S+)/)[1];
  workerAddress = logs.match(/starting worker 1\/1 on (\S+)/)[1];
  // A certificate from a CA the cluster does not know, for the refusals.
  const openssl = (args) => {
    const out = spawnSync("openssl", args, { cwd: dir, encoding: "utf8", timeout: 60_000 });
    assert.equal(out.status, 0, `openssl ${args.join(" ")}: ${out.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(["req", "-x509", ...ec, "-keyout", "other-ca.key", "-out", "other-ca.crt", "-subj", "/CN=other CA", "-days", "1"]);
  openssl(["req", ...ec, "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=intruder"]);
  openssl(["x509", "-req", "-in", "other.csr", "-CA", "other-ca.crt", "-CAkey", "other-ca.key", "-CAcreateserial",
    "-out", "other.crt", "-days", "1"]);
});

after(async () => {
  if (cluster) await cluster.stop();
  if (dir) removeDir(dir);
});

// POST over HTTPS, trusting only the throw-away CA: [status, parsed body,
// the TLS version negotiated].
function postJson(url, body) {
  return new Promise((resolve, reject) => {
    const request = https.request(url, {
      method: "POST",
      ca: readFileSync(file("ca.crt")),
      headers: { "Content-Type": "application/json" },
      timeout: 60_000,
    }, (response) => {
      const protocol = response.socket.getProtocol();
      let text = "";
      response.on("data", (chunk) => (text += chunk));
      response.on("end", () => resolve([response.statusCode, JSON.parse(text), protocol]));
    });
    request.on("error", reject);
    request.end(JSON.stringify(body));
  });
}

// grpc.health.v1.Health/Check (an empty request) with `credentials`: the
// status code, 0 when answered.
function healthCheck(address, credentials) {
  const client = new grpc.Client(address, credentials);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      () => Buffer.alloc(0),
      (bytes) => bytes,
      {},
      { deadline: Date.now() + 5_000 },
      (error) => {
        client.close();
        resolve(error ? { code: error.code, details: error.details } : { code: 0 });
      },
    );
  });
}

const clusterClient = () =>
  grpc.credentials.createSsl(readFileSync(file("ca.crt")), readFileSync(file("client.key")), readFileSync(file("client.crt")));

describe("tern up --tls", () => {
  test("writes the CA and one certificate per tier, keys readable by the owner only", () => {
    for (const name of ["gateway", "router", "worker", "client"]) {
      assert.equal(statSync(file(`${name}.key`)).mode & 0o777, 0o600, `${name}.key`);
      statSync(file(`${name}.crt`));
    }
    assert.match(cluster.logs.join(""), /ready: .*OpenAI API at https:\/\//);
    console.log(`tls dir: ${tlsDir}; router ${routerAddress}, worker ${workerAddress}`);
  });

  test("a chat completion is served end to end over HTTPS and mutual TLS", async () => {
    const url = `https://127.0.0.1:${cluster.port}/v1/chat/completions`;
    const [status, body, protocol] = await postJson(url, {
      model: "tern-e2e-tiny",
      messages: [{ role: "user", content: "Hello over TLS" }],
      max_tokens: 8,
      temperature: 0,
    });
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.object, "chat.completion");
    assert.ok(body.usage.completion_tokens > 0);
    console.log(`chat completion over HTTPS (${protocol}): ${status}, ` +
      `${body.usage.completion_tokens} tokens, finish ${body.choices[0].finish_reason}`);
  });

  for (const [tier, address] of [["router", () => routerAddress], ["worker", () => workerAddress]]) {
    test(`the ${tier} answers the cluster's client certificate and refuses plaintext, no certificate and a foreign CA`, async () => {
      const ours = await healthCheck(address(), clusterClient());
      assert.equal(ours.code, 0, `the cluster's client: ${JSON.stringify(ours)}`);
      const plaintext = await healthCheck(address(), grpc.credentials.createInsecure());
      const anonymous = await healthCheck(address(), grpc.credentials.createSsl(readFileSync(file("ca.crt"))));
      const foreign = await healthCheck(address(), grpc.credentials.createSsl(
        readFileSync(file("ca.crt")), readFileSync(path.join(dir, "other.key")), readFileSync(path.join(dir, "other.crt"))));
      for (const [what, result] of [["plaintext", plaintext], ["no certificate", anonymous], ["foreign CA", foreign]]) {
        assert.equal(result.code, grpc.status.UNAVAILABLE, `${tier}, ${what}: ${JSON.stringify(result)}`);
      }
      console.log(`${tier}: cluster client OK; plaintext -> ${plaintext.details}; no certificate -> ` +
        `${anonymous.details}; foreign CA -> ${foreign.details}`);
    });
  }

  test("the gateway's public gRPC API serves TLS with the gateway's certificate, no client certificate needed", async () => {
    const address = cluster.grpcAddress;
    const withCa = await healthCheck(address, grpc.credentials.createSsl(readFileSync(file("ca.crt"))));
    assert.equal(withCa.code, 0, JSON.stringify(withCa));
    const plaintext = await healthCheck(address, grpc.credentials.createInsecure());
    assert.equal(plaintext.code, grpc.status.UNAVAILABLE, JSON.stringify(plaintext));
    console.log(`gRPC API ${address}: TLS with the CA only -> OK; plaintext -> ${plaintext.details}`);
  });

  test("openssl s_client: the router negotiates TLS 1.3 with a chain from the CA, and needs a client certificate", () => {
    const sClient = (extra) =>
      spawnSync("openssl", ["s_client", "-connect", routerAddress, "-CAfile", file("ca.crt"), "-alpn", "h2",
        "-verify_return_error", ...extra], { input: "", encoding: "utf8", timeout: 30_000 });
    const withCert = sClient(["-cert", file("client.crt"), "-key", file("client.key")]);
    const out = withCert.stdout + withCert.stderr;
    assert.match(out, /Protocol *: TLSv1\.3|New, TLSv1\.3/, out);
    assert.match(out, /Verify return code: 0 \(ok\)/, out);
    assert.match(out, /issuer=.*tern throw-away CA/, out);
    const chain = out.split("\n").filter((line) => /^ *\d+ s:|^ +i:/.test(line)).map((line) => line.trim());
    console.log(`s_client with the client certificate: ${out.match(/New, [^\n]*/)?.[0]}; ` +
      `${out.match(/Verify return code: [^\n]*/)?.[0]}; chain: ${chain.join(" | ")}`);

    // TLS 1.3 checks the client's certificate after the client's side of the
    // handshake is done: the server asks for one (naming the CA) and, given
    // none, drops the connection at the first read.
    const without = sClient(["-ign_eof"]);
    const refused = without.stdout + without.stderr;
    assert.match(refused, /Acceptable client certificate CA names\n.*tern throw-away CA/, refused);
    assert.match(refused, /unexpected eof while reading|alert certificate required|alert handshake failure/i, refused);
    assert.notEqual(without.status, 0, "s_client without a certificate fails");
    console.log(`s_client without a client certificate: the server asks for one from ` +
      `"${refused.match(/Acceptable client certificate CA names\n([^\n]*)/)[1].trim()}", then ` +
      `${refused.match(/[^\n]*(unexpected eof while reading|alert [a-z ]+)/i)[1]}; exit ${without.status}`);
  });
});
