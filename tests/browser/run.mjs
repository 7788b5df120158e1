// Drives Debian's Chromium (headless, through playwright-core) for
// ldbridge's browser test, tests/it/browser.rs, which starts ldbridge and
// this script and checks what arrives.
//
//   node run.mjs '{"ingest":"http://127.0.0.1:PORT","writeKey":"…","clientSideId":"…","chromium":"/usr/bin/chromium"}'
//
// It serves the page (dist/page.js, see page.js) from its own loopback
// origin, so every call to ldbridge is cross-origin, and speaks a line
// protocol on stdout/stdin:
//   SENT             the SDKs' calls and a JSON beacon went out
//   DOWN?            asks the test to stop ldbridge; the test answers "down"
//   UP?              a track failed while ldbridge was down; the test
//                    restarts it and answers "up"
//   RESULT {json}    what the browser saw: console messages, failed
//                    requests, the X-Retry-Count of each request to
//                    ldbridge, and when ldbridge was down
// Every wait has a deadline; any failure prints "ERROR …" and exits 1.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { ask, fail } from './protocol.mjs';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const here = new URL('.', import.meta.url);
const bundle = readFileSync(new URL('dist/page.js', here));
const WAIT_MS = 30_000;

setTimeout(() => fail('the browser test did not finish in time'), 120_000).unref();

// The page's origin; it also answers the LaunchDarkly SDK's flag requests.
const flags = {
  'new-checkout': { value: true, variation: 0, version: 3, flagVersion: 3, trackEvents: true },
};
const server = createServer((request, response) => {
  if (request.url === '/') {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>ldbridge browser test</title><script src="/page.js"></script>');
  } else if (request.url === '/page.js') {
    response.writeHead(200, { 'content-type': 'text/javascript' });
    response.end(bundle);
  } else if (request.url === '/favicon.ico') {
    response.writeHead(204);
    response.end();
  } else if (request.url.startsWith('/sdk/')) {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(flags));
  } else {
    response.writeHead(404);
    response.end();
  }
});
await new Promise((resolve) => server.listen(0, 'localhost', resolve));
const origin = `http://localhost:${server.address().port}`;


async function until(what, condition, waitMs = WAIT_MS) {
  const deadline = Date.now() + waitMs;
  while (!condition()) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}; seen so far: ${JSON.stringify(seen)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const page = await browser.newPage();
// Times are ms since the page opened; `down`/`up` bound the window in
// which ldbridge was stopped.
const t0 = Date.now();
const seen = { console: [], failed: [], requests: [], responses: [], down: null, up: null };
page.on('console', (message) =>
  seen.console.push(`${message.type()}: ${message.text()} (${message.location().url})`),
);
page.on('pageerror', (error) => seen.console.push(`pageerror: ${error.message}`));
// A request that got its answer and was then aborted (the LaunchDarkly SDK
// does not read a 202's empty body) lost nothing; one with no answer did.
page.on('requestfailed', async (request) => {
  if (request.url().startsWith(config.ingest) && !(await request.response())) {
    seen.failed.push({
      method: request.method(),
      path: new URL(request.url()).pathname,
      error: request.failure()?.errorText,
      at: Date.now() - t0,
    });
  }
});
page.on('request', (request) => {
  if (request.url().startsWith(config.ingest)) {
    const headers = request.headers();
    seen.requests.push({
      method: request.method(),
      path: new URL(request.url()).pathname,
      retry: headers['x-retry-count'] ?? null,
      at: Date.now() - t0,
    });
  }
});
page.on('response', (response) => {
  if (response.url().startsWith(config.ingest)) {
    seen.responses.push({
      path: new URL(response.url()).pathname,
      // sendBeacon's request: Chromium's resource type "ping".
      beacon: response.request().resourceType() === 'ping',
      status: response.status(),
      retry: response.request().headers()['x-retry-count'] ?? null,
      at: Date.now() - t0,
    });
  }
});

await page.goto(`${origin}/`);
const pageConfig = { ...config, flags: origin };
if ((await page.evaluate((c) => window.bridge.start(c), pageConfig)) !== 'started') fail('the SDKs did not start');
await page.evaluate(() => window.bridge.send());
if (!(await page.evaluate((c) => window.bridge.beacon(c), pageConfig))) fail('sendBeacon refused to queue');
// A beacon is sent when the browser gets to it and never again: ldbridge
// must not be stopped (below) before it was answered.
await until('the beacon answered', () => seen.responses.some((r) => r.beacon));
// analytics.js telemetry (/v1/m) flushes on a short timer here.
await until('analytics.js telemetry to /v1/m', () => seen.responses.some((r) => r.path === '/v1/m'));
console.log('SENT');

// ldbridge goes down; a track is sent; it fails; ldbridge comes back; the
// retry (with X-Retry-Count) must get through.
await ask('DOWN?', 'down');
seen.down = Date.now() - t0;
const failedBefore = seen.failed.length;
await page.evaluate(() => window.bridge.trackLater('Sent While Down'));
// The track's own failure: analytics.js telemetry (/v1/m) fails too while
// ldbridge is down, and restarting before the track was tried would leave
// it nothing to retry.
await until('the track to fail while ldbridge is down', () =>
  seen.failed.slice(failedBefore).some((f) => f.path === '/v1/t'),
);
const downAt = seen.responses.length;
await ask('UP?', 'up');
seen.up = Date.now() - t0;
await until('a retry with X-Retry-Count answered 200', () =>
  seen.responses.slice(downAt).some((r) => r.retry !== null && r.status === 200),
);

console.log(`RESULT ${JSON.stringify(seen)}`);
await browser.close();
server.close();
process.exit(0);
