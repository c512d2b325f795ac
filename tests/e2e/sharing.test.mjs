// Sharing end to end in Debian's Chromium with the real jupyterhub-singleuser: the owner
// (E2E_USER) starts JupyterLab and makes a share code through the REST API; a second user
// (any name: the dummy authenticator, and no server of their own) opens the accept link,
// logs in, accepts, authorizes the owner's server through the OAuth form and gets the
// owner's JupyterLab; the owner revokes the share and the guest's next request is refused.
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub), SINGLEUSER_VENVS (one run
// each), E2E_USER. Runs with the local set-up only (E2E_SPAWNER unset or "local").
// The single-user servers run with `--HubOAuth.cache_max_age=1`: by default they remember a
// token's model for five minutes (0 would be forever), so a revocation would reach them only
// that much later; the guest's refusal is awaited with a deadline.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, waitFor, launchBrowser, apiCall } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const VENVS = (process.env.SINGLEUSER_VENVS || "").split(",").filter(Boolean);
const OWNER = process.env.E2E_USER || "jh-e2e";
const SPAWNER = process.env.E2E_SPAWNER || "local";
const GUEST = "guest";

async function startHub(venv) {
  const dir = mkdtempSync(join(tmpdir(), "jh-sharing-"));
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

# As upstream's sharing docs: users may share their servers with users and groups by name.
[[JupyterHub.load_roles]]
name = "user"
scopes = ["self", "shares!user", "read:users:name", "read:groups:name"]

[Spawner]
cmd = ["${venv}/bin/jupyterhub-singleuser"]
args = ["--HubOAuth.cache_max_age=1"]
default_url = "/lab"
start_timeout = 120
http_timeout = 120
`);
  const log = openSync(join(dir, "hub.log"), "a");
  const child = spawn(BIN, ["-f", config], { cwd: dir, stdio: ["ignore", log, log] });
  await waitFor(`http://127.0.0.1:${port}/hub/api/`, 30000);
  return { url: `http://127.0.0.1:${port}`, dir, child, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

for (const venv of VENVS) {
  if (SPAWNER !== "local") break;
  test(`sharing a server end to end with ${venv}`, { timeout: 600000 }, async (t) => {
    const hub = await startHub(venv);
    const browser = await launchBrowser();
    const ownerContext = await browser.newContext();
    const owner = await ownerContext.newPage();
    t.after(async () => {
      // Local servers outlive the hub by design: stop the owner's through the API first.
      await owner.goto(`${hub.url}/hub/home`).catch(() => {});
      await apiCall(owner, "DELETE", `/users/${OWNER}/server`).catch(() => {});
      await browser.close().catch(() => {});
      hub.child.kill("SIGTERM");
    });
    try {
      await owner.goto(`${hub.url}/hub/login`);
      await owner.fill("#username_input", OWNER);
      await owner.fill("#password_input", "any");
      await owner.click("#login_submit");
      await owner.waitForURL(new RegExp(`/user/${OWNER}/lab`), { timeout: 180000 });
      await owner.waitForSelector("#jp-main-dock-panel", { timeout: 180000 });

      await owner.goto(`${hub.url}/hub/home`);
      const created = await apiCall(owner, "POST", `/share-codes/${OWNER}/`, { expires_in: 3600 });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      assert.deepEqual(created.body.scopes, [`access:servers!server=${OWNER}/`]);
      const acceptUrl = created.body.accept_url;
      assert.match(acceptUrl, /^\/hub\/accept-share\?code=/);

      // The guest follows the link: login first, then the confirmation page.
      const guestContext = await browser.newContext();
      const guest = await guestContext.newPage();
      await guest.goto(`${hub.url}${acceptUrl}`);
      await guest.waitForURL(/\/hub\/login/);
      await guest.fill("#username_input", GUEST);
      await guest.fill("#password_input", "any");
      await guest.click("#login_submit");
      await guest.waitForURL(/\/hub\/accept-share/);
      const lead = await guest.locator("p.lead").innerText();
      assert.match(lead, new RegExp(`You \\(${GUEST}\\) have been invited to access ${OWNER}'s server`));
      await guest.click("button[type=submit]");
      // The owner's server sends the guest through the hub's OAuth form: not their own server,
      // so they are asked, as upstream asks.
      await guest.waitForURL(/\/hub\/api\/oauth2\/authorize/, { timeout: 60000 });
      await guest.click("input[type=submit]");
      await guest.waitForURL(new RegExp(`/user/${OWNER}/lab`), { timeout: 120000 });
      await guest.waitForSelector("#jp-main-dock-panel", { timeout: 180000 });
      const before = await guest.request.get(`${hub.url}/user/${OWNER}/api/contents`);
      assert.equal(before.status(), 200, "the guest reaches the owner's server");

      const shared = await apiCall(owner, "GET", `/shares/${OWNER}/`);
      assert.equal(shared.status, 200);
      assert.deepEqual(shared.body.map((s) => s.user.name), [GUEST]);
      const revoked = await apiCall(owner, "DELETE", `/shares/${OWNER}/`);
      assert.equal(revoked.status, 204);

      let after;
      const deadline = Date.now() + 20000;
      do {
        after = await guest.request.get(`${hub.url}/user/${OWNER}/api/contents`, { maxRedirects: 0 });
        if (after.status() === 403) break;
        await new Promise((r) => setTimeout(r, 250));
      } while (Date.now() < deadline);
      assert.equal(after.status(), 403, `after revocation: ${after.status()} ${await after.text()}`);
      // JupyterLab itself: the single-user server's own 403 page ("user guest is not allowed").
      const lab = await guest.goto(`${hub.url}/user/${OWNER}/lab`);
      assert.equal(lab.status(), 403);
      assert.match(await guest.locator("body").innerText(), new RegExp(`${GUEST} is not allowed`));
      const own = await owner.request.get(`${hub.url}/user/${OWNER}/api/contents`);
      assert.equal(own.status(), 200, "the owner still reaches their server");
    } catch (e) {
      const shot = join(hub.dir, "failure.png");
      for (const context of browser.contexts()) {
        await context.pages()[0]?.screenshot({ path: shot }).catch(() => {});
      }
      console.log(`screenshot: ${shot}`);
      console.log(hub.log());
      throw e;
    }
  });
}

test("prerequisites are present", () => {
  assert.ok(VENVS.length > 0, "SINGLEUSER_VENVS must name at least one venv with jupyterhub and jupyterlab");
});
