// What every browser test here needs: free ports, waiting for a condition, Debian's Chromium,
// and the REST API as a logged-in hub page calls it.
import net from "node:net";
import { chromium } from "playwright-core";

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

// Polls `check` until it returns something truthy; the error names `what` and the last answer
// (or exception), which is what a failed run needs to be read.
export async function until(what, check, ms = 20000) {
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

// Until `url` answers 2xx.
export async function waitFor(url, ms) {
  await until(url, async () => (await fetch(url)).ok, ms);
}

// Headless and quiet: no first-run UI, no background fetches or QUIC to the outside, which
// the machines running these tests cannot reach.
export function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// The REST API as the logged-in page sees it (cookie + XSRF token, through the page's own
// `hubApi`), for checks and set-up.
export async function apiCall(page, method, path, body) {
  return page.evaluate(async ([method, path, body]) => {
    const r = await hubApi(method, path, body === null ? undefined : body);
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }, [method, path, body ?? null]);
}
