// The admin panel in Debian's Chromium, against a real hub (--dev: servers are the stub
// single-user server, run as this account): every control is clicked and its effect checked
// through the REST API. Screenshots go to $E2E_SCREENSHOTS (default target/e2e-screenshots).
//
// With E2E_SPAWNER=systemd (tests/e2e/with-systemd.sh: the hub in a contained systemd, servers
// as transient units) the test is what only a systemd hub shows: a server's memory against its
// limit following what it allocates, its journal followed live, and "out of memory" with its
// last lines in its row once the kernel kills it.
//
// Environment: JUPYTERHUB_BIN (default target/debug/jupyterhub), E2E_SPAWNER (local or
// systemd), E2E_DIR (where the hub's files go; the contained systemd's /tmp is private).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, openSync, mkdirSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, until, launchBrowser, apiCall } from "./lib.mjs";

const BIN = resolve(process.env.JUPYTERHUB_BIN || "target/debug/jupyterhub");
const SHOTS = resolve(process.env.E2E_SCREENSHOTS || "target/e2e-screenshots");
const STUB = resolve("tests/fixtures/stub_singleuser.py");
const SPAWNER = process.env.E2E_SPAWNER || "local";

async function startHub() {
  const dir = mkdtempSync(join(tmpdir(), "jh-admin-"));
  const stub = join(dir, "stub_singleuser.py");
  copyFileSync(STUB, stub);
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
allow_named_servers = true

[[JupyterHub.load_roles]]
name = "viewer"
scopes = ["admin-ui", "list:users", "read:users"]
users = ["viewer"]

[[JupyterHub.services]]
name = "sleeper"
command = ["/usr/bin/python3", "-c", "import time; print('sleeper up', flush=True); time.sleep(100000)"]

[Spawner]
cmd = ["/usr/bin/python3", "${stub}"]
http_timeout = 20
start_timeout = 20
`);
  const log = openSync(join(dir, "hub.log"), "a");
  const child = spawn(BIN, ["--dev", "-f", config], { cwd: dir, stdio: ["ignore", log, log] });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  await until("the hub", async () => (await fetch(`${url}/hub/api/`)).ok, 30000);
  return { url, dir, child, exited, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

// The hub in the contained systemd (BIN enters it), root, servers as dynamic users with a
// memory limit for alice.
async function startSystemdHub() {
  const base = process.env.E2E_DIR || tmpdir();
  const dir = mkdtempSync(join(base, "jh-admin-"));
  // Servers run as dynamic users: the stub must be where they can read it.
  const stub = join(base, "admin_stub_singleuser.py");
  copyFileSync(STUB, stub);
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
spawner_class = "systemd"

[Authenticator]
admin_users = ["admin"]

[SystemdSpawner]
dynamic_users = true

[Spawner]
cmd = ["/usr/bin/python3", "${stub}"]
http_timeout = 30
start_timeout = 30

[Spawner.user_limits.alice]
mem_limit = "96M"
cpu_limit = 0.5
`);
  const log = openSync(join(dir, "hub.log"), "a");
  const child = spawn(BIN, ["-f", config], { cwd: dir, stdio: ["ignore", log, log] });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  await until("the hub", async () => (await fetch(`${url}/hub/api/`)).ok, 30000);
  return { url, dir, child, exited, log: () => readFileSync(join(dir, "hub.log"), "utf8") };
}

// "12.3 MiB / 96 MiB" -> bytes of the first figure.
function shownBytes(text) {
  const m = /([\d.]+) (B|KiB|MiB|GiB)/.exec(text || "");
  if (!m) return null;
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[m[2]];
}

