// The storefront: a hash-routed single page over the REST edge.
import { Api, ApiError, Session, money, when } from "/common/api.js";
import { announce, field, formData, h, installSkipLink, replace } from "/common/dom.js";
import { route } from "/common/router.js";

const session = new Session("shop");
const api = new Api(session);
const view = document.getElementById("view");
const PAGE_SIZE = 12;

// Views that need an account send the shopper to sign in first and come back afterwards.
const routes = [
  // A view gets its pattern's groups, then the visit: the catalog has none here.
  [/^#?\/?$/, () => catalog(), { nav: "catalog" }],
  [/^#\/search(\?.*)?$/, catalog],
  [/^#\/product\/([^/?]+)$/, product, { nav: "catalog" }],
  [/^#\/cart$/, cart],
  [/^#\/checkout$/, checkout, { account: true, nav: "cart" }],
  [/^#\/signin$/, signIn],
  [/^#\/signup$/, signUp],
  [/^#\/orders$/, orders, { account: true }],
  [/^#\/orders\/([^/?]+)$/, order, { account: true, nav: "orders" }],
  [/^#\/notifications$/, notifications, { account: true }],
];

let returnTo = "#/";
let rerender = () => {}; // Renders the current hash again (set once routing starts, below).

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    session.tokens = null;
    returnTo = location.hash;
    location.hash = "#/signin";
    announce("Please sign in again.", "error");
    return;
  }
  const message = err instanceof ApiError ? err.describe() : "The shop could not be reached. Try again in a moment.";
  // A service that is down for a moment (503): the same page may well work on a second try.
  const passing = err instanceof ApiError && err.status === 503;
  replace(
    view,
    h("h1", {}, passing ? "This page is unavailable right now" : "Something went wrong"),
    h("p", { class: "alert", role: "alert" }, message),
    passing ? h("p", {}, h("button", { type: "button", onclick: () => rerender() }, "Try again")) : null,
  );
}

function renderWho() {
  const who = document.getElementById("who");
  if (session.signedIn) {
    const email = session.tokens.email || "your account";
    replace(
      who,
      h("span", {}, `Signed in as ${email}`),
      h("button", { type: "button", onclick: signOut }, "Sign out"),
    );
  } else {
    replace(who, h("a", { href: "#/signin", class: "button" }, "Sign in"), h("a", { href: "#/signup", class: "button primary" }, "Create account"));
  }
}

async function signOut() {
  await api.logout().catch(() => {});
  announce("Signed out.", "ok");
  renderWho();
  await refreshCartCount();
  location.hash = "#/";
}

async function refreshCartCount(known) {
  const badge = document.getElementById("cart-count");
  try {
    const c = known || (await api.get("/api/cart", { cart: true }));
    badge.textContent = String(c.item_count);
    badge.setAttribute("aria-label", `${c.item_count} items in cart`);
  } catch {
    badge.textContent = "0";
  }
}

// ---- catalog -------------------------------------------------------------------------------

let categoriesCache = null;
async function categories() {
  if (!categoriesCache) {
    try {
      categoriesCache = (await api.get("/api/categories", { auth: false })).items || [];
    } catch {
      categoriesCache = [];
    }
  }
  return categoriesCache;
}

function dollarsToMinor(text) {
  if (text === undefined || text === null || String(text).trim() === "") return null;
  const n = Number(text);
  return Number.isFinite(n) && n >= 0 ? Math.round(n * 100) : null;
}

function initials(name) {
  return (name || "?").trim().slice(0, 1).toUpperCase();
}

async function catalog(query) {
  const params = new URLSearchParams((query || "").replace(/^\?/, ""));
  const filters = {
    q: params.get("q") || "",
    category_id: params.get("category_id") || "",
    min: params.get("min") || "",
    max: params.get("max") || "",
    in_stock: params.get("in_stock") === "1",
    sort: params.get("sort") || "",
  };
  const cursors = (params.get("trail") || "").split(",").filter(Boolean);
  const cursor = params.get("cursor") || "";

  const search = new URLSearchParams();
  if (filters.q) search.set("q", filters.q);
  if (filters.category_id) search.set("category_id", filters.category_id);
  const min = dollarsToMinor(filters.min);
  const max = dollarsToMinor(filters.max);
  if (min !== null) search.set("min_price", String(min));
  if (max !== null) search.set("max_price", String(max));
  if (min !== null || max !== null) search.set("currency", "USD");
  if (filters.in_stock) search.set("in_stock", "true");
  search.set("sort", filters.sort || (filters.q ? "relevance" : "default"));
  search.set("limit", String(PAGE_SIZE));
  if (cursor) search.set("cursor", cursor);

  const [page, cats] = await Promise.all([api.get(`/api/products?${search}`, { auth: false }), categories()]);

  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Search the catalog", onsubmit: onSearch },
    field("Search", "q", { type: "search", value: filters.q, placeholder: "Name, description or SKU" }),
    field("Category", "category_id", {
      type: "select",
      value: filters.category_id,
      options: [["", "All categories"], ...cats.map((c) => [c.id, c.name])],
    }),
    field("Min price ($)", "min", { type: "number", value: filters.min, min: "0", step: "0.01", inputmode: "decimal" }),
    field("Max price ($)", "max", { type: "number", value: filters.max, min: "0", step: "0.01", inputmode: "decimal" }),
    field("Sort by", "sort", {
      type: "select",
      value: filters.sort,
      options: [
        ["", filters.q ? "Relevance" : "Featured"],
        ["price_asc", "Price: low to high"],
        ["price_desc", "Price: high to low"],
        ["newest", "Newest"],
      ],
    }),
    h(
      "div",
      { class: "actions" },
      h("label", { class: "field check" }, h("input", { type: "checkbox", name: "in_stock", value: "1", checked: filters.in_stock }), "In stock only"),
      h("button", { type: "submit", class: "primary" }, "Search"),
    ),
  );

  const items = page.items || [];
  const heading = filters.q ? `Results for “${filters.q}”` : "Catalog";
  const list = items.length
    ? h("ul", { class: "grid", "aria-label": "Products" }, items.map(productCard))
    : h("p", { class: "notice" }, "No products match. Try other words or fewer filters.");

  const base = new URLSearchParams(params);
  base.delete("cursor");
  base.delete("trail");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  if (cursor) {
    const back = new URLSearchParams(base);
    const trail = cursors.slice(0, -1);
    const previous = cursors[cursors.length - 1];
    if (previous && previous !== "-") back.set("cursor", previous);
    if (trail.length) back.set("trail", trail.join(","));
    pager.append(h("a", { class: "button", href: `#/search?${back}` }, "Previous page"));
  }
  if (page.next_cursor) {
    const next = new URLSearchParams(base);
    next.set("cursor", page.next_cursor);
    next.set("trail", [...cursors, cursor || "-"].join(","));
    pager.append(h("a", { class: "button", href: `#/search?${next}` }, "Next page"));
  }

  replace(view, h("h1", {}, heading), form, h("p", { class: "muted" }, `${items.length} products on this page`), list, pager);
  announce(filters.q ? `${items.length} results for ${filters.q}` : "");
}

function onSearch(event) {
  event.preventDefault();
  const data = formData(event.target);
  const params = new URLSearchParams();
  for (const key of ["q", "category_id", "min", "max", "sort"]) if (data[key]) params.set(key, data[key].trim());
  if (data.in_stock) params.set("in_stock", "1");
  location.hash = `#/search?${params}`;
}

function productCard(p) {
  return h(
    "li",
    { class: "card" },
    h("div", { class: "thumb", "aria-hidden": "true" }, initials(p.name)),
    h("h2", {}, h("a", { href: `#/product/${p.id}` }, p.name)),
    h("p", { class: "price" }, money(p.price)),
    h("p", {}, p.in_stock ? h("span", { class: "badge ok" }, "In stock") : h("span", { class: "badge bad" }, "Out of stock")),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "primary", disabled: !p.in_stock, "aria-label": `Add ${p.name} to cart`, onclick: () => addToCart(p, 1) }, "Add to cart"),
    ),
  );
}

async function addToCart(p, quantity) {
  try {
    const c = await api.post("/api/cart/items", { sku: p.sku, quantity }, { cart: true });
    await refreshCartCount(c);
    announce(`Added ${quantity} × ${p.name} to your cart.`, "ok");
  } catch (err) {
    announce(err instanceof ApiError ? err.describe() : "Could not add to the cart.", "error");
  }
}

// ---- product -------------------------------------------------------------------------------

async function product(id) {
  const p = await api.get(`/api/products/${encodeURIComponent(id)}`, { auth: false });
  const qty = h("input", { id: "quantity", name: "quantity", type: "number", min: "1", max: "99", value: "1", inputmode: "numeric" });
  const attributes = Object.entries(p.attributes || {});
  replace(
    view,
    h("p", {}, h("a", { href: "#/" }, "← Back to the catalog")),
    h(
      "article",
      { class: "product" },
      h("div", { class: "thumb", "aria-hidden": "true" }, initials(p.name)),
      h(
        "div",
        {},
        h("h1", {}, p.name),
        h("p", { class: "price" }, money(p.price)),
        h("p", {}, p.in_stock ? h("span", { class: "badge ok" }, "In stock") : h("span", { class: "badge bad" }, "Out of stock")),
        h("p", {}, p.description),
        h("p", { class: "muted" }, `SKU ${p.sku}`),
        attributes.length
          ? h("table", {}, h("caption", { class: "visually-hidden" }, "Details"), h("tbody", {}, attributes.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v))))))
          : null,
        h(
          "form",
          {
            class: "actions",
            onsubmit: (e) => {
              e.preventDefault();
              const n = Math.max(1, Math.min(99, Number(qty.value) || 1));
              addToCart(p, n);
            },
          },
          h("div", { class: "field" }, h("label", { for: "quantity" }, "Quantity"), qty),
          h("button", { type: "submit", class: "primary", disabled: !p.in_stock }, "Add to cart"),
        ),
      ),
    ),
  );
}

