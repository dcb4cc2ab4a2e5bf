// A declined test card shows the error and leaves the cart as it was; another card then pays.
import { PREFIX, addToCart, assert, fillCheckout, run, search, shot, signUp, waitText } from "./lib.mjs";

await run("a declined card shows the error and keeps the cart", async ({ page }) => {
  await signUp(page, `${PREFIX}-grace@example.com`, "Grace Hopper");
  await search(page, "lamp");
  await addToCart(page, "Walnut Desk Lamp");
  await search(page, "towel");
  await addToCart(page, "Linen Tea Towel");
  await waitText(page.locator("#cart-count"), "2");

  await page.goto("/shop/#/checkout");
  await waitText(page.locator("main h1"), "Checkout");
  await fillCheckout(page, "4000 0000 0000 0002");
  await page.getByRole("button", { name: /^Pay/ }).click();

  const alert = page.locator("#checkout-error");
  await waitText(alert, "Your card was declined.");
  await waitText(alert, "your cart is kept");
  assert((await page.locator("main h1").innerText()) === "Checkout", "the shopper stays on the checkout");
  const summary = page.getByRole("table", { name: "Cart" }).locator("tbody tr");
  assert((await summary.count()) === 2, "both lines still in the order summary");
  await waitText(page.locator("#cart-count"), "2");
  await shot(page, "checkout-declined");

  // The cart itself still holds both products.
  await page.getByRole("link", { name: /^Cart/ }).click();
  await waitText(page.locator("main h1"), "Your cart");
  const lines = await page.getByRole("table", { name: "Cart" }).locator("tbody tr td:first-child").allInnerTexts();
  assert(lines.length === 2 && lines.some((l) => l.includes("Walnut Desk Lamp")) && lines.some((l) => l.includes("Linen Tea Towel")), `cart lines ${JSON.stringify(lines)}`);
  await waitText(page.locator("#cart-total"), "$57.99");

  // Another card goes through.
  await page.getByRole("link", { name: "Go to checkout" }).click();
  await waitText(page.locator("main h1"), "Checkout");
  await fillCheckout(page, "4242424242424242");
  await page.getByRole("button", { name: /^Pay/ }).click();
  await waitText(page.locator("#order-status"), /Paid|Shipped|Completed/);
  await waitText(page.locator("#cart-count"), "0");
});
