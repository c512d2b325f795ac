// End to end, as a person does it: Debian's Chromium logs in to our hub, starts a server
// (the real jupyterhub-singleuser from PyPI), JupyterLab loads through the built-in proxy,
// a notebook runs `1+1` over the kernel's websocket, the server stops, the user logs out.
//
// Environment:
//   JUPYTERHUB_BIN    the hub binary (default: target/debug/jupyterhub)
//   SINGLEUSER_VENVS  comma-separated venvs holding jupyterhub + jupyterlab (one run each)
//   E2E_USER          a system user the local spawner may run servers as
//   E2E_SPAWNER       local (default) or systemd
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, waitFor, launchBrowser } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const VENVS = (process.env.SINGLEUSER_VENVS || "").split(",").filter(Boolean);
const USER = process.env.E2E_USER || "jh-e2e";
const SPAWNER = process.env.E2E_SPAWNER || "local";

async function startHub(venv) {
  // With the systemd spawner the hub runs in a contained systemd whose /tmp is private.
  const dir = mkdtempSync(join(process.env.E2E_DIR || tmpdir(), "jh-e2e-"));
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
spawner_class = "${SPAWNER}"
[Spawner]
cmd = ["${venv}/bin/jupyterhub-singleuser"]
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
  test(`JupyterLab end to end with ${venv} (${SPAWNER} spawner)`, { timeout: 600000 }, async (t) => {
    const hub = await startHub(venv);
    const browser = await launchBrowser();
    t.after(async () => {
      await browser.close().catch(() => {});
      hub.child.kill("SIGTERM");
      // Local servers outlive the hub by design; a failed run must not leave them behind.
      // The account is the test's own, so everything it runs belongs to this test.
      if (SPAWNER === "local") spawnSync("pkill", ["-u", USER]);
    });
    try {
      const page = await browser.newPage();
      await page.goto(`${hub.url}/hub/login`);
      await page.fill("#username_input", USER);
      await page.fill("#password_input", "any");
      const clicked = Date.now();
      await page.click("#login_submit");
      // Login → /hub/spawn → spawn-pending (progress bar) → /user/USER/lab.
      await page.waitForURL(new RegExp(`/user/${USER}/lab`), { timeout: 180000 });
      await page.waitForSelector("#jp-main-dock-panel", { timeout: 180000 });
      // A workspace left by an earlier run would hide the launcher: start from a clean one.
      await page.goto(`${hub.url}/user/${USER}/lab?reset`);
      await page.waitForSelector(".jp-LauncherCard", { timeout: 180000 });
      const spawnSeconds = (Date.now() - clicked) / 1000;
      console.log(`spawn timing: login click -> JupyterLab usable: ${spawnSeconds.toFixed(1)} s (${venv})`);

      // A new notebook runs 1+1 over the kernel's websocket, through our proxy.
      await page.click('.jp-LauncherCard[data-category="Notebook"]');
      const editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first();
      await editor.waitFor({ timeout: 120000 });
      // The kernel must be idle before the cell runs, or the keystroke can be lost.
      await page.waitForFunction(() => /Idle/.test(document.querySelector(".jp-StatusBar-Widget, #jp-main-statusbar")?.textContent || ""), null, { timeout: 120000 });
      await editor.click();
      await page.keyboard.type("1+1");
      await page.keyboard.press("Shift+Enter");
      const output = page.locator(".jp-OutputArea-output").first();
      await output.waitFor({ timeout: 120000 });
      assert.equal((await output.innerText()).trim(), "2");

      // Stop the server from the home page.
      await page.goto(`${hub.url}/hub/home`);
      await page.click("#stop");
      await page.waitForFunction(() => document.querySelector("#start")?.textContent.includes("Start"), null, { timeout: 60000 });
      const model = await (await page.request.get(`${hub.url}/hub/api/users/${USER}`)).json();
      assert.equal(model.server, null);

      // Log out; the server URL then leads back to the login page.
      await page.goto(`${hub.url}/hub/logout`);
      await page.goto(`${hub.url}/user/${USER}/lab`);
      await page.waitForURL(/\/hub\/login/, { timeout: 30000 });
    } catch (e) {
      const shot = join(hub.dir, "failure.png");
      await browser.contexts()[0]?.pages()[0]?.screenshot({ path: shot }).catch(() => {});
      console.log(`screenshot: ${shot}`);
      console.log(hub.log());
      throw e;
    }
  });
}

test("prerequisites are present", () => {
  assert.ok(VENVS.length > 0, "SINGLEUSER_VENVS must name at least one venv with jupyterhub and jupyterlab");
});
