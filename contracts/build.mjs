// Compiles every contract in src/ with the pinned solc-js for the paris EVM (no PUSH0, so the same
// bytecode deploys on BTTC and TRON) and writes out/<Contract>.json: ABI, creation and runtime code.
//
//   node build.mjs           rebuild out/
//   node build.mjs --check   rebuild in memory; fail if out/ differs (the committed artifacts are
//                            what a plain `cargo build` embeds, so they must match the sources)
//
// Warnings are errors, as clippy's are in the Rust code.
import { createRequire } from "node:module";
import { readFileSync, readdirSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const EVM_VERSION = "paris";
const OPTIMIZER_RUNS = 1000;
const PUSH0 = 0x5f;

const root = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");

const sources = {};
for (const file of readdirSync(join(root, "src"), { recursive: true }).sort()) {
  if (file.endsWith(".sol")) {
    sources[`src/${file}`] = { content: readFileSync(join(root, "src", file), "utf8") };
  }
}
if (Object.keys(sources).length === 0) {
  fail("no contracts in src/");
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: EVM_VERSION,
    optimizer: { enabled: true, runs: OPTIMIZER_RUNS },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = (output.errors ?? []).filter((e) => e.severity !== "info");
if (problems.length > 0) {
  for (const e of problems) console.error(e.formattedMessage ?? e.message);
  fail(`${problems.length} compiler error(s) or warning(s)`);
}

/** Length of the code before the CBOR metadata solc appends (its length is the last two bytes). */
function codeLength(code) {
  if (code.length < 2) return code.length;
  const meta = (code[code.length - 2] << 8) | code[code.length - 1];
  return meta + 2 <= code.length ? code.length - meta - 2 : code.length;
}

/** Offsets of PUSH0 opcodes in `code`, walking instructions (push data is skipped). */
function push0s(code) {
  const found = [];
  for (let i = 0; i < code.length; i++) {
    const op = code[i];
    if (op === PUSH0) found.push(i);
    if (op >= 0x60 && op <= 0x7f) i += op - 0x5f;
  }
  return found;
}

const artifacts = {};
for (const [sourceName, contracts] of Object.entries(output.contracts ?? {})) {
  for (const [contractName, c] of Object.entries(contracts)) {
    // Libraries of internal functions are compiled into their callers; nothing deploys them.
    if (c.abi.length === 0) continue;
    const creation = Buffer.from(c.evm.bytecode.object, "hex");
    const runtime = Buffer.from(c.evm.deployedBytecode.object, "hex");
    if (runtime.length > 0) {
      // The creation code is the constructor followed by the runtime code with its metadata.
      const at = creation.indexOf(runtime);
      const init = at >= 0 ? creation.subarray(0, at) : creation;
      const bad = [...push0s(init), ...push0s(runtime.subarray(0, codeLength(runtime)))];
      if (bad.length > 0) fail(`${contractName}: PUSH0 at ${bad.join(", ")}; the ${EVM_VERSION} target has none`);
      if (runtime.length > 24576) fail(`${contractName}: runtime code is ${runtime.length} bytes, over EIP-170's 24,576`);
    }
    artifacts[`${contractName}.json`] =
      JSON.stringify(
        {
          contractName,
          sourceName,
          compiler: solc.version(),
          evmVersion: EVM_VERSION,
          optimizerRuns: OPTIMIZER_RUNS,
          abi: c.abi,
          bytecode: `0x${c.evm.bytecode.object}`,
          deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        },
        null,
        2,
      ) + "\n";
  }
}

const outDir = join(root, "out");
if (check) {
  const stale = [];
  const committed = existsSync(outDir) ? readdirSync(outDir).filter((f) => f.endsWith(".json")) : [];
  for (const [file, text] of Object.entries(artifacts)) {
    const path = join(outDir, file);
    if (!existsSync(path) || readFileSync(path, "utf8") !== text) stale.push(file);
  }
  for (const file of committed) if (!(file in artifacts)) stale.push(`${file} (no such contract)`);
  if (stale.length > 0) {
    fail(`contracts/out is stale: ${stale.join(", ")}; run scripts/contracts.sh and commit contracts/out`);
  }
  console.log(`contracts/out matches the sources (${Object.keys(artifacts).length} contracts, ${solc.version()}, ${EVM_VERSION})`);
} else {
  mkdirSync(outDir, { recursive: true });
  for (const [file, text] of Object.entries(artifacts)) writeFileSync(join(outDir, file), text);
  console.log(`wrote ${Object.keys(artifacts).length} contracts to contracts/out (${solc.version()}, ${EVM_VERSION})`);
}

function fail(message) {
  console.error(`contracts: ${message}`);
  process.exit(1);
}
