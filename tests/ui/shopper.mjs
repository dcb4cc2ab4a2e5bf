// A shopper signs up, searches, adds two products, checks out with the test card that is
// accepted and watches the order reach COMPLETED on its page (the live tracking stream).
import { PREFIX, addToCart, assert, fillCheckout, run, search, shot, signUp, waitText } from "./lib.mjs";

await run("shopper checks out and follows the order to completed", async ({ page }) => {
  await page.goto("/shop/");
  await waitText(page.locator("main h1"), "Catalog");
  await page.getByRole("list", { name: "Products" }).waitFor();
  await shot(page, "catalog");

  const email = `${PREFIX}-ada@example.com`;
  await signUp(page, email, "Ada Lovelace");

  await search(page, "coffee");
  const results = page.getByRole("list", { name: "Products" }).getByRole("listitem");
  await waitText(results.first(), "Coffee");
  const names = await results.locator("h2").allInnerTexts();
  assert(names.length === 2, `two coffee products found, got ${JSON.stringify(names)}`);
  assert(names.includes("Stoneware Coffee Mug") && names.includes("Enamel Coffee Pot"), `the coffee products, got ${JSON.stringify(names)}`);

  // One from its product page, one from the results.
  await page.getByRole("link", { name: "Stoneware Coffee Mug" }).click();
  await waitText(page.locator("main h1"), "Stoneware Coffee Mug");
  await waitText(page.locator("main"), "$12.50");
  await shot(page, "product");
  await page.getByRole("button", { name: "Add to cart" }).click();
  await waitText(page.locator("#status"), "Added 1 × Stoneware Coffee Mug");
  await page.goBack();
  await waitText(page.locator("main h1"), "Results for “coffee”");
  await addToCart(page, "Enamel Coffee Pot");
  await waitText(page.locator("#cart-count"), "2");

  await page.getByRole("link", { name: /^Cart/ }).click();
  await waitText(page.locator("main h1"), "Your cart");
  const lines = page.getByRole("table", { name: "Cart" }).locator("tbody tr");
  assert((await lines.count()) === 2, "two lines in the cart");
  await waitText(page.locator("#cart-total"), "$46.50");
  await shot(page, "cart");

  await page.getByRole("link", { name: "Go to checkout" }).click();
  await waitText(page.locator("main h1"), "Checkout");
  assert((await page.getByLabel("Recipient").inputValue()) === "Ada Lovelace", "the recipient is the account's name");
  await fillCheckout(page, "4242 4242 4242 4242");
  await page.getByRole("button", { name: /^Pay/ }).click();

  await waitText(page.locator("main h1"), /^Order [0-9a-f]{8}$/);
  const orderUrl = page.url();
  await waitText(page.locator("#cart-count"), "0");
  // The courier of the test mesh moves fast: the whole delivery takes a few seconds.
  await waitText(page.locator("#tracking"), "Delivered", 60000);
  await waitText(page.locator("#order-status"), "Completed", 60000);
  const tracking = await page.locator("#tracking li").allInnerTexts();

  assert(tracking.length >= 4, `every tracking step shown: ${JSON.stringify(tracking)}`);
  assert(tracking[0].startsWith("Label created") && tracking[tracking.length - 1].startsWith("Delivered"), `tracking from label to delivery: ${JSON.stringify(tracking)}`);
  const history = await page.getByRole("list", { name: "Order history" }).locator("li strong").allInnerTexts();
  assert(JSON.stringify(history) === JSON.stringify(["Created", "Paid", "Shipped", "Completed"]), `order history ${JSON.stringify(history)}`);
  await shot(page, "order-tracking");

  // The order history lists it, and opening it again shows it completed.
  await page.getByRole("link", { name: "Orders", exact: true }).click();
  await waitText(page.locator("main h1"), "Your orders");
  const rows = page.getByRole("table", { name: "Orders" }).locator("tbody tr");
  assert((await rows.count()) === 1, "one order listed");
  await waitText(rows.first(), "Completed");
  await rows.first().getByRole("link").click();
  assert(page.url() === orderUrl, "the listed order is the one placed");
  await waitText(page.locator("#order-status"), "Completed");

  // The paid order told the shopper so in the notifications.
  await page.getByRole("link", { name: "Notifications" }).click();
  await waitText(page.locator("main h1"), "Notifications");
});
