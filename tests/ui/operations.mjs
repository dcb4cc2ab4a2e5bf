// An admin watches the mesh from the console: request and error rates per route after some
// traffic, every consumer's queues; runs a fault drill that a shopper's product page feels until
// the fault is cleared; and re-drives a dead letter until none is parked.
import { BASE_URL, assert, need, run, shot, waitText, waitTextReloading } from "./lib.mjs";

const ADMIN_EMAIL = need("ADMIN_EMAIL");
const ADMIN_PASSWORD = need("ADMIN_PASSWORD");
const PRODUCT_ID = need("PRODUCT_ID");
const PRODUCT_NAME = need("PRODUCT_NAME");
const CONSUMERS = need("CONSUMERS").split(",");
const DEAD_EVENT_ID = need("DEAD_EVENT_ID");

// Requests made outside the browser, as other clients of the edge would.
async function get(path, token) {
  const response = await fetch(new URL(path, BASE_URL), { headers: { accept: "application/json", authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

async function token() {
  const response = await fetch(new URL("/api/auth/login", BASE_URL), {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
  });
  assert(response.ok, `login: ${response.status}`);
  return (await response.json()).access_token;
}

// The cells of the row of `name` (its first cell) in the table captioned `caption`.
async function rowCells(page, caption, name) {
  const row = page.getByRole("table", { name: caption }).getByRole("row").filter({ has: page.getByRole("cell", { name, exact: true }) });
  await row.first().waitFor();
  return (await row.first().getByRole("cell").allInnerTexts()).map((t) => t.trim());
}

async function refreshFigures(page) {
  await page.getByRole("button", { name: "Refresh now" }).click();
  await waitText(page.locator("#status"), "Figures refreshed.");
}

await run("an admin reads rates and queues, runs a fault drill and re-drives a dead letter", async ({ page, context, allowStatus }) => {
  await page.goto("/admin/");
  await waitText(page.locator("main h1"), "Console sign-in");
  await page.getByLabel("Email").fill(ADMIN_EMAIL);
  await page.getByLabel("Password").fill(ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitText(page.locator("main h1"), "Overview");

  // Queues: one row per consumer of the mesh, each read by its consumer.
  await page.getByRole("table", { name: "Queue depths" }).waitFor();
  for (const consumer of CONSUMERS) {
    const cells = await rowCells(page, "Queue depths", consumer);
    assert(cells[1].endsWith(consumer), `${consumer} has its queue: ${JSON.stringify(cells)}`);
    assert(Number(cells[3]) >= 1, `${consumer} is read by a consumer: ${JSON.stringify(cells)}`);
  }
  const listed = await page.getByRole("table", { name: "Queue depths" }).locator("tbody tr").count();
  assert(listed === CONSUMERS.length, `${listed} queue rows for ${CONSUMERS.length} consumers`);

  // Traffic between two readings: six product reads and three reads of a product that does not
  // exist, a third of the route's requests answered 404. Credentials keep the edge's
  // micro-cache out of the way, so every request reaches the gateway.
  const admin = await token();
  await refreshFigures(page);
  const missing = crypto.randomUUID();
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 2; j++) assert((await get(`/api/products/${PRODUCT_ID}`, admin)) === 200, "the product reads");
    assert((await get(`/api/products/${missing}`, admin)) === 404, "a missing product is 404");
  }
  await refreshFigures(page);
  await waitText(page.locator("#traffic-window"), /rates and error shares over the last \d+\.\d s/);
  const [, total, perSecond, errorsPerSecond, share4xx, share5xx] = await rowCells(page, "HTTP requests by route", "GET /api/products/{id}");
  assert(Number(total) >= 9, `the route's requests since the start: ${total}`);
  const rate = Number(perSecond.replace("/s", ""));
  const errors = Number(errorsPerSecond.replace("/s", ""));
  assert(rate > 0 && errors > 0, `non-zero rates: ${perSecond}, ${errorsPerSecond}`);
  assert(Math.abs(errors / rate - 1 / 3) < 0.02, `a third of the requests are errors: ${errorsPerSecond} of ${perSecond}`);
  assert(share4xx === "33.3%" && share5xx === "0.0%", `error shares: 4xx ${share4xx}, 5xx ${share5xx}`);
  await shot(page, "admin-overview");

  // The drill: every GetProduct fails, set from the console's form.
  await page.getByRole("link", { name: "Fault injection" }).click();
  await waitText(page.locator("main h1"), "Fault injection");
  const current = await page.getByRole("link", { name: "Fault injection" }).getAttribute("aria-current");
  assert(current === "page", `the navigation marks the page: ${current}`);
  assert(await page.evaluate(() => document.activeElement === document.querySelector("main h1")), "focus moves to the new heading");
  await waitText(page.locator("main"), "Fault injection is enabled");
  await waitText(page.locator("main"), "No faults");
  await page.getByLabel("Service").selectOption("product");
  await page.getByLabel("Method (or *)").fill("GetProduct");
  await page.getByLabel("Error rate (%)").fill("100");
  await page.getByRole("button", { name: "Set fault" }).click();
  await waitText(page.locator("#status"), "Fault set: product GetProduct: 100% of calls fail.");
  const rule = await rowCells(page, "Active faults", "product");
  assert(rule[1] === "GetProduct" && rule[2] === "0 ms" && rule[3] === "100%", `the rule in force: ${JSON.stringify(rule)}`);
  await shot(page, "admin-faults");

  // A shopper's product page fails clearly meanwhile (once the edge's one-second copy of the
  // page is gone), with a way to try again.
  const shop = await context.newPage();
  allowStatus(`/api/products/${PRODUCT_ID}`, 503);
  await shop.goto(`/shop/#/product/${PRODUCT_ID}`);
  await waitTextReloading(shop, shop.locator("main h1"), "This page is unavailable right now");
  await waitText(shop.getByRole("alert"), "unavailable");
  const tryAgain = shop.getByRole("button", { name: "Try again" });
  await tryAgain.click();
  await waitText(shop.locator("main h1"), "This page is unavailable right now");

  // Cleared from the console, the page works again (once the caller's circuit breaker lets
  // calls through: trying again until it does).
  await page.bringToFront();
  await page.getByRole("button", { name: "Remove the fault of product GetProduct" }).click();
  await waitText(page.locator("#status"), "Fault removed: product GetProduct");
  await waitText(page.locator("main"), "No faults");
  assert(await page.evaluate(() => document.activeElement?.id === "active-h"), "focus goes on from the list's heading");
  await shop.bringToFront();
  const until = Date.now() + 30000;
  for (;;) {
    const heading = (await shop.locator("main h1").innerText()).trim();
    if (heading === PRODUCT_NAME) break;
    assert(Date.now() < until, `the product page is back: ${heading}`);
    if (await tryAgain.isVisible()) await tryAgain.click();
    await shop.waitForTimeout(500);
  }
  await shop.getByRole("button", { name: "Add to cart" }).waitFor();
  await shop.close();

  // A dead letter: listed with its queue's count, re-driven, and gone.
  await page.getByRole("link", { name: "Queues" }).click();
  await waitText(page.locator("main h1"), "Queues and dead letters");
  await waitText(page.getByRole("region", { name: "Dead letters of notification" }), "notification: 1 parked");
  assert((await rowCells(page, "Queue depths", "notification"))[5] === "1", "the queue counts the dead letter");
  // The same event is parked for another consumer too (fulfilment has no shipment for it):
  // only the notification consumer's copy is re-driven.
  const redrive = page.getByRole("button", { name: `Re-drive order.paid ${DEAD_EVENT_ID} for notification` });
  await redrive.click();
  await waitText(page.locator("#status"), `Re-drove order.paid ${DEAD_EVENT_ID.slice(0, 13)} to notification`);
  await waitText(page.getByRole("region", { name: "Dead letters of notification" }), "notification: 0 parked");
  assert((await redrive.count()) === 0, "the re-driven event is no longer listed");
  assert(await page.evaluate(() => document.activeElement?.id === "dead-h"), "focus goes on from the section's heading");
  const until2 = Date.now() + 30000;
  for (;;) {
    const cells = await rowCells(page, "Queue depths", "notification");
    if (cells[5] === "0") break;
    assert(Date.now() < until2, `the dead letters count drops: ${JSON.stringify(cells)}`);
    await refreshFigures(page);
  }
});
