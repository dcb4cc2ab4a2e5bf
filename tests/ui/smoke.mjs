// Each main page loads without console errors, and the keyboard alone reaches the main
// controls (the run fails on any console error, uncaught exception or failed request).
import { assert, need, run, waitText } from "./lib.mjs";

const PRODUCT_ID = need("PRODUCT_ID");

// Presses Tab up to `limit` times and returns a description of each element focused.
async function tabThrough(page, limit) {
  const seen = [];
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press("Tab");
    seen.push(
      await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return "";
        const labelled = el.id && document.querySelector(`label[for="${el.id}"]`);
        const name = el.getAttribute("aria-label") || (labelled && labelled.textContent) || el.textContent || el.getAttribute("name") || "";
        const outline = getComputedStyle(el).outlineStyle;
        return `${el.tagName.toLowerCase()}:${name.trim().replace(/\s+/g, " ")}:${outline}`;
      }),
    );
  }
  return seen;
}

function reached(seen, tag, name) {
  return seen.find((s) => s.startsWith(`${tag}:${name}`));
}

await run("main pages load cleanly and are keyboard operable", async ({ page }) => {
  const pages = [
    ["/shop/", "Catalog"],
    [`/shop/#/product/${PRODUCT_ID}`, "Stoneware Coffee Mug"],
    ["/shop/#/cart", "Your cart"],
    ["/shop/#/signin", "Sign in"],
    ["/shop/#/signup", "Create an account"],
    ["/shop/#/search?q=nothing-matches-this", "Results for"],
    ["/admin/", "Console sign-in"],
  ];
  for (const [path, heading] of pages) {
    await page.goto(path);
    await waitText(page.locator("main h1"), heading);
  }

  // The storefront: skip link first, then the navigation, the search form and the products.
  await page.goto("/shop/");
  await page.getByRole("list", { name: "Products" }).waitFor();
  let seen = await tabThrough(page, 16);
  assert(seen[0].startsWith("a:Skip to content"), `the skip link comes first: ${JSON.stringify(seen)}`);
  for (const [tag, name] of [
    ["a", "Catalog"],
    ["a", "Cart"],
    ["a", "Orders"],
    ["a", "Sign in"],
    ["input", "Search"],
    ["select", "Category"],
    ["button", "Search"],
  ]) {
    assert(reached(seen, tag, name), `Tab reaches ${tag} ${name}: ${JSON.stringify(seen)}`);
  }
  // Focus is visible: the focused control has an outline.
  const search = reached(seen, "input", "Search");
  assert(!search.endsWith(":none"), `the focused search box shows focus: ${search}`);

  // Searching and adding to the cart work from the keyboard alone.
  await page.getByRole("searchbox", { name: "Search" }).focus();
  await page.keyboard.type("mug");
  await page.keyboard.press("Enter");
  await waitText(page.locator("main h1"), "Results for “mug”");
  await page.getByRole("button", { name: "Add Stoneware Coffee Mug to cart" }).focus();
  await page.keyboard.press("Enter");
  await waitText(page.locator("#status"), "Added 1 × Stoneware Coffee Mug");
  await waitText(page.locator("#cart-count"), "1");

  // The skip link moves focus to the content (on a fresh load, where focus starts at the top).
  await page.goto("about:blank");
  await page.goto("/shop/#/cart");
  await waitText(page.locator("main h1"), "Your cart");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  const target = await page.evaluate(() => location.hash + "|" + (document.activeElement?.closest("main") ? "in main" : "outside"));
  assert(target.includes("in main") || target.includes("#main"), `the skip link goes to the content: ${target}`);

  // The console's sign-in form.
  await page.goto("/admin/");
  await waitText(page.locator("main h1"), "Console sign-in");
  seen = await tabThrough(page, 12);
  for (const [tag, name] of [
    ["a", "Overview"],
    ["input", "Email"],
    ["input", "Password"],
    ["button", "Sign in"],
  ]) {
    assert(reached(seen, tag, name), `Tab reaches ${tag} ${name} in the console: ${JSON.stringify(seen)}`);
  }

  // A narrow screen keeps the storefront usable: no horizontal scrolling.
  await page.setViewportSize({ width: 390, height: 800 });
  await page.goto("/shop/");
  await page.getByRole("list", { name: "Products" }).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert(overflow <= 0, `no horizontal scroll on a phone-sized screen (${overflow}px too wide)`);
});
