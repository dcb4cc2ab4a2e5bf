// Shared by the specs: a headless Debian Chromium driven by playwright-core, pages that fail
// on any console error, uncaught exception or failed request, screenshots, small assertions.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const BASE_URL = need("BASE_URL");
export const PREFIX = process.env.UI_PREFIX || `ui${Date.now().toString(36)}`;
export const PASSWORD = "Analytical-Engine-1843";
export const TIMEOUT = Number(process.env.UI_TIMEOUT_MS || 20000);
// Admin endpoints a gateway may not offer yet: the console shows "not available" for their 404,
// which Chromium also logs as a failed resource load. Only that answer of only these is allowed.
const OPTIONAL = new Set(["/api/admin/metrics", "/api/admin/queues", "/api/admin/faults"]);
const SCREENSHOTS = process.env.UI_SCREENSHOTS_DIR || join(tmpdir(), "shopmesh-ui-screenshots");

export function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} must be set`);
    process.exit(2);
  }
  return value;
}

// Runs body(browser helpers) and exits non-zero on any failure, after printing what the page
// said. The browser gets a fresh profile each run.
export async function run(name, body) {
  const profile = mkdtempSync(join(tmpdir(), "shopmesh-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 800 },
    // Money and dates as the specs expect them, whatever the machine.
    locale: "en-US",
    timezoneId: "UTC",
    baseURL: BASE_URL,
  });
  context.setDefaultTimeout(TIMEOUT);
  const problems = [];
  const log = [];
  // Error answers a spec provokes on purpose ("PUT /api/admin/faults" refused with 409 …): the
  // console error Chromium logs for exactly those is expected; any other is still a problem.
  const allowed = new Set();
  const allowStatus = (path, status) => allowed.add(`${path} ${status}`);
  const watch = (page) => {
    page.on("console", (msg) => {
      log.push(`[${msg.type()}] ${msg.text()}`);
      const where = msg.location()?.url ? new URL(msg.location().url, BASE_URL).pathname : "";
      if (msg.type() === "error" && OPTIONAL.has(where) && msg.text().includes("status of 404")) return;
      const status = msg.text().match(/status of (\d{3})/)?.[1];
      if (msg.type() === "error" && status && allowed.has(`${where} ${status}`)) return;
      if (msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`uncaught exception on ${page.url()}: ${err.message}`));
    page.on("requestfailed", (req) => {
      // A tracking stream cut off by leaving the page is not a failure.
      if (req.failure()?.errorText === "net::ERR_ABORTED") return;
      problems.push(`request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`);
    });
  };
  context.on("page", watch);
  const page = context.pages()[0] || (await context.newPage());
  watch(page);
  const started = Date.now();
  let failed = null;
  try {
    await body({ page, context, problems, allowStatus });
    if (problems.length) throw new Error(`the pages reported problems:\n  ${problems.join("\n  ")}`);
  } catch (err) {
    failed = err;
  }
  if (failed) {
    try {
      await shot(page, `FAILED-${name}`);
    } catch {
      // The page may be gone.
    }
    console.error(`FAIL ${name} after ${Date.now() - started} ms at ${page.url()}`);
    console.error(failed.stack || failed);
    console.error(`browser console:\n  ${log.join("\n  ")}`);
    try {
      console.error(`visible text:\n${(await page.locator("body").innerText()).slice(0, 4000)}`);
    } catch {
      // Nothing to show.
    }
  } else {
    console.log(`ok ${name} (${Date.now() - started} ms)`);
  }
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(failed ? 1 : 0);
}

export async function shot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

// Waits until the text of the locator matches (a string it contains, or a RegExp).
export async function waitText(locator, expected, timeout = TIMEOUT) {
  const until = Date.now() + timeout;
  let last = "";
  for (;;) {
    try {
      last = (await locator.first().innerText({ timeout: 1000 })).trim();
      if (typeof expected === "string" ? last.includes(expected) : expected.test(last)) return last;
    } catch {
      // Not there yet.
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${expected} in ${locator}; last text: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

// Reloads the page (reload) until the locator's text matches: for figures that follow events.
export async function waitTextReloading(page, locator, expected, timeout = TIMEOUT) {
  const until = Date.now() + timeout;
  for (;;) {
    try {
      return await waitText(locator, expected, 1500);
    } catch (err) {
      if (Date.now() > until) throw err;
      await page.reload();
    }
  }
}

// A shopper account made through the storefront's own sign-up form.
export async function signUp(page, email, name) {
  await page.goto("/shop/#/signup");
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await waitText(page.locator("#who"), `Signed in as ${email}`);
}

// The storefront's catalog search form.
export async function search(page, words) {
  await page.goto("/shop/#/");
  await page.getByRole("searchbox", { name: "Search" }).fill(words);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await waitText(page.locator("main h1"), `Results for “${words}”`);
}

export async function addToCart(page, productName) {
  await page.getByRole("button", { name: `Add ${productName} to cart` }).click();
  await waitText(page.locator("#status"), `Added 1 × ${productName}`);
}

export async function fillCheckout(page, card) {
  await page.getByLabel("Address line 1").fill("12 St James's Square");
  await page.getByLabel("City").fill("London");
  await page.getByLabel("Postal code").fill("SW1Y 4JH");
  await page.getByLabel("Card number").fill(card);
  await page.getByLabel("CVC").fill("123");
}
