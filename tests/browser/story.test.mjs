// tokendesk's pages in a real Chromium: the whole story through the pages only, with axe-core
// (WCAG 2.1 A/AA) run on every page, and screenshots for review in test-artifacts/screenshots/.
//
// Runs `tokendesk demo` (built beforehand: cargo build -p tokendesk) on loopback port 0 with its
// Canvas simulator, and Debian's Chromium (/usr/bin/chromium, or $CHROMIUM).
//
//   node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const bin = process.env.TOKENDESK_BIN ? resolve(root, process.env.TOKENDESK_BIN) : join(root, 'target', 'debug', 'tokendesk');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const shots = join(root, 'test-artifacts', 'screenshots');
const WCAG = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];

/** Starts `tokendesk demo`; resolves with its addresses once it has printed them. */
function startDemo() {
  const dir = mkdtempSync(join(tmpdir(), 'tokendesk-browser-'));
  const proc = spawn(bin, ['demo', '--dir', dir, '--listen', '127.0.0.1:0', '--canvas-listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TOKENDESK_LOG: process.env.TOKENDESK_LOG || 'info' },
  });
  const demo = { proc, dir, stdout: '', logs: '' };
  proc.stderr.on('data', (d) => { demo.logs += d.toString(); });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`tokendesk demo did not start:\n${demo.stdout}\n${demo.logs}`)), 30000);
    proc.on('exit', (code) => reject(new Error(`tokendesk demo exited (${code}):\n${demo.stdout}\n${demo.logs}`)));
    proc.stdout.on('data', (d) => {
      demo.stdout += d.toString();
      const base = demo.stdout.match(/tokendesk demo running at (http:\/\/[^/\s]+)\//);
      const canvas = demo.stdout.match(/Canvas simulator:\s+(http:\/\/[^/\s]+)\/login/);
      if (base && canvas && !demo.base) {
        demo.base = base[1];
        demo.canvas = canvas[1];
        clearTimeout(timer);
        resolvePromise(demo);
      }
    });
  });
}

