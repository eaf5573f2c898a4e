// Sign-in with OpenID Connect against a real OpenID provider: `oidc-provider` (a certified
// implementation, from npm) on loopback, configured here with a client for tokendesk and
// accounts that carry groups. tokendesk runs as `tokendesk serve` (auth.mode = "oidc") with the
// Canvas simulator (`tokendesk canvas-sim`) and SQLite; Chromium signs people in through the
// pages. Attacks on the sign-in are tried too: a tampered state, a replayed code, an ID token for
// another audience, an expired one, one issued in the future, a forged signature, a rotated
// signing key, session fixation, and signing out everywhere.
//
//   node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK, SignJWT, decodeJwt, importJWK } from 'jose';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const bin = process.env.TOKENDESK_BIN ? resolve(root, process.env.TOKENDESK_BIN) : join(root, 'target', 'debug', 'tokendesk');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN_TOKEN = 'kAh2Ez6rU24NnHf9Z7N4PEtnwN3rmYRFmrTZ3eW3rxABTJFKXyvTrV2Xcmu6LZR7';
const CLIENT_SECRET = 'a-long-client-secret-for-the-test-provider-0123456789';

// The accounts of the provider (logins of the simulator's default seed) and their groups.
const ACCOUNTS = {
  'sam.student': { groups: ['students'], name: 'Sam Student' },
  'ada.admin': { groups: ['canvas-admins'], name: 'Ada Admin' },
  'theo.teacher': { groups: ['it-helpdesk'], name: 'Theo Teacher' },
};

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

