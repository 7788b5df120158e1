// Drives Debian's Chromium (headless, playwright-core) through ldbridge's
// Delivery Overview for tests/it/overview.rs: log in by keyboard, read the
// pipeline, open the failed batch, resend it, see the manual attempt
// delivered, explain an event; a screenshot of every view at 1280 and
// 400 px wide.
//
//   node ui.mjs '{"admin":"http://127.0.0.1:PORT","token":"…","chromium":"…","shots":"/dir","messageId":"…"}'
//
// Line protocol on stdout/stdin:
//   PIPELINE {json}  the overview's numbers for segment-to-launchdarkly
//   RESEND?          before resending; the test makes the receiver accept
//                    and answers "ok"
//   RESENT           the page requeued the batch; the test dispatches and
//                    answers "delivered"
//   RESULT {json}    console errors, requests to any other host, pages
//                    wider than the window, and what each check saw
// Any failure prints "ERROR …" and exits 1.
import { ask, fail } from './protocol.mjs';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const admin = new URL(config.admin);
const WAIT_MS = 30_000;
mkdirSync(config.shots, { recursive: true });

setTimeout(() => fail('the overview browser test did not finish in time'), 150_000).unref();


const browser = await chromium.launch({
  executablePath: config.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(WAIT_MS);
const seen = { console: [], foreign: [], wide: [], checks: {} };
page.on('console', (message) => {
  if (message.type() === 'error' || message.type() === 'warning') {
    seen.console.push(`${message.type()}: ${message.text()} (${message.location().url})`);
  }
});
page.on('pageerror', (error) => seen.console.push(`pageerror: ${error.message}`));
page.on('request', (request) => {
  const url = new URL(request.url());
  if (url.host !== admin.host && !['data:', 'about:'].includes(url.protocol)) seen.foreign.push(request.url());
});
page.on('dialog', (dialog) => dialog.accept());

// Both widths, and whether the page fits the narrow one.
async function shoot(name) {
  await page.screenshot({ path: `${config.shots}/${name}-1280.png`, fullPage: true });
  await page.setViewportSize({ width: 400, height: 900 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 400) seen.wide.push(`${name}: ${width}px`);
  await page.screenshot({ path: `${config.shots}/${name}-400.png`, fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });
}

// Log in with the keyboard alone.
await page.goto(`${config.admin}/ui/batches?status=failed`);
if (!page.url().includes('/ui/login')) fail(`not sent to the login page: ${page.url()}`);
await shoot('login');
await page.keyboard.type(config.token); // the token field has focus
await page.keyboard.press('Enter');
await page.waitForURL(/\/ui\/batches\?status=failed$/);
seen.checks.loggedInTo = new URL(page.url()).pathname + new URL(page.url()).search;

// The overview: the failed batch's events on the pipeline.
await page.goto(`${config.admin}/ui/?window=1h`);
const pipeline = await page.$$eval('#route-segment-to-launchdarkly ~ ol .step', (steps) =>
  Object.fromEntries(steps.map((s) => [s.querySelector('.label').textContent, Number(s.querySelector('.count').textContent)])),
);
console.log(`PIPELINE ${JSON.stringify(pipeline)}`);
seen.checks.localTimes = await page.$$eval('span.local', (spans) => spans.length);
await shoot('overview');
await page.click('text=as percentages of received');
await page.click('button:has-text("Show")');
await page.waitForURL(/as=percent/);
await shoot('overview-percent');

// The failed batch, from the number on the pipeline.
await page.goto(`${config.admin}/ui/?window=1h`);
await page.click('#route-segment-to-launchdarkly ~ ol .step.failed .count');
await page.waitForURL(/\/ui\/batches\?/);
await shoot('batches-failed');
await page.click('table tbody tr:first-child td:first-child a');
await page.waitForURL(/\/ui\/batches\/\d+$/);
seen.checks.batchStatus = await page.textContent('h1 .status');
await shoot('batch-failed');

await ask('RESEND?', 'ok');
// The page counts first (a dry run), asks (accepted above), resends and
// reloads.
const reloaded = page.waitForEvent('load');
await page.click('button.resend');
await reloaded;
await ask('RESENT', 'delivered');
await page.reload();
seen.checks.batchStatusAfter = await page.textContent('h1 .status');
seen.checks.attempts = await page.$$eval('table tbody tr', (rows) =>
  rows.map((row) => [...row.querySelectorAll('td')].map((td) => td.textContent.trim())),
);
await shoot('batch-delivered');

// Explain: by the messageId, from the search box.
await page.goto(`${config.admin}/ui/explain`);
await page.fill('#q', config.messageId);
await page.keyboard.press('Enter');
await page.waitForURL(/\/ui\/explain\?q=/);
seen.checks.explained = await page.textContent('main');
await shoot('explain');

for (const [name, path] of [['batches', '/ui/batches'], ['resend', '/ui/resend'], ['refusals', '/ui/refusals']]) {
  await page.goto(`${config.admin}${path}`);
  await shoot(name);
}
// Every view has its icon (no 404 in the console).
seen.checks.icon = await page.$eval('link[rel=icon]', (link) => link.href);

console.log(`RESULT ${JSON.stringify(seen)}`);
await browser.close();
process.exit(0);
