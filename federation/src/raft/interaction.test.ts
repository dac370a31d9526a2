// Runs every raft transcript in src/raft/testdata: each block is a command, "----", and the output
// the command must produce. RAFT_REWRITE=1 rewrites the expected output from the current behaviour
// (review the diff before committing it).

import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { InteractionEnv, parseCommand } from "./interaction-env.js";

// Tests run from dist/raft; the transcripts stay in the source tree.
const dir = fileURLToPath(new URL("../../src/raft/testdata", import.meta.url));
const rewrite = process.env.RAFT_REWRITE === "1";

interface Block {
  comments: string[];
  command: string;
  expected: string[];
  line: number;
}

function parse(text: string, file: string): Block[] {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  let comments: string[] = [];
  let k = 0;
  while (k < lines.length) {
    const l = lines[k]!;
    if (l.trim() === "") {
      if (comments.length > 0) comments.push("");
      k++;
      continue;
    }
    if (l.startsWith("#")) {
      comments.push(l);
      k++;
      continue;
    }
    const line = k + 1;
    const command = l;
    k++;
    if (lines[k] !== "----") throw new Error(`${file}:${k + 1}: expected "----" after command "${command}"`);
    k++;
    const expected: string[] = [];
    while (k < lines.length && lines[k] !== "") expected.push(lines[k++]!);
    while (comments.length > 0 && comments[comments.length - 1] === "") comments.pop();
    blocks.push({ comments, command, expected, line });
    comments = [];
  }
  return blocks;
}

function render(blocks: Block[]): string {
  return `${blocks
    .map((b) => {
      const head = b.comments.length > 0 ? `${b.comments.join("\n")}\n` : "";
      return `${head}${b.command}\n----\n${b.expected.join("\n")}\n`;
    })
    .join("\n")}`;
}

const files = readdirSync(dir)
  .filter((f) => f.endsWith(".txt"))
  .sort();

test("raft transcripts exist", () => {
  assert.ok(files.length >= 2, `expected transcripts in ${dir}`);
});

for (const f of files) {
  test(`raft transcript ${f}`, () => {
    const path = join(dir, f);
    const blocks = parse(readFileSync(path, "utf8"), f);
    const env = new InteractionEnv();
    for (const b of blocks) {
      const lines = env.run(parseCommand(b.command));
      const got = lines.length === 0 ? ["ok"] : lines;
      if (rewrite) {
        b.expected = got;
      } else {
        assert.deepEqual(got, b.expected, `${f}:${b.line}: output of "${b.command}" differs`);
      }
    }
    if (rewrite) writeFileSync(path, render(blocks));
  });
}