// ---- cart ----------------------------------------------------------------------------------

function cartTable(c, editable) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "aria-label": "Cart" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col", class: "num" }, "Price"), h("th", { scope: "col", class: "num" }, "Quantity"), h("th", { scope: "col", class: "num" }, "Total"), editable ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")) : null)),
      h(
        "tbody",
        {},
        c.items.map((item) =>
          h(
            "tr",
            {},
            h("td", {}, item.name, item.available ? null : h("span", { class: "badge bad" }, " unavailable")),
            h("td", { class: "num" }, money(item.unit_price)),
            h(
              "td",
              { class: "num" },
              editable
                ? h("input", {
                    type: "number",
                    min: "0",
                    max: "99",
                    value: String(item.quantity),
                    "aria-label": `Quantity of ${item.name}`,
                    onchange: (e) => updateLine(item, Number(e.target.value)),
                  })
                : String(item.quantity),
            ),
            h("td", { class: "num" }, money(item.line_total)),
            editable ? h("td", {}, h("button", { type: "button", "aria-label": `Remove ${item.name}`, onclick: () => updateLine(item, 0) }, "Remove")) : null,
          ),
        ),
      ),
      h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: "3" }, `Total (${c.item_count} items)`), h("td", { class: "num", id: "cart-total" }, money(c.total)), editable ? h("td") : null)),
    ),
  );
}

