// The line protocol the browser scripts (run.mjs, ui.mjs) speak with their
// Rust tests: `fail` prints "ERROR …" and exits 1, `ask` prints a question
// and waits for the expected answer on stdin.
import { createInterface } from 'node:readline';

export function fail(message) {
  console.log(`ERROR ${message}`);
  process.exit(1);
}

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

export async function ask(question, expected) {
  console.log(question);
  const { value } = await answers.next();
  if (value?.trim() !== expected) fail(`expected "${expected}", got ${JSON.stringify(value)}`);
}
