// The README's first command as a newcomer runs it: `jupyterhub --dev` in an empty directory,
// with no Python environment yet. Chromium logs in as `admin`, sees the admin page, starts a
// server (the hub creates the environment from PyPI on this first start, with progress on the
// spawn-pending page), gets JupyterLab and runs a cell. As root, and (when the tests run as
// root) again as an ordinary account, which is how most people will first run it.
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub), E2E_USER (the ordinary
// account, default jh-e2e). Runs with the local set-up only (E2E_SPAWNER unset or "local").
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, openSync, copyFileSync, chmodSync, chownSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, until, launchBrowser } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const SPAWNER = process.env.E2E_SPAWNER || "local";
const USER = process.env.E2E_USER || "jh-e2e";
const ROOT = process.getuid() === 0;

function uidOf(name) {
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${name}:`));
  assert.ok(line, `system user ${name} is missing: run tests/run.sh, which creates it`);
  const [, , uid, gid] = line.split(":");
  return [Number(uid), Number(gid)];
}

// The hub as the README runs it: `--dev` in an empty directory (`cargo run -- --dev` runs
// the same binary from the checkout); only the port differs, so tests never collide.
async function startDevHub(account) {
  const dir = mkdtempSync(join(tmpdir(), "jh-readme-"));
  chmodSync(dir, 0o755);
  const bin = join(dir, "jupyterhub");
  copyFileSync(BIN, bin);
  chmodSync(bin, 0o755);
  const port = await freePort();
  const log = openSync(join(dir, "hub.log"), "a");
  let child;
  if (account === "root" || !ROOT) {
    child = spawn(bin, ["--dev", "--port", String(port)], { cwd: dir, stdio: ["ignore", log, log] });
  } else {
    const [uid, gid] = uidOf(account);
    chownSync(dir, uid, gid);
    child = spawn("/usr/sbin/runuser", ["-u", account, "--", bin, "--dev", "--port", String(port)], {
      cwd: dir,
      stdio: ["ignore", log, log],
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: `/home/${account}`, LANG: "C.UTF-8" },
    });
  }
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  await until("the hub", async () => (await fetch(`${url}/hub/api/`)).ok, 30000);
  return { url, dir, child, exited, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

const accounts = SPAWNER !== "local" ? [] : ROOT ? ["root", USER] : [process.env.USER || "me"];
for (const account of accounts) {
  test(`the README's first command as ${account}: login, admin page, JupyterLab, a cell`, { timeout: 900000 }, async (t) => {
    const hub = await startDevHub(account);
    const browser = await launchBrowser();
    t.after(async () => {
      await browser.close().catch(() => {});
      hub.child.kill("SIGTERM");
      await Promise.race([hub.exited, new Promise((r) => setTimeout(r, 10000))]);
      // Local servers outlive the hub by design; one a failed run left runs from this
      // directory's environment.
      spawnSync("pkill", ["-f", hub.dir]);
    });
    const page = await browser.newPage();
    try {
      await page.goto(`${hub.url}/`);
      await page.waitForURL(/\/hub\/login/);
      await page.fill("#username_input", "admin");
      await page.fill("#password_input", "any password");
      const clicked = Date.now();
      await page.click("#login_submit");
      // The first start makes the environment: the spawn-pending page shows its progress.
      await page.waitForURL(/\/hub\/spawn-pending\/admin/, { timeout: 60000 });
      await until("the environment install in the progress log", async () => /Installing .*from PyPI/.test(await page.textContent("#progress-log")), 120000);
      await page.waitForURL(/\/user\/admin\/lab/, { timeout: 600000 });
      await page.waitForSelector("#jp-main-dock-panel", { timeout: 180000 });
      console.log(`README first run as ${account}: login click -> JupyterLab ${((Date.now() - clicked) / 1000).toFixed(0)} s (including the environment install)`);
      await page.goto(`${hub.url}/user/admin/lab?reset`);
      await page.waitForSelector(".jp-LauncherCard", { timeout: 180000 });
      await page.click('.jp-LauncherCard[data-category="Notebook"]');
      const editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first();
      await editor.waitFor({ timeout: 120000 });
      await page.waitForFunction(() => /Idle/.test(document.querySelector(".jp-StatusBar-Widget, #jp-main-statusbar")?.textContent || ""), null, { timeout: 120000 });
      await editor.click();
      await page.keyboard.type("6*7");
      await page.keyboard.press("Shift+Enter");
      const output = page.locator(".jp-OutputArea-output").first();
      await output.waitFor({ timeout: 120000 });
      assert.equal((await output.innerText()).trim(), "42");

      // admin is an admin: the admin page lists the users.
      await page.goto(`${hub.url}/hub/admin`);
      await page.waitForSelector('tr.user-row[data-user="admin"]', { timeout: 30000 });
      // The server runs as the account that runs the hub, in its own directory.
      const state = await page.evaluate(async () => (await (await hubApi("GET", "/users/admin")).json()).servers[""].state);
      const status = readFileSync(`/proc/${state.pid}/status`, "utf8");
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)[1]);
      assert.equal(uid, account === "root" ? 0 : ROOT ? uidOf(account)[0] : process.getuid());
      const stopped = await page.evaluate(async () => (await hubApi("DELETE", "/users/admin/server")).status);
      assert.ok(stopped === 202 || stopped === 204, `stop: ${stopped}`);
    } catch (e) {
      const shot = join(hub.dir, "failure.png");
      await page.screenshot({ path: shot }).catch(() => {});
      console.log(`screenshot: ${shot}`);
      console.log(hub.log());
      throw e;
    }
  });
}