async function updateLine(item, quantity) {
  try {
    const c =
      quantity > 0
        ? await api.patch(`/api/cart/items/${encodeURIComponent(item.sku)}`, { quantity: Math.min(99, quantity) }, { cart: true })
        : await api.delete(`/api/cart/items/${encodeURIComponent(item.sku)}`, { cart: true });
    await refreshCartCount(c);
    announce(quantity > 0 ? `${item.name}: quantity ${quantity}.` : `Removed ${item.name}.`, "ok");
    await cart();
  } catch (err) {
    announce(err instanceof ApiError ? err.describe() : "Could not change the cart.", "error");
  }
}

async function cart() {
  const c = await api.get("/api/cart", { cart: true });
  await refreshCartCount(c);
  if (!c.items.length) {
    replace(view, h("h1", {}, "Your cart"), h("p", { class: "notice" }, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the catalog")));
    return;
  }
  replace(
    view,
    h("h1", {}, "Your cart"),
    cartTable(c, true),
    h("div", { class: "actions" }, h("a", { href: "#/checkout", class: "button primary" }, "Go to checkout"), h("a", { href: "#/", class: "button" }, "Keep shopping")),
  );
}

// ---- checkout ------------------------------------------------------------------------------

const DECLINES = {
  card_declined: "Your card was declined.",
  insufficient_funds: "Your card was declined: insufficient funds.",
  processing_error: "The card could not be charged right now.",
};

async function checkout() {
  const [c, me] = await Promise.all([api.get("/api/cart"), api.get("/api/users/me").catch(() => null)]);
  await refreshCartCount(c);
  if (!c.items.length) {
    replace(view, h("h1", {}, "Checkout"), h("p", { class: "notice" }, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the catalog")));
    return;
  }
  const alertBox = h("div", { id: "checkout-error", role: "alert" });
  const summary = h("section", { "aria-labelledby": "summary-h" }, h("h2", { id: "summary-h" }, "Order summary"), cartTable(c, false));
  const year = new Date().getFullYear();
  const form = h(
    "form",
    { id: "checkout-form", onsubmit: (e) => placeOrder(e, alertBox, summary) },
    h(
      "fieldset",
      {},
      h("legend", {}, "Shipping address"),
      h(
        "div",
        { class: "form-grid" },
        field("Recipient", "recipient", { value: me?.name || "", required: true, autocomplete: "name", maxlength: "200" }),
        field("Address line 1", "line1", { required: true, autocomplete: "address-line1", maxlength: "200" }),
        field("Address line 2", "line2", { autocomplete: "address-line2", maxlength: "200" }),
        field("City", "city", { required: true, autocomplete: "address-level2", maxlength: "100" }),
        field("Postal code", "postal_code", { required: true, autocomplete: "postal-code" }),
        field("Country (2 letters)", "country", { required: true, autocomplete: "country", maxlength: "2", pattern: "[A-Za-z]{2}", value: "GB" }),
      ),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Payment"),
      h("p", { class: "muted" }, "Test cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined, 4000 0000 0000 9995 has insufficient funds."),
      h(
        "div",
        { class: "form-grid" },
        field("Card number", "card_number", { required: true, autocomplete: "cc-number", inputmode: "numeric", value: "" }),
        field("Expiry month", "exp_month", { type: "number", min: "1", max: "12", required: true, value: "12", autocomplete: "cc-exp-month" }),
        field("Expiry year", "exp_year", { type: "number", min: String(year), max: String(year + 20), required: true, value: String(year + 5), autocomplete: "cc-exp-year" }),
        field("CVC", "cvc", { required: true, inputmode: "numeric", maxlength: "4", autocomplete: "cc-csc" }),
      ),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, `Pay ${money(c.total)}`), h("a", { href: "#/cart", class: "button" }, "Back to cart")),
  );
  replace(view, h("h1", {}, "Checkout"), alertBox, summary, form);
}

async function placeOrder(event, alertBox, summary) {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector("button[type=submit]");
  const data = formData(form);
  replace(alertBox);
  button.disabled = true;
  announce("Placing your order…");
  const body = {
    shipping_address: {
      recipient: data.recipient,
      line1: data.line1,
      line2: data.line2 || null,
      city: data.city,
      postal_code: data.postal_code,
      country: data.country.toUpperCase(),
    },
    payment: {
      card_number: data.card_number.replace(/[\s-]/g, ""),
      exp_month: Number(data.exp_month),
      exp_year: Number(data.exp_year),
      cvc: data.cvc,
    },
  };
  try {
    // One key per attempt: a retry of the same attempt can never charge twice.
    const placed = await api.post("/api/cart/checkout", body, { headers: { "idempotency-key": crypto.randomUUID() } });
    if (placed.status === "CANCELLED") {
      const reason = placed.cancellation_reason === "PAYMENT_FAILED" ? DECLINES[placed.cancellation_note] || `The payment failed (${placed.cancellation_note || "declined"}).` : `The order could not be placed (${placed.cancellation_reason || "cancelled"}).`;
      replace(alertBox, h("p", { class: "alert" }, `${reason} Nothing was charged and your cart is kept: try another card.`));
      announce(reason, "error");
      const c = await api.get("/api/cart");
      await refreshCartCount(c);
      replace(summary, h("h2", { id: "summary-h" }, "Order summary"), cartTable(c, false));
      alertBox.scrollIntoView({ block: "nearest" });
      return;
    }
    await refreshCartCount({ item_count: 0 });
    announce(placed.status === "PAID" ? "Thank you! Your order is paid." : "Your order is being processed.", "ok");
    location.hash = `#/orders/${placed.id}`;
  } catch (err) {
    const message = err instanceof ApiError ? (err.status === 503 ? "Payment is unavailable right now; nothing was charged. Please try again in a moment." : err.describe()) : "The shop could not be reached; nothing was charged.";
    replace(alertBox, h("p", { class: "alert" }, message));
    announce(message, "error");
  } finally {
    button.disabled = false;
  }
}

// ---- accounts ------------------------------------------------------------------------------

function signIn() {
  const error = h("div", { role: "alert" });
  const form = h(
    "form",
    {
      class: "narrow",
      onsubmit: async (e) => {
        e.preventDefault();
        const data = formData(e.target);
        replace(error);
        try {
          await api.login(data.email, data.password);
          session.tokens = { ...session.tokens, email: data.email };
          renderWho();
          await refreshCartCount();
          announce("Signed in.", "ok");
          const next = returnTo && returnTo !== "#/signin" ? returnTo : "#/";
          returnTo = "#/";
          location.hash = next;
        } catch (err) {
          replace(error, h("p", { class: "alert" }, err instanceof ApiError ? err.describe() : "Could not sign in."));
        }
      },
    },
    field("Email", "email", { type: "email", required: true, autocomplete: "email" }),
    field("Password", "password", { type: "password", required: true, autocomplete: "current-password" }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in"), h("a", { href: "#/signup" }, "Create an account")),
  );
  replace(view, h("h1", {}, "Sign in"), error, form);
}

function signUp() {
  const error = h("div", { role: "alert" });
  const form = h(
    "form",
    {
      class: "narrow",
      onsubmit: async (e) => {
        e.preventDefault();
        const data = formData(e.target);
        replace(error);
        try {
          await api.post("/api/auth/register", { email: data.email, password: data.password, name: data.name }, { auth: false });
          await api.login(data.email, data.password);
          session.tokens = { ...session.tokens, email: data.email };
          renderWho();
          await refreshCartCount();
          announce(`Welcome, ${data.name}! Your account is ready.`, "ok");
          const next = returnTo && !["#/signin", "#/signup"].includes(returnTo) ? returnTo : "#/";
          returnTo = "#/";
          location.hash = next;
        } catch (err) {
          replace(error, h("p", { class: "alert" }, err instanceof ApiError ? err.describe() : "Could not create the account."));
        }
      },
    },
    field("Name", "name", { required: true, autocomplete: "name", maxlength: "100" }),
    field("Email", "email", { type: "email", required: true, autocomplete: "email" }),
    field("Password", "password", { type: "password", required: true, autocomplete: "new-password", minlength: "12", "aria-describedby": "password-hint" }),
    h("p", { id: "password-hint", class: "muted" }, "At least 12 characters."),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create account"), h("a", { href: "#/signin" }, "I have an account")),
  );
  replace(view, h("h1", {}, "Create an account"), error, form);
}

// ---- orders --------------------------------------------------------------------------------

function statusBadge(status) {
  const kind = { PAID: "ok", SHIPPED: "ok", COMPLETED: "ok", CREATED: "warn", CANCELLED: "bad", REFUNDED: "bad" }[status] || "";
  return h("span", { class: `badge ${kind}` }, label(status));
}

function label(status) {
  return String(status || "").replace(/_/g, " ").toLowerCase().replace(/^./, (c) => c.toUpperCase());
}

async function orders() {
  const page = await api.get("/api/orders?limit=50");
  const items = page.items || [];
  replace(
    view,
    h("h1", {}, "Your orders"),
    items.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { "aria-label": "Orders" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Order"), h("th", { scope: "col" }, "Placed"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col", class: "num" }, "Total"))),
            h(
              "tbody",
              {},
              items.map((o) => h("tr", {}, h("td", {}, h("a", { href: `#/orders/${o.id}` }, `Order ${o.id.slice(0, 8)}`)), h("td", {}, when(o.created_at)), h("td", {}, statusBadge(o.status)), h("td", { class: "num" }, money(o.total)))),
            ),
          ),
        )
      : h("p", { class: "notice" }, "No orders yet. ", h("a", { href: "#/" }, "Start shopping")),
  );
}