test('the story through the pages, accessible on every page', { timeout: 180000 }, async (t) => {
  assert.ok(existsSync(bin), `build tokendesk first (cargo build -p tokendesk): ${bin} is missing`);
  assert.ok(existsSync(chromiumPath), `Chromium is missing at ${chromiumPath} (apt-get install chromium)`);
  mkdirSync(shots, { recursive: true });
  const demo = await startDemo();
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(async () => {
    await browser.close().catch(() => {});
    demo.proc.kill('SIGTERM');
    rmSync(demo.dir, { recursive: true, force: true });
  });

  const B = demo.base;
  const axeResults = [];
  const cspViolations = [];
  const externalRequests = [];
  const sent = []; // every request the browser sent to tokendesk: URL and body

  async function person(login, options = {}) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
    context.on('request', (r) => {
      const url = r.url();
      if (url.startsWith(B)) {
        sent.push({ url, body: r.postData() || '' });
      } else if (!url.startsWith(demo.canvas) && !url.startsWith('data:')) {
        externalRequests.push(url);
      }
    });
    const page = await context.newPage();
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) { cspViolations.push(`${page.url()}: ${m.text()}`); }
    });
    if (login) {
      await page.goto(`${B}/demo/login`);
      await page.getByRole('button', { name: new RegExp(`\\(${login.replace('.', '\\.')}\\)`) }).click();
      await page.waitForURL(`${B}/`);
    }
    return { context, page };
  }

  /** axe-core on the current page (zero WCAG 2.1 A/AA violations), then a screenshot. */
  async function check(page, name, { shot = true } = {}) {
    await page.evaluate(axeSource);
    const result = await page.evaluate(async (tags) => {
      // eslint-disable-next-line no-undef
      const r = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
    }, WCAG);
    axeResults.push({ name, path: new URL(page.url()).pathname, violations: result.length });
    if (shot) { await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true }); }
    assert.deepEqual(result, [], `axe violations on ${name} (${page.url()})`);
  }

  async function flash(page) {
    return (await page.locator('.flash').textContent()).trim();
  }

  // ---- the demo's sign-in page, in the site's layout ------------------------------------------
  const newcomer = await person(null);
  await newcomer.page.goto(`${B}/demo/login`);
  assert.match(await newcomer.page.locator('h1').textContent(), /Sign in to the tokendesk demo/);
  assert.equal(await newcomer.page.locator('a.skip').count(), 1, 'the shared layout');
  await check(newcomer.page, 'demo-sign-in');
  await newcomer.context.close();

  // ---- the requester asks, first with mistakes -----------------------------------------------
  const sam = await person('sam.student');
  await check(sam.page, 'home');
  await sam.page.getByRole('link', { name: 'Request a token' }).first().click();
  await sam.page.waitForURL(`${B}/requests/new`);
  await check(sam.page, 'request-form');
  const expiry = sam.page.getByLabel('Expiry date');
  assert.equal(await expiry.getAttribute('type'), 'date');
  const minDate = await expiry.getAttribute('min');
  const maxDate = await expiry.getAttribute('max');
  assert.match(minDate, /^\d{4}-\d{2}-\d{2}$/);
  assert.ok(maxDate > minDate);

  await sam.page.getByLabel('Purpose').fill('scripts');
  await sam.page.getByLabel('Application').fill('grader.py');
  await sam.page.getByRole('button', { name: 'Submit request' }).click();
  await sam.page.waitForLoadState();
  const purpose = sam.page.getByLabel('Purpose');
  assert.equal(await purpose.inputValue(), 'scripts', 'the entered purpose is kept');
  assert.equal(await sam.page.getByLabel('Application').inputValue(), 'grader.py', 'the application is kept');
  assert.equal(await purpose.getAttribute('aria-invalid'), 'true');
  assert.match(await purpose.getAttribute('aria-describedby'), /purpose-error/);
  assert.match(await sam.page.locator('#purpose-error').textContent(), /at least 20 characters/);
  assert.match(await sam.page.locator('#expires_on-error').textContent(), /required/);
  assert.match(await sam.page.locator('#ack-error').textContent(), /terms/);
  await check(sam.page, 'request-form-errors');

  const wanted = new Date(`${minDate}T00:00:00Z`);
  wanted.setUTCDate(wanted.getUTCDate() + 29);
  const expiresOn = wanted.toISOString().slice(0, 10);
  await purpose.fill('Grading scripts for my course sections');
  await sam.page.getByLabel('Expiry date').fill(expiresOn);
  await sam.page.getByRole('checkbox').check();
  await sam.page.getByRole('button', { name: 'Submit request' }).click();
  await sam.page.waitForURL(/\/requests\/\d+$/);
  const requestPath = new URL(sam.page.url()).pathname;
  assert.match(await flash(sam.page), /sent to the approvers/);
  await check(sam.page, 'request-submitted');
  await sam.page.goto(`${B}/me`);
  assert.match(await sam.page.locator('main').textContent(), /submitted/);
  await check(sam.page, 'me-submitted');

  // ---- the approver approves ------------------------------------------------------------------
  const ada = await person('ada.admin');
  await ada.page.goto(`${B}/queue`);
  await check(ada.page, 'queue');
  await ada.page.getByRole('link', { name: `#${requestPath.split('/').pop()}` }).click();
  await ada.page.waitForURL(`${B}${requestPath}`);
  assert.match(await ada.page.locator('main').textContent(), /History of sam\.student/);
  await check(ada.page, 'request-approver');
  await ada.page.getByRole('button', { name: 'Approve' }).click();
  await ada.page.waitForURL(`${B}${requestPath}`);
  assert.match(await flash(ada.page), /approved/);
  await check(ada.page, 'request-approved', { shot: false });

  // ---- the requester opens the link from the mailbox --------------------------------------------
  let link = null;
  for (let i = 0; i < 40 && !link; i++) {
    await sam.page.goto(`${B}/mailbox`);
    const anchor = sam.page.locator('a[href^="/e/"]').first();
    if (await anchor.count()) { link = await anchor.getAttribute('href'); } else { await sam.page.waitForTimeout(500); }
  }
  assert.ok(link, 'the delivery email reaches the mailbox');
  await check(sam.page, 'mailbox');
  const [envelopePath, key] = link.split('#');
  assert.match(key, /^[A-Za-z0-9_-]{43}$/);

  await sam.page.goto(`${B}/me`);
  assert.match(await sam.page.locator('main').textContent(), /expires in 6 days 23 hours|expires in 7 days 0 hours/);
  await check(sam.page, 'me-issued');

  // Signed out, the link sends you to sign in and back, keeping the key in the tab.
  const visitor = await person(null);
  await visitor.page.goto(`${B}${link}`);
  await visitor.page.waitForURL(/\/demo\/login/);
  await visitor.page.getByRole('button', { name: /\(sam\.student\)/ }).click();
  await visitor.page.waitForURL((u) => u.pathname === envelopePath);
  assert.equal(await visitor.page.evaluate(() => window.location.hash), `#${key}`, 'the key is back in the address bar');
  assert.equal(await visitor.page.getByRole('button', { name: 'Reveal' }).isEnabled(), true);
  await visitor.context.close();

  // Another person: not found.
  const stella = await person('stella.student');
  const other = await stella.page.goto(`${B}${link}`);
  assert.equal(other.status(), 404);
  assert.match(await stella.page.locator('h1').textContent(), /Not found/);
  await check(stella.page, 'envelope-other-person-404');

  await sam.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: B });
  // The requester clicks the link in the email.
  await sam.page.goto(`${B}/mailbox`);
  await sam.page.locator(`a[href="${link}"]`).first().click();
  await sam.page.waitForURL((u) => u.pathname === envelopePath);
  const response = await sam.page.reload();
  assert.equal(response.headers()['cache-control'], 'no-store');
  assert.match(response.headers()['content-security-policy'], /script-src 'self'/);
  assert.doesNotMatch(response.headers()['content-security-policy'], /unsafe-inline/);
  assert.equal(response.headers()['referrer-policy'], 'no-referrer');
  assert.match(await sam.page.locator('main').textContent(), /sam\.student/);
  await check(sam.page, 'envelope-sealed');
  await sam.page.getByRole('button', { name: 'Reveal' }).click();
  const valueField = sam.page.getByLabel('Access token');
  await valueField.waitFor({ state: 'visible' });
  const token = await valueField.inputValue();
  assert.match(token, /\S{20,}/, 'the decrypted token is shown');
  await sam.page.getByRole('button', { name: 'Copy' }).click();
  await sam.page.getByText('Copied.').waitFor();
  assert.equal(await sam.page.evaluate(() => navigator.clipboard.readText()), token);
  const settingsLink = await sam.page.getByRole('link', { name: /Canvas profile settings/ }).getAttribute('href');
  assert.equal(settingsLink, `${demo.canvas}/profile/settings`);
  await check(sam.page, 'envelope-revealed');

  // Canvas refuses it until it is activated, on the simulator's settings page.
  const canvasSelf = () => fetch(`${demo.canvas}/api/v1/users/self`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal((await canvasSelf()).status, 401, 'a pending token is refused');
  const canvasTab = await sam.context.newPage();
  await canvasTab.goto(`${demo.canvas}/login?as=sam.student`);
  await canvasTab.goto(`${demo.canvas}/profile/settings`);
  await canvasTab.getByRole('button', { name: /^Activate/ }).first().click();
  await canvasTab.waitForLoadState();
  assert.equal((await canvasSelf()).status, 200, 'the activated token works in Canvas');
  await canvasTab.close();

  await sam.page.getByRole('button', { name: 'I have saved it' }).click();
  await sam.page.waitForURL(`${B}${envelopePath}`);
  assert.match(await sam.page.locator('main').textContent(), /this link is closed/);
  await check(sam.page, 'envelope-burned');

  // ---- after delivery: "I have activated it", the token's page, the calendar ----------------
  await sam.page.goto(`${B}/me`);
  await sam.page.getByRole('button', { name: /^I have activated it/ }).click();
  await sam.page.waitForURL(`${B}/me`);
  assert.match(await flash(sam.page), /active in Canvas/);
  await sam.page.getByRole('link', { name: /^Token \d+$/ }).first().click();
  await sam.page.waitForURL(/\/tokens\/\d+$/);
  assert.match(await sam.page.locator('main').textContent(), /Expires[\s\S]*\(ends /);
  await check(sam.page, 'token');
  await sam.page.goto(`${B}/me`);
  await sam.page.getByRole('button', { name: 'Make a calendar address' }).click();
  await sam.page.waitForURL(`${B}/me#calendar`);
  const feedUrl = await sam.page.getByLabel('Your calendar address').inputValue();
  const feed = await sam.page.request.get(feedUrl);
  assert.equal(feed.status(), 200);
  assert.match(feed.headers()['content-type'], /^text\/calendar/);
  assert.match(await feed.text(), /BEGIN:VEVENT/);
  await check(sam.page, 'me-calendar');
  await ada.page.goto(`${B}/orphans`);
  await check(ada.page, 'orphans');

  // ---- a deny ---------------------------------------------------------------------------------
  await stella.page.goto(`${B}/requests/new`);
  await stella.page.getByLabel('Purpose').fill('Export my gradebook every night to a spreadsheet');
  await stella.page.getByLabel('Expiry date').fill(expiresOn);
  await stella.page.getByRole('checkbox').check();
  await stella.page.getByRole('button', { name: 'Submit request' }).click();
  await stella.page.waitForURL(/\/requests\/\d+$/);
  const stellaPath = new URL(stella.page.url()).pathname;
  await ada.page.goto(`${B}${stellaPath}`);
  await ada.page.getByLabel('Reason for denial').fill('Use the gradebook export in Canvas instead.');
  await ada.page.getByRole('button', { name: 'Deny' }).click();
  await ada.page.waitForURL(`${B}${stellaPath}`);
  assert.match(await flash(ada.page), /denied/);
  await stella.page.goto(`${B}${stellaPath}`);
  assert.match(await stella.page.locator('main').textContent(), /denied[\s\S]*Use the gradebook export/);
  await check(stella.page, 'request-denied');

  // ---- the help desk revokes -------------------------------------------------------------------
  const theo = await person('theo.teacher');
  await theo.page.goto(`${B}/people`);
  await theo.page.getByLabel('Login or name').fill('sam');
  await theo.page.getByRole('button', { name: 'Search' }).click();
  await theo.page.waitForURL(/\/people\?q=sam/);
  await check(theo.page, 'people-search');
  await theo.page.getByRole('link', { name: 'sam.student' }).click();
  await theo.page.waitForURL(`${B}/people/sam.student`);
  await check(theo.page, 'person');
  await theo.page.getByLabel(/Reason for revoking token/).fill('Laptop stolen');
  await theo.page.getByRole('button', { name: 'Revoke', exact: true }).click();
  await theo.page.waitForURL(`${B}/people/sam.student`);
  assert.match(await flash(theo.page), /revoked/);
  await check(theo.page, 'person-revoked', { shot: false });
  assert.equal((await canvasSelf()).status, 401, 'Canvas refuses the revoked token');

  // ---- incidents: a leak report, a bulk revocation's preview ------------------------------------
  await sam.page.goto(`${B}/report`);
  await check(sam.page, 'report');
  await sam.page.getByLabel('The token, or its hint').fill('zzzzz');
  await sam.page.getByLabel('Where you found it').fill('a public gist');
  await sam.page.getByRole('button', { name: 'Report and revoke' }).click();
  await sam.page.waitForURL(`${B}/report`);
  assert.match(await flash(sam.page), /Not a token issued here/);
  await theo.page.goto(`${B}/revocations?owner=stella.student`);
  assert.match(await theo.page.locator('main').textContent(), /Preview: every token of stella\.student/);
  await check(theo.page, 'revocations-preview');

  // ---- the auditor ------------------------------------------------------------------------------
  await ada.page.goto(`${B}/audit`);
  assert.match(await ada.page.locator('main').textContent(), /token\.revoke/);
  await check(ada.page, 'audit');
  await ada.page.getByLabel('Action').fill('request.deny');
  await ada.page.getByRole('button', { name: 'Filter' }).click();
  await ada.page.waitForURL(/action=request\.deny/);
  const csvHref = await ada.page.getByRole('link', { name: 'CSV' }).getAttribute('href');
  const csv = await ada.page.request.get(`${B}${csvHref}`);
  assert.equal(csv.status(), 200);
  const csvLines = (await csv.text()).trim().split('\r\n');
  assert.equal(csvLines.length, 2, 'the export follows the filters');
  const jsonl = await ada.page.request.get(`${B}/audit/export.jsonl`);
  const events = (await jsonl.text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(events.some((e) => e.action === 'envelope.burn'));

  // ---- reports: charts drawn on the server as inline SVG, their tables and CSV files ----------
  await ada.page.getByRole('link', { name: 'Reports' }).click();
  await ada.page.waitForURL(`${B}/reports`);
  assert.match(await ada.page.locator('main').textContent(), /Requests per week, by outcome/);
  assert.ok(await ada.page.getByRole('img', { name: 'Requests per week, by outcome' }).isVisible(), 'the chart is an image with a name');
  await check(ada.page, 'reports');
  const reportCsv = await ada.page.request.get(`${B}/reports/requests-per-week.csv`);
  assert.equal(reportCsv.status(), 200);
  assert.match(await reportCsv.text(), /^Week starting,submitted,approved,/);

  // ---- refusals as pages ----------------------------------------------------------------------
  const forbidden = await sam.page.goto(`${B}/queue`);
  assert.equal(forbidden.status(), 403);
  await check(sam.page, 'queue-forbidden-403');
  const missing = await sam.page.goto(`${B}/requests/999999`);
  assert.equal(missing.status(), 404);
  await check(sam.page, 'request-missing-404', { shot: false });

  // A phone-sized look at two pages.
  const phone = await person('sam.student', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.page.goto(`${B}/me`);
  await check(phone.page, 'phone-me');
  await phone.page.goto(`${B}/requests/new`);
  await check(phone.page, 'phone-request-form');

  // ---- what must not happen -------------------------------------------------------------------
  for (const r of sent) {
    assert.ok(!r.url.includes(key) && !r.body.includes(key), `the key was sent to the server: ${r.url}`);
    assert.ok(!r.url.includes(token) && !r.body.includes(token), `the token was sent to the server: ${r.url}`);
  }
  assert.ok(sent.some((r) => r.url === `${B}/api/v1/envelopes/${envelopePath.split('/').pop()}/reveal`), 'the reveal went through the API');
  assert.ok(demo.logs.includes(envelopePath), 'the server logged the delivery page requests');
  assert.ok(!demo.logs.includes(key), 'the key never reached the server log');
  assert.ok(!demo.logs.includes(token), 'the token never reached the server log');
  assert.deepEqual(externalRequests, [], 'nothing is fetched from elsewhere');
  assert.deepEqual(cspViolations, [], 'no Content-Security-Policy violations');

  console.log('axe-core (WCAG 2.1 A/AA) per page:');
  for (const r of axeResults) { console.log(`  ${r.violations === 0 ? 'ok  ' : 'FAIL'} ${r.name.padEnd(28)} ${r.path}  violations: ${r.violations}`); }
});
