// Login through a real OpenID Connect provider (npm's oidc-provider, tests/e2e/oidc-provider.mjs)
// in Debian's Chromium: the hub's login page offers "Sign in with …", the provider's form and
// consent follow, and the browser lands on the hub logged in. Checked through the REST API:
// the user exists, is in the claim's group (manage_groups), is admin (admin_groups) and her
// auth_state holds the provider's tokens. A forged state and a provider's refusal are pages
// that say so. Then the refresh of a login (auth_refresh_age, refresh_pre_spawn) with the
// provider's refresh tokens, and its end when the provider revokes them.
//
// Then the whole way to JupyterLab: the provider's user (the system account E2E_USER) gets
// a real jupyterhub-singleuser, whose environment carries the provider's access token
// (auth_state_env).
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub), SINGLEUSER_VENVS (the first
// venv with jupyterhub + jupyterlab is used), E2E_USER (default jh-e2e). Local set-up only
// (E2E_SPAWNER unset or "local").
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, until, launchBrowser } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const SPAWNER = process.env.E2E_SPAWNER || "local";
const VENV = (process.env.SINGLEUSER_VENVS || "").split(",").filter(Boolean)[0];
const USER = process.env.E2E_USER || "jh-e2e";
const HERE = dirname(fileURLToPath(import.meta.url));
const ADMIN_TOKEN = "oidc-test-admin-token-0123456789";
// 32 bytes, hex: the key auth_state is encrypted with.
const SERVICE_TOKEN = "oidc-test-service-token-0123456789";
const CRYPT_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

async function startProvider(callback, accessTtl) {
  const port = await freePort();
  const child = spawn(process.execPath, [join(HERE, "oidc-provider.mjs"), String(port), callback], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, OIDC_ACCESS_TTL: String(accessTtl || 3600) },
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const issuer = `http://127.0.0.1:${port}`;
  await until("the provider", () => out.includes("ready"));
  return { issuer, child };
}

