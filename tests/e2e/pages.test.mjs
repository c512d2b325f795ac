// The token page in Debian's Chromium, against a real hub: request a token with a note, an
// expiry and permissions; revoke it; authorize an application through the OAuth form and
// revoke it from "Authorized Applications". Each step is checked through the REST API.
// Screenshots go to $E2E_SCREENSHOTS (default target/e2e-screenshots).
//
// Also the spawn form of a hub with server profiles: pick one, start, and the server runs with
// its limits.
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub), E2E_USER (the system user
// the local spawner runs servers as when the tests run as root). Runs with the local set-up
// only (E2E_SPAWNER unset or "local"): the page needs no server, and the contained systemd's
// run of tests/e2e/ is for what differs there.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync, mkdirSync, copyFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, until, apiCall, launchBrowser } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const SHOTS = resolve(process.env.E2E_SCREENSHOTS || "target/e2e-screenshots");
const SPAWNER = process.env.E2E_SPAWNER || "local";
const SERVICE_SECRET = "grader-service-secret-0123456789";
const USER = process.env.E2E_USER || "jh-e2e";
const STUB = resolve("tests/fixtures/stub_singleuser.py");

async function startHub(extra = "") {
  const dir = mkdtempSync(join(tmpdir(), "jh-pages-"));
  const port = await freePort();
  const hubPort = await freePort();
  const config = join(dir, "jupyterhub.toml");
  writeFileSync(config, `
[JupyterHub]
ip = "127.0.0.1"
port = ${port}
hub_bind_url = "http://127.0.0.1:${hubPort}"
db_url = "sqlite:///${join(dir, "jupyterhub.sqlite")}"
cookie_secret_file = "${join(dir, "cookie_secret")}"
authenticator_class = "dummy"
spawner_class = "local"

[[JupyterHub.services]]
name = "grader"
url = "http://127.0.0.1:1"
api_token = "${SERVICE_SECRET}"

[[JupyterHub.load_roles]]
name = "graders"
scopes = ["access:services!service=grader"]
users = ["alice"]
${extra}
`);
  const log = openSync(join(dir, "hub.log"), "a");
  const child = spawn(BIN, ["-f", config], { cwd: dir, stdio: ["ignore", log, log] });
  const url = `http://127.0.0.1:${port}`;
  await until("the hub", async () => (await fetch(`${url}/hub/api/`)).ok, 30000);
  return { url, dir, child, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

if (SPAWNER === "local") test("the token page: request, revoke, authorized applications", { timeout: 120000 }, async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const hub = await startHub();
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
  });
  const page = await (await browser.newContext({ viewport: { width: 1300, height: 900 } })).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const shot = async (name) => {
    const path = join(SHOTS, `token-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  };
  const tokens = async () => (await apiCall(page, "GET", "/users/alice/tokens")).body.api_tokens;
  try {
    await page.goto(`${hub.url}/hub/login`);
    await page.fill("#username_input", "alice");
    await page.fill("#password_input", "any");
    await page.click("#login_submit");
    await page.waitForURL(/\/hub\/|\/user\//);
    await page.goto(`${hub.url}/hub/token`);

    // A token with a note, a day's expiry and one permission.
    await page.fill("#token-note", "for my grading script");
    await page.selectOption("#token-expiration-seconds", "86400");
    await page.fill("#token-scopes", "read:users:name!user=alice");
    await page.click("#request-token-form button[type=submit]");
    await until("the new token shown", async () => (await page.textContent("#token-result")).length > 20);
    const secret = await page.textContent("#token-result");
    const made = (await tokens()).find((x) => x.note === "for my grading script");
    assert.ok(made, "the token is in the API");
    assert.ok(made.scopes.includes("read:users:name!user=alice"), JSON.stringify(made));
    assert.ok(!made.scopes.includes("access:servers!user=alice"), "only what was asked for");
    const hours = (Date.parse(made.expires_at) - Date.now()) / 3600000;
    assert.ok(hours > 23 && hours <= 24, `expires in a day: ${made.expires_at}`);
    // The token works, and is what the page showed.
    const me = await fetch(`${hub.url}/hub/api/user`, { headers: { Authorization: `token ${secret}` } });
    assert.equal(me.status, 200);
    assert.equal((await me.json()).name, "alice");
    const row = page.locator(`#api-tokens tr.token-row[data-token-id="${made.id}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), /for my grading script/);
    await shot("requested");

    // Permissions the user does not hold: the page says why, nothing is made.
    const before = (await tokens()).length;
    await page.fill("#token-scopes", "admin:users");
    await page.click("#request-token-form button[type=submit]");
    await until("the refusal", async () => (await page.isVisible("#token-error")) && /admin:users/.test(await page.textContent("#token-error")));
    assert.equal((await tokens()).length, before);

    // Revoke it.
    await row.locator(".revoke-token-btn").click();
    await until("the token revoked", async () => !(await tokens()).some((x) => x.id === made.id));
    assert.equal((await fetch(`${hub.url}/hub/api/user`, { headers: { Authorization: `token ${secret}` } })).status, 403);

    // An application: alice authorizes the grader service through the OAuth form.
    const authorize = `${hub.url}/hub/api/oauth2/authorize?client_id=service-grader&redirect_uri=${encodeURIComponent("/services/grader/oauth_callback")}&response_type=code&state=s1`;
    await page.goto(authorize);
    const callback = page.waitForRequest((r) => r.url().includes("/services/grader/oauth_callback?code="));
    await page.click("input[type=submit][value=Authorize]");
    const code = new URL((await callback).url()).searchParams.get("code");
    assert.ok(code, "a code for the service");
    const exchanged = await fetch(`${hub.url}/hub/api/oauth2/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: "service-grader", client_secret: SERVICE_SECRET, grant_type: "authorization_code", code, redirect_uri: "/services/grader/oauth_callback" }),
    });
    assert.equal(exchanged.status, 200, await exchanged.clone().text());
    const oauthToken = (await exchanged.json()).access_token;
    await page.goto(`${hub.url}/hub/token`);
    const app = page.locator("#oauth-clients tr.token-row");
    await app.first().waitFor();
    assert.equal(await app.count(), 1);
    assert.match(await app.first().textContent(), /grader/);
    assert.match(await app.first().textContent(), /access:services!service=grader/);
    await shot("authorized-applications");
    await app.first().locator(".revoke-token-btn").click();
    await until("the application revoked", async () => !(await tokens()).some((x) => x.oauth_client !== "JupyterHub"));
    assert.equal((await fetch(`${hub.url}/hub/api/user`, { headers: { Authorization: `token ${oauthToken}` } })).status, 403);
    await until("the section hidden", async () => !(await page.isVisible("#oauth-clients-section")));
    assert.deepEqual(errors, [], "no script errors");
  } catch (e) {
    await shot("failure-state").catch(() => {});
    console.log(hub.log());
    throw e;
  }
});

if (SPAWNER === "local") test("the spawn form with server profiles: pick one, start, its limits apply", { timeout: 120000 }, async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  // The server runs as another account: the stub must be readable by it.
  const stubDir = mkdtempSync(join(tmpdir(), "jh-pages-stub-"));
  chmodSync(stubDir, 0o755);
  const stub = join(stubDir, "stub_singleuser.py");
  copyFileSync(STUB, stub);
  chmodSync(stub, 0o644);
  const hub = await startHub(`
[Spawner]
cmd = ["/usr/bin/python3", "${stub}"]
http_timeout = 20
start_timeout = 20

[[Spawner.profiles]]
slug = "standard"
display_name = "Standard"
default = true

[[Spawner.profiles]]
slug = "small"
display_name = "Small: 512 MiB"
description = "For <em>light</em> work"
mem_limit = "512M"
`);
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
    if (process.getuid && process.getuid() === 0) spawnSync("pkill", ["-u", USER, "-f", "stub_singleuser"]);
  });
  const page = await (await browser.newContext({ viewport: { width: 1300, height: 900 } })).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const user = process.getuid && process.getuid() === 0 ? USER : (process.env.USER || "root");
  try {
    await page.goto(`${hub.url}/hub/login`);
    await page.fill("#username_input", user);
    await page.fill("#password_input", "any");
    await page.click("#login_submit");
    // Logging in goes to the spawn page, which is the profile form.
    await page.waitForSelector("#profile-list");
    assert.ok(await page.isChecked("#profile-item-standard"), "the default is chosen");
    assert.match(await page.textContent("#profile-list"), /For light work/);
    const shot = join(SHOTS, "spawn-profiles.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
    await page.check("#profile-item-small");
    await page.click("#spawn_form input[type=submit]");
    await page.waitForURL(new RegExp(`/user/${user}/`), { timeout: 30000 });
    await page.goto(`${hub.url}/hub/home`);
    const model = await apiCall(page, "GET", `/users/${user}`);
    assert.equal(model.body.servers[""].user_options.profile, "small", JSON.stringify(model.body));
    const env = await (await fetch(`${hub.url}/user/${user}/env`)).json();
    assert.equal(env.MEM_LIMIT, String(512 * 1024 * 1024), JSON.stringify(env));
    assert.equal((await apiCall(page, "DELETE", `/users/${user}/server`)).status < 300, true);
    assert.deepEqual(errors, [], "no script errors");
  } catch (e) {
    console.log(hub.log());
    throw e;
  }
});