async function login(page, hub, name) {
  await page.goto(`${hub.url}/hub/login`);
  await page.fill("#username_input", name);
  await page.fill("#password_input", "any");
  await page.click("#login_submit");
  await page.waitForURL(/\/hub\/(spawn|home|user|spawn-pending)|\/user\//, { timeout: 20000 });
}

function row(page, user) {
  return page.locator(`tr.user-row[data-user="${user}"]`);
}

if (SPAWNER === "local") test("the admin panel: every control, checked through the REST API", { timeout: 300000 }, async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const hub = await startHub();
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
  });
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => d.accept());
  const shot = async (name) => {
    const path = join(SHOTS, `admin-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  };
  const admin = async () => {
    await page.goto(`${hub.url}/hub/admin`);
    await page.waitForSelector("tr.user-row");
  };
  try {
    await login(page, hub, "admin");
    // Logging in started admin's own server: stop it, so the figures below count only ours.
    await page.goto(`${hub.url}/hub/home`);
    await apiCall(page, "DELETE", "/users/admin/server");
    await until("admin's server stopped", async () => (await apiCall(page, "GET", "/users/admin")).body.server === null);
    await admin();

    // Add Users: several at once, with the admin toggle.
    const names = Array.from({ length: 27 }, (_, i) => `u${String(i + 1).padStart(2, "0")}`);
    await page.click("#add-users");
    await page.fill("#add-usernames", ["alice", "bob", "carol", "viewer", ...names].join("\n"));
    await page.click("#add-users-submit");
    await until("the new users in the table", () => row(page, "u05").count());
    for (const n of ["alice", "carol", "u27"]) assert.equal((await apiCall(page, "GET", `/users/${n}`)).status, 200);
    assert.equal((await apiCall(page, "GET", "/users/alice")).body.admin, false);
    await page.click("#add-users");
    await page.fill("#add-usernames", "dana");
    await page.check("#add-admin");
    await page.click("#add-users-submit");
    await until("dana as admin", async () => (await apiCall(page, "GET", "/users/dana")).body?.admin === true);
    // A refused request shows the hub's message in the dialog (all exist: 409).
    await page.click("#add-users");
    await page.fill("#add-usernames", "carol");
    await page.click("#add-users-submit");
    await page.waitForSelector("#add-users-dialog .dialog-error:not([hidden])");
    await page.click("#add-users-dialog >> text=Cancel");

    // Items per page and paging, kept in the URL across a reload.
    await page.selectOption("#page-limit", "25");
    await until("25 rows", async () => (await page.locator("tr.user-row").count()) === 25);
    await page.click("#next-page");
    await until("the second page", async () => /Displaying 26-/.test(await page.textContent("#page-info")));
    assert.match(page.url(), /offset=25/);
    await page.reload();
    await until("the second page after a reload", async () => /Displaying 26-/.test(await page.textContent("#page-info")));
    await page.click("#prev-page");
    await until("the first page", async () => /Displaying 1-25/.test(await page.textContent("#page-info")));

    // Sort by name, descending, from the header; kept across a reload.
    await page.click('th[data-sort="name"] button');
    await page.click('th[data-sort="name"] button');
    await until("descending names", async () => (await page.locator("tr.user-row .user-name").first().textContent()) === "viewer");
    assert.match(page.url(), /sort=-name/);
    await page.reload();
    await until("the sort after a reload", async () => (await page.locator("tr.user-row .user-name").first().textContent()) === "viewer");
    assert.equal(await page.getAttribute('th[data-sort="name"]', "aria-sort"), "descending");
    await page.click('th[data-sort="name"] button');

    // Search: the name filter, in the URL.
    await page.fill("#user-search", "car");
    await until("only carol", async () => (await page.locator("tr.user-row").count()) === 1 && (await row(page, "carol").count()) === 1);
    assert.match(page.url(), /name_filter=car/);

    // Start Server, Access Server, Stop Server on one user.
    await row(page, "carol").locator(".start-server").click();
    await until("carol's server ready", async () => (await apiCall(page, "GET", "/users/carol")).body.servers?.[""]?.ready === true);
    await until("the Access Server link", () => row(page, "carol").locator(".access-server").count());
    // Live use appears without a reload (the local spawner reads the process's memory).
    await until("carol's memory figure", async () => /[KMG]iB/.test(await row(page, "carol").locator("td.memory").textContent()));
    // CPU over the last interval between two polls (no cpu_limit here: in CPUs).
    await until("carol's CPU use", async () => /^\d+\.\d\d CPUs$/.test(await row(page, "carol").locator("td.cpu").textContent()), 20000);
    await until("the hub figures", async () => (await page.textContent('[data-figure="Running servers"]')) === "1");
    await shot("running");
    const href = await row(page, "carol").locator(".access-server").getAttribute("href");
    assert.match(href, /\/user\/carol\/$/);
    await page.goto(new URL(href, hub.url).toString());
    assert.match(await page.textContent("body"), /"user": "carol"/);
    await page.goBack();
    await page.waitForSelector('tr.user-row[data-user="carol"]');
    await row(page, "carol").locator(".stop-server").click();
    await until("carol's server stopped", async () => (await apiCall(page, "GET", "/users/carol")).body.server === null);

    // A named server: its row under the user's expanded row, Start, Stop, Delete.
    assert.equal((await apiCall(page, "POST", "/users/carol/servers/nb1")).status < 300, true);
    await until("nb1 ready", async () => (await apiCall(page, "GET", "/users/carol")).body.servers?.nb1?.ready === true);
    await page.reload();
    await row(page, "carol").locator("button.expand").click();
    const nb1 = page.locator('tr.server-row[data-user="carol"][data-server="nb1"]');
    await nb1.waitFor();
    assert.equal(await row(page, "carol").locator("button.expand").getAttribute("aria-expanded"), "true");
    await nb1.locator(".stop-server").click();
    await until("nb1 stopped", async () => !(await apiCall(page, "GET", "/users/carol")).body.servers?.nb1?.ready);
    await page.locator('tr.server-row[data-user="carol"][data-server="nb1"] .start-server').click();
    await until("nb1 ready again", async () => (await apiCall(page, "GET", "/users/carol")).body.servers?.nb1?.ready === true);
    await page.locator('tr.server-row[data-user="carol"][data-server="nb1"] .stop-server').click();
    await until("nb1 stopped again", async () => !(await apiCall(page, "GET", "/users/carol")).body.servers?.nb1?.ready);
    await page.locator('tr.server-row[data-user="carol"][data-server="nb1"] .delete-server').click();
    await until("nb1 deleted", async () => !("nb1" in ((await apiCall(page, "GET", "/users/carol?include_stopped_servers=1")).body.servers || {})));
    // The spawn page link of a stopped server goes to the options form.
    const spawnHref = await row(page, "carol").locator(".spawn-page").getAttribute("href");
    assert.match(spawnHref, /\/hub\/spawn\/carol$/);

    // Why a server is not running: kill it behind the hub's back; the row says so.
    await row(page, "carol").locator(".start-server").click();
    await until("carol ready", async () => (await apiCall(page, "GET", "/users/carol")).body.servers?.[""]?.ready === true);
    const state = (await apiCall(page, "GET", "/users/carol")).body.servers[""].state;
    assert.ok(state && state.pid, `a pid in the server state: ${JSON.stringify(state)}`);
    process.kill(state.pid, "SIGKILL");
    await until("the failure in carol's row", async () => /Last failure/.test(await row(page, "carol").locator(".failure").textContent()), 30000);
    await shot("failure");
    // The log viewer: the local spawner keeps none of its own and says where it is.
    await row(page, "carol").locator(".view-log").click();
    await until("the log dialog", async () => /hub's own log/.test(await page.textContent("#log-status")));
    assert.match(await page.textContent("#log-status"), /last failure/);
    await page.click("#log-dialog >> text=Close");

    // Edit User: rename and make admin; then delete another user.
    await page.fill("#user-search", "");
    await until("all users again", async () => (await page.locator("tr.user-row").count()) === 25);
    await page.fill("#user-search", "alice");
    await until("alice's row", () => row(page, "alice").count());
    await row(page, "alice").locator(".edit-user").click();
    await page.fill("#edit-username", "alicia");
    await page.check("#edit-admin");
    await page.click("#edit-apply");
    await until("alicia", async () => (await apiCall(page, "GET", "/users/alicia")).body?.admin === true);
    assert.equal((await apiCall(page, "GET", "/users/alice")).status, 404);
    await page.fill("#user-search", "bob");
    await until("bob's row", () => row(page, "bob").count());
    await row(page, "bob").locator(".edit-user").click();
    await page.click("#edit-delete");
    await until("bob deleted", async () => (await apiCall(page, "GET", "/users/bob")).status === 404);

    // Start All / Stop All act on every user the filter matches (two pages of 25 here).
    await page.fill("#user-search", "u");
    await until("27 matching u", async () => /of 27/.test(await page.textContent("#page-info")));
    await page.click("#start-all");
    await until("Start All finished", async () => /27 of 27 done/.test(await page.textContent("#bulk-progress")), 60000);
    await until("27 servers running", async () => {
      const list = await apiCall(page, "GET", "/users?state=ready&name_filter=u");
      return list.body.length === 27;
    }, 60000);
    assert.equal((await apiCall(page, "GET", "/users/admin")).body.server, null, "admin is not matched by 'u'");
    await page.selectOption("#state-filter", "ready");
    await until("ready filter", async () => /of 27/.test(await page.textContent("#page-info")));
    assert.match(page.url(), /state=ready/);
    await shot("start-all");
    await page.click("#stop-all");
    await until("Stop All finished", async () => /27 of 27 done/.test(await page.textContent("#bulk-progress")), 60000);
    await until("no server running", async () => (await apiCall(page, "GET", "/users?state=active")).body.length === 0, 60000);
    await page.selectOption("#state-filter", "");
    await page.fill("#user-search", "");

    // Groups: create, members, properties, delete.
    await page.click("#manage-groups");
    await page.fill("#new-group-name", "staff");
    await page.click("#create-group");
    await page.waitForSelector('#groups-table tr[data-group="staff"]');
    assert.equal((await apiCall(page, "GET", "/groups/staff")).status, 200);
    await page.click('#groups-table tr[data-group="staff"] .edit-group');
    await page.fill("#add-member", "carol");
    await page.click("#add-member-button");
    await page.fill("#add-member", "dana");
    await page.click("#add-member-button");
    await page.click("#add-property");
    await page.fill("#group-properties tr:last-child .prop-key", "course");
    await page.fill("#group-properties tr:last-child .prop-value", "101");
    await page.click("#group-apply");
    await until("staff's members and properties", async () => {
      const g = (await apiCall(page, "GET", "/groups/staff")).body;
      return g.users.sort().join(",") === "carol,dana" && g.properties.course === "101";
    });
    await page.waitForSelector('#groups-table tr[data-group="staff"]');
    await shot("groups");
    await page.click('#groups-table tr[data-group="staff"] .edit-group');
    await page.click('#group-members li:has-text("carol") button');
    await page.click("#group-properties tr:last-child button");
    await page.click("#group-apply");
    await until("carol removed, property gone", async () => {
      const g = (await apiCall(page, "GET", "/groups/staff")).body;
      return g.users.join(",") === "dana" && !("course" in g.properties);
    });
    await page.click('#groups-table tr[data-group="staff"] .edit-group');
    await page.click("#delete-group");
    await until("staff deleted", async () => (await apiCall(page, "GET", "/groups/staff")).status === 404);
    await page.click("#groups-dialog >> text=Close");

    // Services: the managed service runs, with its pid and restarts.
    await page.reload();
    await until("the service row", async () => /running \(pid \d+\)/.test(await page.textContent('#services-table tr[data-service="sleeper"] .service-state')));
    assert.equal(await page.textContent('#services-table tr[data-service="sleeper"] .restarts'), "0");
    // Times read as words, the exact time on hover.
    const time = page.locator('tr.user-row[data-user="carol"] td.last-activity time');
    assert.match(await time.textContent(), /ago|just now/);
    assert.match(await time.getAttribute("title"), /\d{4}-\d\d-\d\dT/);
    await shot("panel");

    // RBAC: a user with admin-ui + list:users sees the list and no control it may not use.
    const viewerContext = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
    const viewer = await viewerContext.newPage();
    viewer.on("pageerror", (e) => errors.push(String(e)));
    await login(viewer, hub, "viewer");
    await viewer.goto(`${hub.url}/hub/admin`);
    await viewer.waitForSelector('tr.user-row[data-user="carol"]');
    for (const selector of [".start-server", ".stop-server", ".edit-user", ".view-log", ".delete-server", ".access-server", ".spawn-page"]) {
      assert.equal(await viewer.locator(`tr.user-row:not([data-user="viewer"]) ${selector}`).count(), 0, `viewer sees no ${selector} for others`);
    }
    for (const id of ["#start-all", "#stop-all", "#shutdown-hub", "#add-users"]) {
      assert.equal(await viewer.isVisible(id), false, `viewer sees no ${id}: ${await viewer.evaluate(() => JSON.stringify(window.jhdata))}`);
    }
    // Their own row offers what `self` allows (their own server).
    assert.equal(await viewer.locator('tr.user-row[data-user="viewer"]').locator('.start-server, .stop-server').count(), 1);
    await viewer.screenshot({ path: join(SHOTS, "admin-viewer.png"), fullPage: true });
    console.log(`screenshot: ${join(SHOTS, "admin-viewer.png")}`);
    await viewerContext.close();

    assert.deepEqual(errors, [], "no script errors");

    // Shutdown Hub, last: the hub process ends.
    await page.click("#shutdown-hub");
    const exit = await Promise.race([hub.exited, new Promise((r) => setTimeout(() => r(null), 20000))]);
    assert.ok(exit, "the hub exits after Shutdown Hub");
  } catch (e) {
    await shot("failure-state").catch(() => {});
    console.log(hub.log());
    throw e;
  }
});

if (SPAWNER === "systemd") test("the admin panel under systemd: live memory against the limit, the journal, out of memory", { timeout: 300000 }, async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const hub = await startSystemdHub();
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close().catch(() => {});
    hub.child.kill("SIGTERM");
    await Promise.race([hub.exited, new Promise((r) => setTimeout(r, 10000))]);
  });
  const page = await (await browser.newContext({ viewport: { width: 1500, height: 1000 } })).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const shot = async (name) => {
    const path = join(SHOTS, `admin-systemd-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  };
  const server = (path) => fetch(`${hub.url}/user/alice/${path}`);
  try {
    await login(page, hub, "admin");
    await page.goto(`${hub.url}/hub/home`);
    assert.equal((await apiCall(page, "POST", "/users/alice")).status, 201);
    assert.ok((await apiCall(page, "POST", "/users/alice/server")).status < 300);
    await until("alice's server ready", async () => (await apiCall(page, "GET", "/users/alice")).body.servers?.[""]?.ready === true, 60000);
    await page.goto(`${hub.url}/hub/admin?name_filter=alice`);
    const memoryCell = row(page, "alice").locator("td.memory");
    await until("alice's memory next to her limit", async () => /iB \/ 96\.0 MiB|iB \/ 96 MiB/.test(await memoryCell.textContent()), 20000);
    const before = shownBytes(await memoryCell.textContent());
    assert.ok(before > 1024 ** 2, `a python process uses more than 1 MiB: ${await memoryCell.textContent()}`);
    // The hub's figures name the slice the servers share.
    await until("the slice's memory", async () => /iB/.test(await page.textContent('[data-figure="Memory in use"]')));
    // CPU: a share of alice's 0.5 CPUs, or "n/a" where systemd accounts no CPU (cgroup v1
    // with cpuacct apart from cpu); the API says which.
    const cpuSeconds = (await apiCall(page, "GET", "/usage?user=alice")).body.servers[0].cpu_seconds;
    const cpuCell = row(page, "alice").locator("td.cpu");
    if (cpuSeconds === null) {
      await until("CPU not available", async () => (await cpuCell.textContent()) === "n/a");
    } else {
      await until("CPU as a share of the quota", async () => /% of 0\.5 CPUs/.test(await cpuCell.textContent()), 20000);
    }

    // 40 MiB more inside the server: the row follows without a reload.
    assert.equal((await server("alloc?mb=40")).status, 200);
    await until("the memory figure to grow by 40 MiB", async () => shownBytes(await memoryCell.textContent()) >= before + 35 * 1024 ** 2, 20000);
    await shot("running");

    // Its journal: what it printed, then a new line while following.
    const said = `said-by-alice-${process.pid}`;
    assert.equal((await server(`say?line=${said}`)).status, 200);
    await row(page, "alice").locator(".view-log").click();
    await until("the line in the log dialog", async () => (await page.textContent("#log-lines")).includes(said), 20000);
    await page.check("#log-follow");
    await until("following", async () => (await page.textContent("#log-status")) === "Following", 20000);
    const later = `${said}-while-following`;
    assert.equal((await server(`say?line=${later}`)).status, 200);
    await until("the new line, live", async () => (await page.textContent("#log-lines")).includes(later), 20000);
    await shot("log");
    await page.click("#log-dialog >> text=Close");

    // Past its limit the kernel kills it; its row says so, with its last lines.
    await server("alloc?mb=200").catch(() => {});
    const failure = row(page, "alice").locator(".failure");
    await until("out of memory in alice's row", async () => /Last failure: .*out of memory/.test(await failure.textContent()), 60000);
    assert.ok((await failure.locator("pre").textContent()).includes(later), "the log tail in the row");
    await failure.locator("summary").click();
    await shot("out-of-memory");
    const overview = (await apiCall(page, "GET", "/usage?user=alice")).body;
    assert.match(overview.servers[0].last_failure.reason, /out of memory/);
    assert.deepEqual(errors, [], "no script errors");
  } catch (e) {
    await shot("failure-state").catch(() => {});
    console.log(hub.log());
    throw e;
  }
});