// `authenticator`: extra [Authenticator] lines; `accessTtl`: the provider's access token
// lifetime in seconds; `spawner`: a [Spawner] section.
async function startHub({ authenticator = "", accessTtl, spawner = "" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "jh-oidc-"));
  const port = await freePort();
  const hubPort = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const provider = await startProvider(`${url}/hub/oauth_callback`, accessTtl);
  const config = join(dir, "jupyterhub.toml");
  writeFileSync(config, `
[JupyterHub]
ip = "127.0.0.1"
port = ${port}
hub_bind_url = "http://127.0.0.1:${hubPort}"
db_url = "sqlite:///${join(dir, "jupyterhub.sqlite")}"
cookie_secret_file = "${join(dir, "cookie_secret")}"
authenticator_class = "oidc"
spawner_class = "local"

[JupyterHub.api_tokens]
"${ADMIN_TOKEN}" = "admin"

# An admin service reads users: a user without a provider login (admin's config token) has
# no auth_state to refresh, and counts as logged out once a refresh is due (as upstream).
[[JupyterHub.services]]
name = "reader"
api_token = "${SERVICE_TOKEN}"
admin = true

[Authenticator]
admin_users = ["admin"]
enable_auth_state = true
${authenticator}
${spawner}

[GenericOAuthenticator]
oidc_issuer = "${provider.issuer}"
client_id = "jupyterhub"
client_secret = "jupyterhub-client-secret-0123456789"
oauth_callback_url = "${url}/hub/oauth_callback"
scope = ["openid", "profile"]
username_claim = "preferred_username"
login_service = "Test IdP"
auth_state_groups_key = "groups"
allowed_groups = ["staff"]
admin_groups = ["staff"]
manage_groups = true
`);
  const log = openSync(join(dir, "hub.log"), "a");
  const child = spawn(BIN, ["-f", config], {
    cwd: dir,
    stdio: ["ignore", log, log],
    env: { ...process.env, JUPYTERHUB_CRYPT_KEY: CRYPT_KEY },
  });
  await until("the hub", async () => (await fetch(`${url}/hub/api/`)).ok, 30000);
  return { url, child, provider, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

async function api(hub, path, { method = "GET", token = SERVICE_TOKEN, status = 200 } = {}) {
  const r = await fetch(`${hub.url}/hub/api${path}`, { method, headers: { Authorization: `token ${token}` } });
  const text = await r.text();
  assert.equal(r.status, status, `${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// Log `name` in through the provider's devInteractions form (and consent) in `page`.
async function providerLogin(hub, page, name, next = "/hub/token") {
  await page.goto(`${hub.url}/hub/login?next=${encodeURIComponent(next)}`);
  await page.locator("#oauth_login").click();
  // The login form, unless the provider still has a session for this browser; then consent,
  // unless already given: whatever it asks, until the browser is back at the hub.
  for (let step = 0; step < 4; step++) {
    await page.waitForURL((u) => u.href.startsWith(hub.url) || u.href.includes("/interaction/"));
    if (page.url().startsWith(hub.url)) break;
    if (await page.locator("input[name=login]").count()) {
      await page.fill("input[name=login]", name);
      await page.fill("input[name=password]", "anything");
    }
    const before = page.url();
    await page.click("button[type=submit]");
    await page.waitForURL((u) => u.href !== before);
  }
  await page.waitForURL(`${hub.url}${next}`);
}

// Revoke a refresh token at the provider, as an administrator there would.
async function revoke(hub, token) {
  const basic = Buffer.from("jupyterhub:jupyterhub-client-secret-0123456789").toString("base64");
  const r = await fetch(`${hub.provider.issuer}/token/revocation`, {
    method: "POST",
    headers: { Authorization: `Basic ${basic}`, "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token, token_type_hint: "refresh_token" }),
  });
  assert.equal(r.status, 200, `revocation: ${r.status} ${await r.text()}`);
}

// A hub with its provider, and a browser page; all stopped when the test `t` ends.
async function setUp(t, options) {
  const hub = await startHub(options);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
    hub.provider.child.kill("SIGTERM");
  });
  const page = await (await browser.newContext()).newPage();
  return { hub, page };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (SPAWNER === "local") test("login through an OpenID Connect provider", { timeout: 120000 }, async (t) => {
  const { hub, page } = await setUp(t);
  try {
    await page.goto(`${hub.url}/hub/login`);
    assert.equal((await page.locator("#oauth_login").textContent()).trim(), "Sign in with Test IdP");
    await providerLogin(hub, page, "alice");

    const alice = await api(hub, "/users/alice");
    assert.equal(alice.admin, true, "admin through admin_groups");
    assert.deepEqual(alice.groups, ["staff"], "groups from the claim");
    const state = alice.auth_state;
    assert.ok(state, `auth_state is returned: ${JSON.stringify(alice)}`);
    assert.ok(state.access_token.length > 10, JSON.stringify(state));
    assert.ok(state.id_token.split(".").length === 3, "the ID token is kept");
    assert.equal(state.oauth_user.preferred_username, "alice");
    assert.deepEqual(state.oauth_user.groups, ["staff"]);
    const group = await api(hub, "/groups/staff");
    assert.deepEqual(group.users, ["alice"]);

    // A callback whose state is not this browser's, and a provider's refusal.
    await page.context().clearCookies();
    const forged = await page.goto(`${hub.url}/hub/oauth_callback?code=abc&state=forged`);
    assert.equal(forged.status(), 400);
    assert.match(await page.textContent("body"), /OAuth state missing or mismatched/);
    const denied = await page.goto(`${hub.url}/hub/oauth_callback?error=access_denied&error_description=no+thanks`);
    assert.equal(denied.status(), 403);
    assert.match(await page.textContent("body"), /refused the login: access_denied no thanks/);
  } catch (e) {
    console.log(hub.log());
    throw e;
  }
});

// auth_refresh_age: once the login is older, the next request asks the provider again; an
// expired access token is renewed with the refresh token; a revoked refresh token (with the
// access token expired) logs the person out.
if (SPAWNER === "local") test("an identity provider login is refreshed, and ends when revoked", { timeout: 120000 }, async (t) => {
  const { hub, page } = await setUp(t, { authenticator: "auth_refresh_age = 1", accessTtl: 2 });
  try {
    await providerLogin(hub, page, "bob");
    const first = (await api(hub, "/users/bob")).auth_state;
    assert.ok(first.refresh_token, `a refresh token is kept: ${JSON.stringify(first)}`);
    // The access token expires (2 s); the next page view is older than auth_refresh_age.
    await sleep(3000);
    const home = await page.goto(`${hub.url}/hub/home`);
    assert.equal(home.status(), 200);
    assert.equal(new URL(page.url()).pathname, "/hub/home", "still logged in after the refresh");
    const second = (await api(hub, "/users/bob")).auth_state;
    assert.notEqual(second.access_token, first.access_token, "a new access token");
    assert.ok(second.refresh_token, JSON.stringify(second));
    assert.match(hub.log(), /refreshed the identity provider's login/);

    // Revoked at the provider: once the access token has expired too, bob is logged out.
    await revoke(hub, second.refresh_token);
    await sleep(3000);
    await page.goto(`${hub.url}/hub/home`);
    assert.equal(new URL(page.url()).pathname, "/hub/login", `sent to log in again: ${page.url()}`);
    assert.match(hub.log(), /stale auth info/);
    // Logging in again works and refreshes as before.
    await providerLogin(hub, page, "bob", "/hub/home");
    const third = (await api(hub, "/users/bob")).auth_state;
    assert.notEqual(third.access_token, second.access_token);
  } catch (e) {
    console.log(hub.log());
    throw e;
  }
});

// refresh_pre_spawn: the login is checked before a spawn even when auth_refresh_age has not
// passed; a spawn on a login the provider no longer honours is refused with upstream's 403.
if (SPAWNER === "local") test("refresh_pre_spawn refuses a spawn on an expired login", { timeout: 120000 }, async (t) => {
  const { hub, page } = await setUp(t, {
    authenticator: "auth_refresh_age = 3600\nrefresh_pre_spawn = true",
    accessTtl: 2,
    spawner: `[Spawner]\ncmd = ["/bin/false"]`,
  });
  try {
    await providerLogin(hub, page, "carol");
    const { token } = await api(hub, "/users/carol/tokens", { method: "POST", status: 201 });
    // A valid login: the spawn is let through (and then fails: the command is /bin/false).
    const ok = await fetch(`${hub.url}/hub/api/users/carol/server`, { method: "POST", headers: { Authorization: `token ${token}` } });
    assert.notEqual(ok.status, 403, await ok.text());
    assert.match(hub.log(), /refreshed the identity provider's login/);
    await until("the failed spawn to end", async () => {
      const carol = await api(hub, "/users/carol");
      return !carol.servers[""] || !carol.servers[""].pending;
    });
    await revoke(hub, (await api(hub, "/users/carol")).auth_state.refresh_token);
    await sleep(3000);
    // Requests still pass (the login is younger than auth_refresh_age); the spawn does not.
    await api(hub, "/user", { token });
    const refused = await fetch(`${hub.url}/hub/api/users/carol/server`, { method: "POST", headers: { Authorization: `token ${token}` } });
    assert.equal(refused.status, 403);
    assert.match((await refused.json()).message, /auth has expired for carol, login again/);
  } catch (e) {
    console.log(hub.log());
    throw e;
  }
});

// The provider's login to JupyterLab: the spawn after the login, the real single-user
// server's own OAuth with the hub, and the provider's access token in the server's
// environment (auth_state_env), read back in a notebook-free way: the server's process.
if (SPAWNER === "local") test("from the provider's login to JupyterLab", { timeout: 400000 }, async (t) => {
  assert.ok(VENV, "SINGLEUSER_VENVS must name a venv with jupyterhub and jupyterlab");
  const { hub, page } = await setUp(t, {
    spawner: `[Spawner]\ncmd = ["${VENV}/bin/jupyterhub-singleuser"]\ndefault_url = "/lab"\n` +
      `start_timeout = 120\nhttp_timeout = 120\nauth_state_env = { IDP_ACCESS = "access_token" }`,
  });
  try {
    await providerLogin(hub, page, USER, "/hub/home");
    await page.goto(`${hub.url}/hub/spawn`);
    await page.waitForURL(new RegExp(`/user/${USER}/lab`), { timeout: 180000 });
    await page.waitForSelector("#jp-main-dock-panel", { timeout: 180000 });
    const model = await api(hub, `/users/${USER}`);
    assert.equal(model.servers[""].ready, true, JSON.stringify(model));
    const environ = readFileSync(`/proc/${model.servers[""].state.pid}/environ`, "utf8").split("\0");
    assert.ok(environ.includes(`IDP_ACCESS=${model.auth_state.access_token}`), "the provider's access token reaches the server");
    const stop = await fetch(`${hub.url}/hub/api/users/${USER}/server`, {
      method: "DELETE",
      headers: { Authorization: `token ${SERVICE_TOKEN}` },
    });
    assert.ok([202, 204].includes(stop.status), `stop: ${stop.status}`);
  } catch (e) {
    console.log(hub.log());
    throw e;
  }
});