/** Starts a child process; resolves once a line matches `ready`. */
function start(args, ready, env = {}, children = []) {
  // The service reads TOKENDESK_ variables as configuration: none of the test runner's.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TOKENDESK_')));
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, ...env } });
  const out = { proc, stdout: '', logs: '' };
  children.push(out);
  proc.stderr.on('data', (d) => { out.logs += d.toString(); });
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${args[0]} did not start:\n${out.stdout}\n${out.logs}`)), 30000);
    proc.on('exit', (code) => rej(new Error(`${args[0]} exited (${code}):\n${out.stdout}\n${out.logs}`)));
    proc.stdout.on('data', (d) => {
      out.stdout += d.toString();
      const m = out.stdout.match(ready);
      if (m && !out.match) {
        out.match = m;
        clearTimeout(timer);
        res(out);
      }
    });
  });
}

/** A signing key for the provider: the private JWK (with its kid) and the key to re-sign with. */
async function signingKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  return { jwk, key: await importJWK(jwk, 'RS256') };
}

test('sign-in with OpenID Connect, and attacks on it', { timeout: 240000 }, async (t) => {
  assert.ok(existsSync(bin), `build tokendesk first (cargo build -p tokendesk): ${bin} is missing`);
  assert.ok(existsSync(chromiumPath), `Chromium is missing at ${chromiumPath}`);
  const dir = mkdtempSync(join(tmpdir(), 'tokendesk-oidc-'));
  let opServer = null;
  // Cleaned up however the test ends (children and servers would keep node alive).
  const children = [];
  let browser = null;
  t.after(async () => {
    await browser?.close().catch(() => {});
    for (const child of children) child.proc.kill('SIGTERM');
    opServer?.close();
    opServer?.closeAllConnections?.();
    rmSync(dir, { recursive: true, force: true });
  });
  const [opPort, tdPort] = [await freePort(), await freePort()];
  const issuer = `http://127.0.0.1:${opPort}`;
  const B = `http://127.0.0.1:${tdPort}`;

  // ---- the provider ---------------------------------------------------------------------------
  // `tamper`, when set, rewrites the ID token of the next token response (re-signed with the
  // provider's own key unless it says otherwise): how an ID token for another audience, an
  // expired one, or a forged one reaches tokendesk from the real token endpoint.
  let tamper = null;
  let tamperState = false;
  let current = await signingKey('key-1');
  let provider;
  const startProvider = () => {
    provider = new Provider(issuer, {
      clients: [{
        client_id: 'tokendesk',
        client_secret: CLIENT_SECRET,
        redirect_uris: [`${B}/auth/callback`],
        post_logout_redirect_uris: [`${B}/auth/signed-out`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      }],
      jwks: { keys: [current.jwk] },
      cookies: { keys: ['test-cookie-key-0123456789abcdef'] },
      scopes: ['openid', 'profile', 'email', 'groups'],
      claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'], groups: ['groups'] },
      conformIdTokenClaims: false,
      features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
      pkce: { required: () => true },
      async findAccount(_ctx, id) {
        const account = ACCOUNTS[id];
        if (!account) return undefined;
        return {
          accountId: id,
          async claims() {
            return { sub: id, preferred_username: `${id}@example.edu`, name: account.name, email: `${id}@example.edu`, groups: account.groups };
          },
        };
      },
      async loadExistingGrant(ctx) {
        // Consent is implied for tokendesk: no consent page.
        const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
        grant.addOIDCScope('openid profile email groups');
        grant.addOIDCClaims(['preferred_username', 'name', 'email', 'groups']);
        await grant.save();
        return grant;
      },
    });
    provider.proxy = false;
    provider.use(async (ctx, next) => {
      await next();
      const location = ctx.response.get('location');
      if (tamperState && location && location.startsWith(`${B}/auth/callback`)) {
        tamperState = false;
        const url = new URL(location);
        const state = url.searchParams.get('state');
        url.searchParams.set('state', `${state.slice(0, -2)}${state.endsWith('xx') ? 'yy' : 'xx'}`);
        ctx.redirect(url.toString());
      }
      if (ctx.path === '/token' && tamper && ctx.body && ctx.body.id_token) {
        const change = tamper;
        tamper = null;
        ctx.body = { ...ctx.body, id_token: await change(ctx.body.id_token) };
      }
    });
    return new Promise((res) => { opServer = provider.listen(opPort, '127.0.0.1', res); });
  };
  await startProvider();
  const resign = async (jwt, edit) => {
    const claims = { ...decodeJwt(jwt) };
    edit(claims);
    return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: current.jwk.kid, typ: 'JWT' }).sign(current.key);
  };

  // ---- the simulator and tokendesk ------------------------------------------------------------
  const sim = await start(['canvas-sim', '--listen', '127.0.0.1:0'], /canvas-sim listening on (http:\/\/\S+)/, {}, children);
  const config = join(dir, 'tokendesk.toml');
  writeFileSync(config, `
listen = "127.0.0.1:${tdPort}"
public_url = "${B}/"
database_url = "sqlite://${join(dir, 'tokendesk.db')}"

[canvas]
url = "${sim.match[1]}"
admin_token = "${ADMIN_TOKEN}"

[auth]
mode = "oidc"

[auth.oidc]
issuer = "${issuer}"
client_id = "tokendesk"
client_secret = "${CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "groups"]
strip_domain = "@example.edu"

[roles]
approver_groups = ["canvas-admins"]
helpdesk_groups = ["it-helpdesk"]
`);
  const td = await start(['serve', '--config', config], /tokendesk listening on/, { TOKENDESK_LOG: 'info' }, children);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

  const sessionCookie = async (context) => (await context.cookies(B)).find((c) => c.name === 'tokendesk_session');
  const callbacks = [];

  /** Signs `login` in through the pages; resolves with the page (on tokendesk) and its context. */
  async function signIn(login, { context, path = '/me' } = {}) {
    context = context || await browser.newContext();
    const page = await context.newPage();
    page.on('request', (r) => { if (r.url().startsWith(`${B}/auth/callback`)) callbacks.push(r.url()); });
    await page.goto(`${B}${path}`);
    // Not signed in: tokendesk sends the browser to the provider.
    assert.ok(page.url().startsWith(issuer), `expected the provider's page, got ${page.url()}`);
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', 'any password');
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(B), { timeout: 15000 }), page.click('button[type="submit"]')]);
    return { page, context };
  }

  const text = async (page) => page.locator('body').innerText();

  await t.test('a person signs in and lands where they were going', async () => {
    const { page, context } = await signIn('sam.student', { path: '/me' });
    assert.equal(new URL(page.url()).pathname, '/me');
    const body = await text(page);
    assert.match(body, /Signed in as sam\.student/, 'the login claim, with @example.edu stripped');
    assert.match(body, /Roles: requester$/m);
    assert.match(body, /Where I am signed in/);
    assert.match(body, /\(this browser\)/);
    const cookie = await sessionCookie(context);
    assert.ok(cookie.httpOnly, 'the session cookie is HttpOnly');
    assert.equal(cookie.sameSite, 'Lax');
    // The API answers the same session.
    const me = await page.evaluate(async () => (await fetch('/api/v1/me')).json());
    assert.deepEqual(me, { login: 'sam.student', roles: ['requester'] });
    await context.close();
  });

  await t.test('roles come from the groups claim', async () => {
    const { page, context } = await signIn('ada.admin', { path: '/queue' });
    assert.equal(new URL(page.url()).pathname, '/queue');
    assert.match(await text(page), /Roles: requester, approver/);
    const theo = await signIn('theo.teacher', { path: '/people' });
    assert.match(await text(theo.page), /Roles: requester, helpdesk/);
    await theo.context.close();
    await context.close();
  });

  await t.test('a tampered state is refused with a page saying so', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    // The provider's answer reaches tokendesk with its state changed (as a tampering
    // attacker, or a login-CSRF attempt with someone else's answer, would send it).
    tamperState = true;
    await page.goto(`${B}/me`);
    await page.fill('input[name="login"]', 'sam.student');
    await page.fill('input[name="password"]', 'x');
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(`${B}/auth/callback`)), page.click('button[type="submit"]')]);
    await page.waitForLoadState();
    assert.equal(tamperState, false, 'the answer was changed');
    const body = await text(page);
    assert.match(body, /Sign-in did not complete/);
    assert.match(body, /state does not match/);
    assert.match(body, /Sign in again/);
    assert.equal(await sessionCookie(context), undefined, 'no session');
    await context.close();
  });

  await t.test('a replayed code is refused', async () => {
    const used = callbacks.find((u) => u.includes('code='));
    assert.ok(used, 'a callback was seen');
    // The same answer again, in another browser: not its sign-in.
    const context = await browser.newContext();
    const page = await context.newPage();
    const r1 = await page.goto(used);
    assert.equal(r1.status(), 400);
    assert.match(await text(page), /does not belong to a sign-in begun in this browser/);
    // The old code with a fresh, valid state of this browser: the provider refuses the code.
    const start = await page.request.get(`${B}/auth/login`, { maxRedirects: 0 });
    const location = new URL(start.headers().location);
    const state = location.searchParams.get('state');
    const code = new URL(used).searchParams.get('code');
    const r2 = await page.goto(`${B}/auth/callback?code=${encodeURIComponent(code)}&state=${encodeURIComponent(state)}`);
    assert.equal(r2.status(), 401);
    assert.match(await text(page), /did not accept this answer's code/);
    assert.equal(await sessionCookie(context), undefined);
    await context.close();
  });

  const refusedWith = async (edit, pattern, resignIt = true) => {
    tamper = resignIt ? (jwt) => resign(jwt, edit) : edit;
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${B}/me`);
    await page.fill('input[name="login"]', 'sam.student');
    await page.fill('input[name="password"]', 'x');
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(`${B}/auth/callback`)), page.click('button[type="submit"]')]);
    await page.waitForLoadState();
    const body = await text(page);
    assert.match(body, /Sign-in did not complete/);
    assert.match(body, pattern);
    assert.equal(await sessionCookie(context), undefined, 'no session');
    await context.close();
    assert.equal(tamper, null, 'the token response was rewritten');
  };

  await t.test('an ID token for another audience is refused', async () => {
    await refusedWith((c) => { c.aud = 'another-app'; }, /meant for another application/);
  });

  await t.test('an expired ID token is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    await refusedWith((c) => { c.iat = now - 7200; c.exp = now - 3600; }, /had expired/);
  });

  await t.test('an ID token issued in the future (clock skew) is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    await refusedWith((c) => { c.iat = now + 3600; c.exp = now + 7200; }, /clocks of tokendesk and the sign-in service may differ/);
  });

  await t.test('an ID token with a forged payload is refused', async () => {
    await refusedWith((jwt) => {
      const [h, p, s] = jwt.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      claims.preferred_username = 'ada.admin@example.edu';
      return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    }, /signature could not be verified/, false);
  });

  await t.test('a rotated signing key: tokendesk fetches the new key set once', async () => {
    // The provider restarts with a new key; tokendesk still holds the old key set.
    await new Promise((res) => { opServer.close(res); opServer.closeAllConnections(); });
    current = await signingKey('key-2');
    await startProvider();
    const { page, context } = await signIn('sam.student', { path: '/me' });
    assert.match(await text(page), /Signed in as sam\.student/);
    assert.match(td.logs, /fetched the OpenID provider's keys again/);
    await context.close();
  });

  await t.test('session fixation: the id before sign-in is not the id after', async () => {
    const context = await browser.newContext();
    await context.addCookies([{ name: 'tokendesk_session', value: 'attacker-chosen-session-id', url: B }]);
    const { page } = await signIn('sam.student', { context, path: '/me' });
    const after = await sessionCookie(context);
    assert.notEqual(after.value, 'attacker-chosen-session-id');
    assert.ok(after.value.length >= 43, 'a 256-bit random id');
    // A second sign-in in the same browser gets yet another id.
    await page.goto(`${B}/auth/login?next=/me`);
    await page.waitForURL((u) => u.toString().startsWith(B) && !u.toString().includes('/auth/'), { timeout: 15000 }).catch(() => {});
    if (page.url().startsWith(issuer)) {
      await page.fill('input[name="login"]', 'sam.student');
      await page.fill('input[name="password"]', 'x');
      await Promise.all([page.waitForURL((u) => u.toString().startsWith(B)), page.click('button[type="submit"]')]);
    }
    const again = await sessionCookie(context);
    assert.notEqual(again.value, after.value, 'a fresh id at every sign-in');
    // The attacker's value signs nobody in.
    const other = await browser.newContext();
    await other.addCookies([{ name: 'tokendesk_session', value: 'attacker-chosen-session-id', url: B }]);
    const r = await other.request.get(`${B}/api/v1/me`);
    assert.equal(r.status(), 401);
    await other.close();
    await context.close();
  });

  await t.test('sign-out ends the session and goes through the provider', async () => {
    const { page, context } = await signIn('sam.student', { path: '/me' });
    const before = await sessionCookie(context);
    await page.click('header form[action="/auth/logout"] button');
    // The provider asks to confirm its own sign-out, then returns to tokendesk.
    await page.waitForURL((u) => u.toString().startsWith(issuer), { timeout: 15000 }).catch(() => {
      throw new Error(`after Sign out: ${page.url()}\n${td.logs.slice(-3000)}`);
    });
    await Promise.all([page.waitForURL(`${B}/auth/signed-out`, { timeout: 15000 }), page.click('button[name="logout"], button[type="submit"]')]);
    assert.match(await text(page), /You are signed out/);
    // The old cookie is dead even if replayed.
    const other = await browser.newContext();
    await other.addCookies([{ name: 'tokendesk_session', value: before.value, url: B }]);
    assert.equal((await other.request.get(`${B}/api/v1/me`)).status(), 401);
    await other.close();
    await context.close();
  });

  await t.test('the help desk signs a person out everywhere', async () => {
    const one = await signIn('sam.student', { path: '/me' });
    const two = await signIn('sam.student', { path: '/me' });
    assert.equal((await one.page.request.get(`${B}/api/v1/me`)).status(), 200);
    const theo = await signIn('theo.teacher', { path: '/people/sam.student' });
    assert.match(await text(theo.page), /live session/);
    await Promise.all([theo.page.waitForURL(`${B}/people/sam.student`), theo.page.click('button:has-text("End all sessions")')]);
    assert.match(await text(theo.page), /Ended \d+ session\(s\) of sam\.student/);
    for (const s of [one, two]) {
      assert.equal((await s.page.request.get(`${B}/api/v1/me`)).status(), 401, 'signed out everywhere');
      await s.page.goto(`${B}/me`);
      assert.ok(s.page.url().startsWith(issuer) || s.page.url().startsWith(`${B}/me`), 'sent to sign in again');
      await s.context.close();
    }
    await theo.context.close();
  });
});
