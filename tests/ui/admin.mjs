// An admin signs in to the console, refunds a paid order with its items returned to stock, and
// sees the stock level, its history and the analytics figures change.
import { assert, need, run, shot, waitText, waitTextReloading } from "./lib.mjs";

const ADMIN_EMAIL = need("ADMIN_EMAIL");
const ADMIN_PASSWORD = need("ADMIN_PASSWORD");
const ORDER_ID = need("ORDER_ID");
const ORDER_SKU = need("ORDER_SKU");
const ORDER_UNITS = Number(need("ORDER_UNITS"));
const ORDER_TOTAL = need("ORDER_TOTAL"); // As the console writes it, e.g. "$25.00".

// "$1,234.50" -> 123450
function cents(text) {
  return Math.round(Number(text.replace(/[^0-9.]/g, "")) * 100);
}

await run("an admin refunds an order and sees stock and analytics change", async ({ page, allowStatus }) => {
  await page.goto("/admin/");
  await waitText(page.locator("main h1"), "Console sign-in");
  await page.getByLabel("Email").fill(ADMIN_EMAIL);
  await page.getByLabel("Password").fill(ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();

  // Overview: every target's health; traffic and queues when the gateway offers them.
  await waitText(page.locator("main h1"), "Overview");
  const targets = page.getByRole("list", { name: "Targets" }).getByRole("listitem");
  await waitText(targets.first(), "Serving");
  const health = await targets.allInnerTexts();
  for (const service of ["user", "product", "cart", "order", "payment", "delivery"]) {
    assert(health.some((t) => t.startsWith(service) && t.includes("Serving")), `${service} is serving: ${JSON.stringify(health)}`);
  }
  // (Its screenshot, with rates, comes from operations.mjs.)
  await waitText(page.locator("main"), /Requests and errors/);

  // The stock of the ordered SKU before the refund.
  await page.goto(`/admin/#/inventory/${ORDER_SKU}`);
  await waitText(page.locator("main h1"), `Stock of ${ORDER_SKU}`);
  const before = Number(await page.locator("#on-hand").innerText());

  // The analytics have seen the paid order, and nothing refunded yet.
  await page.goto("/admin/#/analytics");
  await waitText(page.locator("main h1"), "Analytics");
  await waitTextReloading(page, page.locator("#a-paid"), /^[1-9]/, 30000);
  const refundedBefore = cents(await page.locator("#a-refunded").innerText());

  // Orders: the paid order is listed; refund it in full, items back to stock.
  await page.getByRole("link", { name: "Orders", exact: true }).click();
  await waitText(page.locator("main h1"), "Orders");
  const row = page.getByRole("row").filter({ hasText: `Order ${ORDER_ID.slice(0, 8)}` });
  await waitText(row, /Paid|Shipped|Completed/);
  await shot(page, "admin-orders");
  await row.getByRole("link").click();
  await waitText(page.locator("main h1"), `Order ${ORDER_ID.slice(0, 8)}`);
  await page.getByLabel("Note").fill("damaged in transit");
  await page.getByLabel("Return the items to stock").check();
  await page.getByRole("button", { name: "Refund", exact: true }).click();
  await waitText(page.locator("#status"), `Refunded ${ORDER_TOTAL} in all. The items are back in stock.`);
  await waitText(page.locator("#refunded"), ORDER_TOTAL);
  await waitText(page.locator("#order-status"), "Refunded");
  await waitText(page.getByRole("table", { name: "Status history" }), "Refunded");

  // Stock: back by the order's units, with the return in the history.
  await page.getByRole("link", { name: ORDER_SKU }).click();
  await waitText(page.locator("main h1"), `Stock of ${ORDER_SKU}`);
  await waitText(page.locator("#on-hand"), String(before + ORDER_UNITS));
  const history = page.getByRole("table", { name: "Stock movements" }).locator("tbody tr");
  await waitText(history.first(), "Return");
  await waitText(history.first(), `+${ORDER_UNITS}`);
  await shot(page, "admin-inventory");

  // Analytics: the refund shows up once its event is consumed.
  await page.getByRole("link", { name: "Analytics" }).click();
  await waitText(page.locator("main h1"), "Analytics");
  const refundedAfter = (refundedBefore + cents(ORDER_TOTAL)) / 100;
  const expected = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" }).format(refundedAfter);
  await waitTextReloading(page, page.locator("#a-refunded"), expected, 30000);
  await waitText(page.getByRole("table", { name: "Orders by status" }), "Refunded");
  await shot(page, "admin-analytics");

  // The other pages answer, including those whose endpoints a gateway may not have yet.
  for (const [hash, heading] of [
    ["#/events", "Queues and dead letters"],
    ["#/faults", "Fault injection"],
    ["#/inventory", "Inventory"],
  ]) {
    await page.goto(`/admin/${hash}`);
    await waitText(page.locator("main h1"), heading);
    const text = await page.locator("main").innerText();
    assert(!text.includes("Something went wrong"), `${hash} renders: ${text}`);
  }
  await waitText(page.locator("main"), ORDER_SKU);

  // This mesh runs without fault injection: the console says so, and a drill is refused with
  // the gateway's reason.
  allowStatus("/api/admin/faults", 409);
  await page.getByRole("link", { name: "Fault injection" }).click();
  await waitText(page.locator("main h1"), "Fault injection");
  await waitText(page.locator("main"), "Fault injection is disabled on this installation");
  await page.getByLabel("Service").selectOption("product");
  await page.getByLabel("Method (or *)").fill("GetProduct");
  await page.getByLabel("Error rate (%)").fill("100");
  await page.getByRole("button", { name: "Set fault" }).click();
  await waitText(page.getByRole("alert"), "fault injection is disabled: start every process of the mesh with FAULT_INJECTION_ENABLED=true");
  await waitText(page.locator("main"), "No faults");
});
