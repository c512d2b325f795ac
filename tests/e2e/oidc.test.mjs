// Login through a real OpenID Connect provider (npm's oidc-provider, tests/e2e/oidc-provider.mjs)
// in Debian's Chromium: the hub's login page offers "Sign in with …", the provider's form and
// consent follow, and the browser lands on the hub logged in. Checked through the REST API:
// the user exists, is in the claim's group (manage_groups), is admin (admin_groups) and her
// auth_state holds the provider's tokens. A forged state and a provider's refusal are pages
// that say so.
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub). Local set-up only
// (E2E_SPAWNER unset or "local"): no server is started.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { chromium } from "playwright-core";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const SPAWNER = process.env.E2E_SPAWNER || "local";
const HERE = dirname(fileURLToPath(import.meta.url));
const ADMIN_TOKEN = "oidc-test-admin-token-0123456789";
// 32 bytes, hex: the key auth_state is encrypted with.
const CRYPT_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function startProvider(callback) {
  const port = await freePort();
  const child = spawn(process.execPath, [join(HERE, "oidc-provider.mjs"), String(port), callback], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const issuer = `http://127.0.0.1:${port}`;
  await until("the provider", () => out.includes("ready"));
  return { issuer, child };
}

async function startHub() {
  const dir = mkdtempSync(join(tmpdir(), "jh-oidc-"));
  const port = await freePort();
  const hubPort = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const provider = await startProvider(`${url}/hub/oauth_callback`);
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

[Authenticator]
admin_users = ["admin"]
enable_auth_state = true

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

async function api(hub, path) {
  const r = await fetch(`${hub.url}/hub/api${path}`, { headers: { Authorization: `token ${ADMIN_TOKEN}` } });
  assert.equal(r.status, 200, `${path}: ${r.status}`);
  return r.json();
}

if (SPAWNER === "local") test("login through an OpenID Connect provider", { timeout: 120000 }, async (t) => {
  const hub = await startHub();
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  t.after(async () => {
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
    hub.provider.child.kill("SIGTERM");
  });
  const page = await (await browser.newContext()).newPage();
  try {
    await page.goto(`${hub.url}/hub/login?next=${encodeURIComponent("/hub/token")}`);
    const button = page.locator("#oauth_login");
    assert.equal((await button.textContent()).trim(), "Sign in with Test IdP");
    await button.click();
    // oidc-provider's devInteractions: a login form, then consent.
    await page.waitForURL(new RegExp(`^${hub.provider.issuer}/interaction/`));
    await page.fill("input[name=login]", "alice");
    await page.fill("input[name=password]", "anything");
    await page.click("button[type=submit]");
    await page.waitForURL((u) => u.href.startsWith(hub.url) || /consent|interaction/.test(u.href));
    if (!page.url().startsWith(hub.url)) {
      await page.click("button[type=submit]");
    }
    await page.waitForURL(`${hub.url}/hub/token`);

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
