// Benchmark (not a test), for bench/jupyterlab.sh: "login click -> JupyterLab usable" in
// Debian's Chromium, on a hub that is already running (ours or Python's, the same way).
// Each run: a fresh browser context logs in with the form, the hub spawns the server,
// the spawn-pending page follows it to /user/USER/lab; usable = the launcher (`.jp-Launcher`)
// is visible. The server is then stopped through the API and the lab workspace removed, so
// the next run starts cold in the same way. Prints the milliseconds of each run, one a line.
//
// usage: node bench/jupyterlab-browser.mjs HUB_URL USER RUNS ADMIN_TOKEN
// Env: PLAYWRIGHT_MODULES  node_modules holding playwright-core (default tests/e2e/node_modules)
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [url, user, runsArg, token] = process.argv.slice(2);
if (!token) {
  console.error("usage: node bench/jupyterlab-browser.mjs HUB_URL USER RUNS ADMIN_TOKEN");
  process.exit(2);
}
const modules = resolve(process.env.PLAYWRIGHT_MODULES || "tests/e2e/node_modules");
const { chromium } = await import(pathToFileURL(join(modules, "playwright-core", "index.mjs")).href);
const home = process.env.E2E_HOME || `/home/${user}`;
const api = `${url}/hub/api`;
const headers = { Authorization: `token ${token}` };

async function stopServer() {
  await fetch(`${api}/users/${user}/server`, { method: "DELETE", headers });
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline) {
    const model = await (await fetch(`${api}/users/${user}`, { headers })).json();
    if (!model.server && !model.pending) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${user}'s server did not stop`);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  for (let i = 0; i < Number(runsArg); i++) {
    // A workspace left by an earlier run could hide the launcher.
    rmSync(join(home, ".jupyter", "lab", "workspaces"), { recursive: true, force: true });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${url}/hub/login`);
    await page.fill("#username_input", user);
    await page.fill("#password_input", "any");
    const clicked = Date.now();
    await page.click("#login_submit");
    await page.waitForURL(new RegExp(`/user/${user}/lab`), { timeout: 180000 });
    await page.waitForSelector(".jp-Launcher", { state: "visible", timeout: 180000 });
    console.log(Date.now() - clicked);
    await context.close();
    await stopServer();
  }
} finally {
  await browser.close();
}