const FINAL = new Set(["COMPLETED", "CANCELLED", "REFUNDED"]);

async function order(id, visit) {
  const path = `/api/orders/${encodeURIComponent(id)}`;
  let o = await api.get(path);
  const statusEl = h("p", { id: "order-status", "aria-live": "polite" });
  const historyEl = h("ol", { class: "timeline", "aria-label": "Order history" });
  const trackingEl = h("ol", { class: "timeline", id: "tracking", "aria-label": "Shipment tracking" });
  const trackingNote = h("p", { class: "muted", id: "tracking-note" }, "Waiting for the shipment…");
  const cancelBox = h("div", { class: "actions" });
  const controller = new AbortController();
  let stopped = false;
  visit.onLeave(() => {
    stopped = true;
    controller.abort();
  });

  const paint = () => {
    replace(statusEl, "Status: ", statusBadge(o.status), o.cancellation_reason ? ` (${label(o.cancellation_reason)}${o.cancellation_note ? `: ${o.cancellation_note}` : ""})` : "");
    replace(historyEl, (o.status_history || []).map((c) => h("li", {}, h("strong", {}, label(c.to)), " ", h("span", { class: "muted" }, when(c.at)), c.note ? ` — ${c.note}` : "")));
    replace(cancelBox);
    if (o.status === "PAID" || o.status === "CREATED") {
      cancelBox.append(h("button", { type: "button", class: "danger", onclick: cancelOrder }, "Cancel order"));
    }
  };

  async function cancelOrder() {
    try {
      o = await api.post(`${path}/cancel`, { reason: "cancelled by the customer" });
      paint();
      announce("Your order was cancelled; any payment is refunded.", "ok");
    } catch (err) {
      announce(err instanceof ApiError ? err.describe() : "Could not cancel the order.", "error");
    }
  }

  replace(
    view,
    h("p", {}, h("a", { href: "#/orders" }, "← All orders")),
    h("h1", {}, `Order ${o.id.slice(0, 8)}`),
    statusEl,
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Items" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Product"), h("th", { scope: "col", class: "num" }, "Quantity"), h("th", { scope: "col", class: "num" }, "Total"))), h("tbody", {}, o.lines.map((l) => h("tr", {}, h("td", {}, l.name), h("td", { class: "num" }, String(l.quantity)), h("td", { class: "num" }, money(l.line_total))))), h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: "2" }, "Total"), h("td", { class: "num" }, money(o.total)))))),
    o.refunded_total?.amount ? h("p", {}, `Refunded: ${money(o.refunded_total)}`) : null,
    cancelBox,
    h("section", { "aria-labelledby": "tracking-h" }, h("h2", { id: "tracking-h" }, "Live tracking"), trackingNote, trackingEl),
    h("section", { "aria-labelledby": "history-h" }, h("h2", { id: "history-h" }, "History"), historyEl),
  );
  paint();

  // The order follows the shipment (SHIPPED, COMPLETED) a moment after each tracking event.
  const poll = async () => {
    while (!stopped && !FINAL.has(o.status)) {
      await new Promise((r) => setTimeout(r, 1000));
      if (stopped) return;
      try {
        const next = await api.get(path);
        if (next.status !== o.status) announce(`Order status: ${label(next.status)}`);
        o = next;
        paint();
      } catch {
        // A missed poll is retried on the next tick.
      }
    }
  };
  poll();

  const track = async () => {
    // No shipment until the order is paid.
    while (!stopped && !o.shipment_id && !FINAL.has(o.status)) await new Promise((r) => setTimeout(r, 500));
    if (stopped || !o.shipment_id) {
      if (!stopped) trackingNote.textContent = "This order has no shipment.";
      return;
    }
    trackingNote.textContent = "Following the shipment live…";
    try {
      await api.stream(
        `${path}/shipment/events`,
        (event) => {
          if (event.event === "error") {
            trackingNote.textContent = "Tracking was interrupted.";
            return;
          }
          const t = JSON.parse(event.data);
          trackingEl.append(h("li", {}, h("strong", {}, label(t.status)), " ", h("span", { class: "muted" }, when(t.at)), t.location ? ` — ${t.location}` : "", t.note ? ` (${t.note})` : ""));
          announce(`Shipment: ${label(t.status)}`);
        },
        controller.signal,
      );
      if (!stopped) trackingNote.textContent = "The shipment reached its destination.";
    } catch (err) {
      if (!stopped) trackingNote.textContent = err instanceof ApiError ? err.describe() : "Tracking is unavailable right now.";
    }
  };
  track();
}

