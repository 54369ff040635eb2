// Drives `mitoscope review` in headless Chromium (Debian's /usr/bin/chromium,
// through playwright-core: no browser download). Run by
// crates/mitoscope/tests/review_e2e.rs, which starts the server, then checks
// what this script leaves in --out:
//   exported.csv   the corrected set, downloaded through the page's CSV button
//   review.png     screenshot of the review page
//   report.png     screenshot of the HTML report (--report)
//   result.json    what was done: the rejected item, the added point
//
// usage: node review.mjs --url http://127.0.0.1:PORT/ --report report.html --out DIR
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

function arg(name) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing --${name}`);
  return process.argv[i + 1];
}

const url = arg('url');
const report = resolve(arg('report'));
const out = resolve(arg('out'));
const executablePath = process.env.MITOSCOPE_CHROMIUM || '/usr/bin/chromium';
const userDataDir = mkdtempSync(join(tmpdir(), 'mitoscope-e2e-'));

// Without the background-networking flags Chromium keeps trying to reach
// Google's services, which a closed CI network refuses noisily.
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});

// Idle: no API call in flight and every tile asked for has arrived.
const POLL = { polling: 100, timeout: 20000 };
async function idle(page) {
  try {
    await page.waitForFunction(() => window.mitoscope.inflight() === 0 && window.mitoscope.loading() === 0, null, POLL);
  } catch (e) {
    const why = await page.evaluate(() => ({ inflight: window.mitoscope.inflight(), loading: window.mitoscope.loadingTiles() }));
    throw new Error(`page never went idle: ${JSON.stringify(why)}: ${e.message}`);
  }
}

try {
  // A fresh tab: the persistent context's initial one may be treated as a
  // background tab, where requestAnimationFrame (and so rAF polling) stalls.
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('requestfinished', (r) => { if (process.env.E2E_DEBUG) console.error('finished', r.url()); });
  page.on('request', (r) => { if (process.env.E2E_DEBUG) console.error('request', r.url()); });
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}: ${r.failure()?.errorText}`));

  await page.goto(url);
  await page.waitForFunction(() => window.mitoscope && window.mitoscope.ready === true, null, POLL);
  await idle(page);
  const before = await page.evaluate(() => window.mitoscope.state());

  // Reject the first undecided detection (space / j selects the highest score).
  await page.keyboard.press('j');
  const rejected = await page.evaluate(() => window.mitoscope.selected());
  if (rejected === null) throw new Error('j selected nothing');
  await page.keyboard.press('r');
  await page.waitForFunction(
    (id) => window.mitoscope.state().items.find((i) => i.id === id).decision === 'rejected', rejected, POLL);
  await idle(page);

  // Add one at image pixel (1000, 1000): fit the view, point there, press n.
  await page.keyboard.press('0');
  const target = { x: 1000, y: 1000 };
  const at = await page.evaluate((t) => window.mitoscope.pageFromImage(t.x, t.y), target);
  await page.mouse.move(at.x, at.y);
  await page.keyboard.press('n');
  await page.waitForFunction((n) => window.mitoscope.state().items.length === n + 1, before.items.length, POLL);
  await idle(page);
  const after = await page.evaluate(() => window.mitoscope.state());
  const added = after.items[after.items.length - 1];
  const countText = await page.textContent('#count');

  // Export through the page's own button, as a user would.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
  await download.saveAs(join(out, 'exported.csv'));

  await idle(page);
  await page.waitForTimeout(200);
  await page.screenshot({ path: join(out, 'review.png') });

  await page.goto(pathToFileURL(report).href);
  await page.waitForLoadState('load');
  await page.screenshot({ path: join(out, 'report.png'), fullPage: false });

  const result = { rejected, added, count_text: countText, summary: after.summary, errors, suggested_filename: download.suggestedFilename() };
  writeFileSync(join(out, 'result.json'), JSON.stringify(result, null, 2));
  console.log(JSON.stringify(result));
  if (errors.length) {
    console.error('page errors:', errors);
    process.exitCode = 2;
  }
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
