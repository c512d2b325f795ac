// A browser session under a slowloris attack: 2 000 connections to the hub's public port that
// each send part of a request head and stall, refilled as the hub closes them (its header
// timeout), while Debian's Chromium logs in, gets JupyterLab from the real
// jupyterhub-singleuser, runs a cell over the kernel's websocket and stops the server. The
// stalled connections come from two other loopback addresses, each under the default
// per-address cap, so they are all held: what is tested is that they starve nobody, not that
// the cap refuses them (tests/slowloris.rs covers the cap).
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub), SINGLEUSER_VENVS (the first
// venv with jupyterhub + jupyterlab is used), E2E_USER (default jh-e2e). Local set-up only.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import net from "node:net";
import { freePort, until, waitFor, launchBrowser, apiCall } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const VENV = (process.env.SINGLEUSER_VENVS || "").split(",").filter(Boolean)[0];
const USER = process.env.E2E_USER || "jh-e2e";
const SPAWNER = process.env.E2E_SPAWNER || "local";
const STALLED = 2000;
const SOURCES = ["127.0.0.2", "127.0.0.3"];
const HEADER_TIMEOUT = 5;
const PARTIAL = "GET /hub/login HTTP/1.1\r\nHost: hub.test\r\nX-Slow: ";

async function startHub() {
  const dir = mkdtempSync(join(tmpdir(), "jh-slowloris-"));
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
[Proxy]
header_timeout = ${HEADER_TIMEOUT}
[Spawner]
cmd = ["${VENV}/bin/jupyterhub-singleuser"]
default_url = "/lab"
start_timeout = 120
http_timeout = 120
`);
  const log = openSync(join(dir, "hub.log"), "a");
  const child = spawn(BIN, ["-f", config], { cwd: dir, stdio: ["ignore", log, log] });
  await waitFor(`http://127.0.0.1:${port}/hub/api/`, 30000);
  return { port, url: `http://127.0.0.1:${port}`, dir, child, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

// Keeps `STALLED` half-sent heads open; each one the hub closes is opened again at once.
function attack(port) {
  const stats = { open: 0, closedByHub: 0, errors: 0, lastError: null, stopped: false };
  const sockets = new Set();
  const open = (from) => {
    if (stats.stopped) return;
    const socket = net.connect({ host: "127.0.0.1", port, localAddress: from });
    sockets.add(socket);
    let connected = false;
    socket.on("connect", () => {
      connected = true;
      stats.open += 1;
      socket.write(PARTIAL);
    });
    socket.on("data", () => {});
    socket.on("error", (e) => {
      stats.errors += 1;
      stats.lastError = e.message;
    });
    socket.on("close", () => {
      sockets.delete(socket);
      if (connected) {
        stats.open -= 1;
        if (!stats.stopped) stats.closedByHub += 1;
      }
      // Not in the same tick: a hub that refused would otherwise be hammered in a loop.
      setTimeout(() => open(from), 10);
    });
  };
  for (let i = 0; i < STALLED; i++) open(SOURCES[i % SOURCES.length]);
  stats.stop = () => {
    stats.stopped = true;
    for (const s of sockets) s.destroy();
  };
  return stats;
}

if (SPAWNER === "local") test(`JupyterLab in Chromium while ${STALLED} stalled connections hold the hub's port`, { timeout: 600000 }, async (t) => {
  assert.ok(VENV, "SINGLEUSER_VENVS must name a venv with jupyterhub and jupyterlab");
  const hub = await startHub();
  const stats = attack(hub.port);
  const browser = await launchBrowser();
  t.after(async () => {
    stats.stop();
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
    spawnSync("pkill", ["-u", USER]);
  });
  try {
    await until(`${STALLED} stalled connections`, () => stats.open >= STALLED, 60000);
    const page = await browser.newPage();
    await page.goto(`${hub.url}/hub/login`);
    await page.fill("#username_input", USER);
    await page.fill("#password_input", "any");
    await page.click("#login_submit");
    await page.waitForURL(new RegExp(`/user/${USER}/lab`), { timeout: 180000 });
    await page.goto(`${hub.url}/user/${USER}/lab?reset`);
    await page.waitForSelector(".jp-LauncherCard", { timeout: 180000 });

    await page.click('.jp-LauncherCard[data-category="Notebook"]');
    const editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first();
    await editor.waitFor({ timeout: 120000 });
    await page.waitForFunction(() => /Idle/.test(document.querySelector(".jp-StatusBar-Widget, #jp-main-statusbar")?.textContent || ""), null, { timeout: 120000 });
    await editor.click();
    await page.keyboard.type("1+1");
    await page.keyboard.press("Shift+Enter");
    const output = page.locator(".jp-OutputArea-output").first();
    await output.waitFor({ timeout: 120000 });
    assert.equal((await output.innerText()).trim(), "2");
    // The attack was on all along: nearly all its connections open at this moment (a few
    // may be between a close and their reopening), and none refused.
    assert.ok(stats.open >= STALLED * 0.95, `only ${stats.open} stalled connections open while the cell ran`);
    assert.equal(stats.errors, 0, `connections failed: ${stats.lastError}`);

    // Stop from the home page; the REST API agrees.
    await page.goto(`${hub.url}/hub/home`);
    await page.click("#stop");
    await page.waitForFunction(() => document.querySelector("#start")?.textContent.includes("Start"), null, { timeout: 60000 });
    const model = await apiCall(page, "GET", `/users/${USER}`);
    assert.equal(model.status, 200);
    assert.equal(model.body.server, null);

    // The hub closed the stalled heads at its header timeout (each was reopened): at least
    // one round of all of them by now, or they would have pinned its descriptors for good.
    await until("a round of header timeouts", () => stats.closedByHub >= STALLED, (HEADER_TIMEOUT + 30) * 1000);
    console.log(`slowloris: ${stats.open} open at the end, ${stats.closedByHub} closed by the hub's header timeout, ${stats.errors} errors`);
  } catch (e) {
    console.log(hub.log().slice(-5000));
    throw e;
  }
});