// ---- notifications -------------------------------------------------------------------------

async function notifications() {
  const page = await api.get("/api/notifications?limit=50");
  const items = page.items || [];
  const list = h(
    "ul",
    { class: "grid", "aria-label": "Notifications" },
    items.map((n) => {
      const read = h("button", { type: "button", disabled: n.read, onclick: async () => {
        try {
          await api.put(`/api/notifications/${n.id}/read`);
          read.disabled = true;
          read.textContent = "Read";
          announce("Marked as read.", "ok");
        } catch (err) {
          announce(err instanceof ApiError ? err.describe() : "Could not mark it read.", "error");
        }
      } }, n.read ? "Read" : "Mark as read");
      return h("li", { class: "card" }, h("h2", {}, n.subject), h("p", { class: "muted" }, when(n.created_at)), h("p", {}, n.body), h("div", { class: "actions" }, read));
    }),
  );
  replace(view, h("h1", {}, "Notifications"), items.length ? list : h("p", { class: "notice" }, "Nothing new."));
}

// ---- start ---------------------------------------------------------------------------------

installSkipLink();
session.onChange(renderWho);
renderWho();
refreshCartCount();
rerender = route(routes, view, {
  beforeRender: (hash, options) => {
    if (options.account && !session.signedIn) {
      returnTo = hash;
      location.hash = "#/signin";
      return false;
    }
    return undefined;
  },
  notFound: () => [h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the catalog"))],
  onError: showError,
});
