// The admin console: a hash-routed single page over the REST edge's admin routes.
import { Api, ApiError, Session, minor, money, when } from "/common/api.js";
import { announce, field, formData, h, installSkipLink, replace, spinner } from "/common/dom.js";
import { route } from "/common/router.js";
import { barChart } from "/admin/chart.js";

const session = new Session("admin");
const api = new Api(session);
const view = document.getElementById("view");

// Every view needs an administrator: signed out, any hash shows the sign-in form.
const routes = [
  [/^#?\/?$/, overview],
  [/^#\/orders(\?.*)?$/, orders],
  [/^#\/order\/([^/?]+)$/, order, { nav: "orders" }],
  [/^#\/inventory(\?.*)?$/, inventory],
  [/^#\/inventory\/([^/?]+)$/, stockPage, { nav: "inventory" }],
  [/^#\/analytics(\?.*)?$/, analytics],
  [/^#\/events$/, events],
  [/^#\/faults$/, faults],
];

let rerender = () => {}; // Renders the current hash again (set once routing starts, below).

function describe(err) {
  if (err instanceof ApiError) return err.describe();
  return "The edge could not be reached. Try again in a moment.";
}

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    session.tokens = null;
    announce("Your session ended; sign in again.", "error");
    rerender();
    return;
  }
  replace(view, h("h1", {}, "Something went wrong"), h("p", { class: "alert", role: "alert" }, describe(err)));
}

// A section whose endpoint a gateway may not offer yet: 404 means "not available here".
function unavailable(what, path) {
  return h("p", { class: "notice" }, `${what}: not available on this installation (the gateway does not offer ${path}).`);
}

function renderWho() {
  const who = document.getElementById("who");
  if (session.signedIn) {
    replace(
      who,
      h("span", {}, session.tokens.email || "admin"),
      h(
        "button",
        {
          type: "button",
          onclick: async () => {
            await api.logout().catch(() => {});
            rerender();
          },
        },
        "Sign out",
      ),
    );
  } else {
    replace(who);
  }
}

function signIn() {
  const error = h("div", { role: "alert" });
  replace(
    view,
    h("h1", {}, "Console sign-in"),
    error,
    h(
      "form",
      {
        class: "narrow",
        onsubmit: async (e) => {
          e.preventDefault();
          const data = formData(e.target);
          replace(error);
          try {
            await api.login(data.email, data.password);
            const me = await api.get("/api/users/me");
            if (me.role !== "admin") {
              await api.logout().catch(() => {});
              replace(error, h("p", { class: "alert" }, "This account is not an administrator."));
              return;
            }
            session.tokens = { ...session.tokens, email: me.email };
            announce("Signed in.", "ok");
            rerender();
          } catch (err) {
            replace(error, h("p", { class: "alert" }, describe(err)));
          }
        },
      },
      field("Email", "email", { type: "email", required: true, autocomplete: "username" }),
      field("Password", "password", { type: "password", required: true, autocomplete: "current-password" }),
      h("button", { type: "submit", class: "primary" }, "Sign in"),
    ),
  );
}

function label(status) {
  return String(status || "").replace(/_/g, " ").toLowerCase().replace(/^./, (c) => c.toUpperCase());
}

function badge(status) {
  const kind = { PAID: "ok", SHIPPED: "ok", COMPLETED: "ok", CREATED: "warn", CANCELLED: "bad", REFUNDED: "bad", serving: "ok", loaded: "ok" }[status] || "bad";
  return h("span", { class: `badge ${kind}` }, label(status));
}

function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.startsWith("#") ? "num" : "" }, x.replace(/^#/, ""))))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c)))))),
    ),
  );
}

const num = (value) => h("td", { class: "num" }, value);

// ---- overview: health, traffic, queues -----------------------------------------------------

async function readiness() {
  const response = await fetch("/readyz", { headers: { accept: "application/json" } });
  const body = await response.json().catch(() => null);
  return { ok: response.ok, body };
}

// Requests and errors per route ("GET /api/products/{id}") in one metrics reading.
function byRoute(reading) {
  const routes = new Map();
  for (const row of reading?.http || []) {
    const key = `${row.method} ${row.route}`;
    const entry = routes.get(key) || { key, total: 0, c4: 0, c5: 0 };
    entry.total += row.requests;
    if (row.status >= 500) entry.c5 += row.requests;
    else if (row.status >= 400) entry.c4 += row.requests;
    routes.set(key, entry);
  }
  return routes;
}

// Whether `now` follows `before` from the same gateway process: uptime went on and no count
// went down (a restarted or another replica's gateway starts from zero).
function continues(before, now) {
  if (!before || now.uptime_seconds <= before.uptime_seconds) return false;
  const after = byRoute(now);
  for (const [key, entry] of byRoute(before)) {
    if ((after.get(key)?.total || 0) < entry.total) return false;
  }
  return true;
}

function queueTable(q) {
  return table(
    "Queue depths",
    ["Consumer", "Queue", "#Ready", "#Consumers", "#Retrying", "#Dead letters"],
    (q.queues || []).map((r) => [r.consumer, r.queue, num(String(r.messages)), num(String(r.consumers)), num(String(r.retry_messages)), num(String(r.dead_letters))]),
  );
}

function queuesProblem(err) {
  return err instanceof ApiError && err.status === 404 ? unavailable("Queue depths", "/api/admin/queues") : h("p", { class: "alert" }, describe(err));
}

const POLL_MS = 5000;

async function overview(visit) {
  const health = h("section", { "aria-labelledby": "health-h" }, h("h2", { id: "health-h" }, "Service health"), spinner());
  const traffic = h("section", { "aria-labelledby": "traffic-h" }, h("h2", { id: "traffic-h" }, "Requests and errors"), spinner());
  const queues = h("section", { "aria-labelledby": "queues-h" }, h("h2", { id: "queues-h" }, "Queues"), spinner());
  const refresh = h("button", { type: "button" }, "Refresh now");
  replace(view, h("h1", {}, "Overview"), h("div", { class: "actions" }, refresh, h("span", { class: "muted" }, `Figures refresh every ${POLL_MS / 1000} s.`)), health, traffic, queues);

  const paintHealth = async () => {
    try {
      const { ok, body } = await readiness();
      const checks = Object.entries(body?.checks || {});
      replace(
        health,
        h("h2", { id: "health-h" }, "Service health"),
        h("p", {}, "The mesh is ", badge(ok ? "serving" : "not_ready"), h("span", { class: "muted" }, " (from /readyz: the gateway's gRPC health check of every service)")),
        h("ul", { class: "summary", "aria-label": "Targets" }, checks.map(([name, state]) => h("li", { class: "stat" }, h("div", { class: "label" }, name), h("div", { class: "value" }, badge(state))))),
      );
    } catch (err) {
      replace(health, h("h2", { id: "health-h" }, "Service health"), h("p", { class: "alert" }, describe(err)));
    }
  };

  // The counters are cumulative: rates and error shares come from the difference between two
  // readings, so the first reading shows totals only.
  let previous = null;
  const paintTraffic = async () => {
    let now;
    try {
      now = await api.get("/api/admin/metrics");
    } catch (err) {
      replace(traffic, h("h2", { id: "traffic-h" }, "Requests and errors"), err instanceof ApiError && err.status === 404 ? unavailable("Traffic", "/api/admin/metrics") : h("p", { class: "alert" }, describe(err)));
      return;
    }
    const before = continues(previous, now) ? byRoute(previous) : null;
    const elapsed = before ? now.uptime_seconds - previous.uptime_seconds : 0;
    const perSecond = (n) => (before ? `${(n / elapsed).toFixed(2)}/s` : "…");
    const share = (part, all) => (all > 0 ? `${((100 * part) / all).toFixed(1)}%` : "–");
    const rows = [...byRoute(now).values()]
      .sort((a, b) => b.total - a.total || a.key.localeCompare(b.key))
      .map((e) => {
        const b = before?.get(e.key) || { total: 0, c4: 0, c5: 0 };
        // Over the window between the readings, or since the start on the first one.
        const [all, c4, c5] = [e.total - b.total, e.c4 - b.c4, e.c5 - b.c5];
        return [e.key, num(String(e.total)), num(perSecond(all)), num(perSecond(c4 + c5)), num(share(c4, all)), num(share(c5, all))];
      });
    const grpc = (now.grpc_client || []).map((r) => [`${r.service.split(".").slice(-1)[0]}/${r.method}`, r.code, num(String(r.requests))]);
    const window = before ? `rates and error shares over the last ${elapsed.toFixed(1)} s` : `error shares since it started; rates appear with the next reading`;
    replace(
      traffic,
      h("h2", { id: "traffic-h" }, "Requests and errors"),
      h("p", { class: "muted", id: "traffic-window" }, `Gateway up for ${Math.round(now.uptime_seconds)} s; ${window}.`),
      table("HTTP requests by route", ["Route", "#Requests", "#Requests/s", "#Errors/s", "#4xx share", "#5xx share"], rows),
      h("h3", {}, "gRPC calls from the gateway"),
      table("gRPC calls by method and code", ["Method", "Code", "#Calls"], grpc),
    );
    previous = now;
  };

  const paintQueues = async () => {
    const link = h("p", {}, h("a", { href: "#/events" }, "Dead letters and re-drive"));
    try {
      replace(queues, h("h2", { id: "queues-h" }, "Queues"), queueTable(await api.get("/api/admin/queues")), link);
    } catch (err) {
      replace(queues, h("h2", { id: "queues-h" }, "Queues"), queuesProblem(err), link);
    }
  };

  // One reading at a time; "Refresh now" takes one at once and restarts the clock.
  let timer = null;
  let busy = null;
  const paint = () => {
    busy ||= Promise.all([paintHealth(), paintTraffic(), paintQueues()]).finally(() => {
      busy = null;
    });
    return busy;
  };
  const schedule = () => {
    clearInterval(timer);
    timer = setInterval(paint, POLL_MS);
  };
  visit.onLeave(() => clearInterval(timer));
  refresh.addEventListener("click", async () => {
    announce("Refreshing the figures…");
    schedule();
    await busy;
    await paint();
    announce("Figures refreshed.", "ok");
  });
  schedule();
  await paint();
}

// ---- orders --------------------------------------------------------------------------------

const STATUSES = ["", "CREATED", "PAID", "SHIPPED", "COMPLETED", "CANCELLED", "REFUNDED"];

async function orders(query) {
  const params = new URLSearchParams((query || "").replace(/^\?/, ""));
  const status = params.get("status") || "";
  const search = new URLSearchParams({ limit: "25" });
  if (status) search.set("status", status);
  if (params.get("cursor")) search.set("cursor", params.get("cursor"));
  const page = await api.get(`/api/admin/orders?${search}`);
  const filter = h(
    "form",
    {
      class: "actions",
      onsubmit: (e) => {
        e.preventDefault();
        const s = formData(e.target).status;
        location.hash = s ? `#/orders?status=${s}` : "#/orders";
      },
    },
    field("Status", "status", { type: "select", value: status, options: STATUSES.map((s) => [s, s ? label(s) : "Any status"]) }),
    h("button", { type: "submit" }, "Filter"),
  );
  const rows = (page.items || []).map((o) => [h("a", { href: `#/order/${o.id}` }, `Order ${o.id.slice(0, 8)}`), when(o.created_at), badge(o.status), num(money(o.total)), num(o.refunded_total?.amount ? money(o.refunded_total) : "–")]);
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  if (page.next_cursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", page.next_cursor);
    pager.append(h("a", { class: "button", href: `#/orders?${next}` }, "Next page"));
  }
  replace(view, h("h1", {}, "Orders"), filter, rows.length ? table("Orders", ["Order", "Placed", "Status", "#Total", "#Refunded"], rows) : h("p", { class: "notice" }, "No orders."), pager);
}

async function order(id) {
  const path = `/api/orders/${encodeURIComponent(id)}`;
  const o = await api.get(path);
  const error = h("div", { role: "alert" });

  const setStatus = async (to) => {
    replace(error);
    try {
      await api.post(`/api/admin/orders/${o.id}/status`, { status: to, note: `set to ${to.toLowerCase()} in the console` });
      announce(`Order marked ${label(to)}.`, "ok");
      await order(id);
    } catch (err) {
      replace(error, h("p", { class: "alert" }, describe(err)));
    }
  };

  const refundable = ["PAID", "SHIPPED", "COMPLETED", "REFUNDED"].includes(o.status) && o.refunded_total.amount < o.total.amount;
  const refundForm = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        replace(error);
        const data = formData(e.target);
        const body = { order_id: o.id, note: data.note || null };
        if (data.amount) body.amount = { amount: Math.round(Number(data.amount) * 100), currency: o.total.currency };
        const button = e.target.querySelector("button[type=submit]");
        button.disabled = true;
        try {
          const after = await api.post("/api/admin/refunds", body, { headers: { "idempotency-key": crypto.randomUUID() } });
          let message = `Refunded ${money(after.refunded_total)} in all.`;
          if (data.restock) {
            // The goods came back: each line goes back into stock as a "return" adjustment.
            for (const line of o.lines) {
              await api.post(`/api/admin/inventory/${encodeURIComponent(line.sku)}/adjust`, { delta: line.quantity, reason: "return", note: `returned with the refund of order ${o.id.slice(0, 8)}` });
            }
            message += " The items are back in stock.";
          }
          announce(message, "ok");
          await order(id);
        } catch (err) {
          replace(error, h("p", { class: "alert" }, describe(err)));
          button.disabled = false;
        }
      },
    },
    h(
      "fieldset",
      {},
      h("legend", {}, "Refund"),
      h("p", { class: "muted" }, `Captured ${money(o.total)}, refunded ${money(o.refunded_total)} so far. Leave the amount empty to refund the rest.`),
      field("Amount ($)", "amount", { type: "number", min: "0.01", step: "0.01", inputmode: "decimal" }),
      field("Note", "note", { maxlength: "500" }),
      h("label", { class: "field check" }, h("input", { type: "checkbox", name: "restock", value: "1" }), " Return the items to stock"),
      h("button", { type: "submit", class: "danger" }, "Refund"),
    ),
  );

  replace(
    view,
    h("p", {}, h("a", { href: "#/orders" }, "← All orders")),
    h("h1", {}, `Order ${o.id.slice(0, 8)}`),
    error,
    h("p", { id: "order-status" }, "Status: ", badge(o.status), o.cancellation_reason ? ` (${label(o.cancellation_reason)}: ${o.cancellation_note || ""})` : ""),
    h("dl", { class: "summary" }, h("div", { class: "stat" }, h("dt", { class: "label" }, "Total"), h("dd", { class: "value" }, money(o.total))), h("div", { class: "stat" }, h("dt", { class: "label" }, "Refunded"), h("dd", { class: "value", id: "refunded" }, money(o.refunded_total))), h("div", { class: "stat" }, h("dt", { class: "label" }, "Customer"), h("dd", { class: "value" }, h("small", {}, o.user_id.slice(0, 8)))), h("div", { class: "stat" }, h("dt", { class: "label" }, "Checkout step"), h("dd", { class: "value" }, h("small", {}, label(o.checkout_step))))),
    table("Lines", ["SKU", "Product", "#Quantity", "#Total"], o.lines.map((l) => [h("a", { href: `#/inventory/${encodeURIComponent(l.sku)}` }, l.sku), l.name, num(String(l.quantity)), num(money(l.line_total))])),
    h(
      "div",
      { class: "actions" },
      o.status === "PAID" ? h("button", { type: "button", onclick: () => setStatus("SHIPPED") }, "Mark shipped") : null,
      o.status === "PAID" || o.status === "SHIPPED" ? h("button", { type: "button", onclick: () => setStatus("COMPLETED") }, "Mark completed") : null,
    ),
    refundable ? refundForm : h("p", { class: "muted" }, "Nothing left to refund."),
    h("h2", {}, "History"),
    table("Status history", ["When", "From", "To", "Note"], (o.status_history || []).map((c) => [when(c.at), c.from ? label(c.from) : "–", label(c.to), c.note || ""])),
  );
}

// ---- inventory -----------------------------------------------------------------------------

async function inventory(query) {
  const params = new URLSearchParams((query || "").replace(/^\?/, ""));
  const search = new URLSearchParams({ limit: "20" });
  if (params.get("q")) search.set("q", params.get("q"));
  if (params.get("cursor")) search.set("cursor", params.get("cursor"));
  const page = await api.get(`/api/products?${search}`, { auth: false });
  const levels = await Promise.all((page.items || []).map((p) => api.get(`/api/admin/inventory/${encodeURIComponent(p.sku)}?limit=1`).then((r) => r.stock).catch(() => null)));
  const rows = (page.items || []).map((p, i) => {
    const s = levels[i];
    const low = s && s.available <= s.low_stock_threshold;
    return [h("a", { href: `#/inventory/${encodeURIComponent(p.sku)}` }, p.sku), p.name, num(s ? String(s.on_hand) : "?"), num(s ? String(s.reserved) : "?"), num(s ? String(s.available) : "?"), s ? (low ? h("span", { class: "badge warn" }, "Low") : h("span", { class: "badge ok" }, "OK")) : ""];
  });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  if (page.next_cursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", page.next_cursor);
    pager.append(h("a", { class: "button", href: `#/inventory?${next}` }, "Next page"));
  }
  replace(
    view,
    h("h1", {}, "Inventory"),
    h(
      "form",
      {
        class: "actions",
        role: "search",
        onsubmit: (e) => {
          e.preventDefault();
          const data = formData(e.target);
          if (data.sku) location.hash = `#/inventory/${encodeURIComponent(data.sku.trim())}`;
          else location.hash = data.q ? `#/inventory?q=${encodeURIComponent(data.q)}` : "#/inventory";
        },
      },
      field("Search products", "q", { type: "search", value: params.get("q") || "" }),
      field("Or go to SKU", "sku", {}),
      h("button", { type: "submit" }, "Go"),
    ),
    rows.length ? table("Stock levels", ["SKU", "Product", "#On hand", "#Reserved", "#Available", "Level"], rows) : h("p", { class: "notice" }, "No products."),
    pager,
  );
}

async function stockPage(sku) {
  const decoded = decodeURIComponent(sku);
  const inv = await api.get(`/api/admin/inventory/${encodeURIComponent(decoded)}?limit=50`);
  const s = inv.stock;
  const error = h("div", { role: "alert" });
  replace(
    view,
    h("p", {}, h("a", { href: "#/inventory" }, "← Inventory")),
    h("h1", {}, `Stock of ${decoded}`),
    error,
    h(
      "dl",
      { class: "summary", "aria-label": "Stock level" },
      h("div", { class: "stat" }, h("dt", { class: "label" }, "On hand"), h("dd", { class: "value", id: "on-hand" }, String(s.on_hand))),
      h("div", { class: "stat" }, h("dt", { class: "label" }, "Reserved"), h("dd", { class: "value", id: "reserved" }, String(s.reserved))),
      h("div", { class: "stat" }, h("dt", { class: "label" }, "Available"), h("dd", { class: "value", id: "available" }, String(s.available))),
      h("div", { class: "stat" }, h("dt", { class: "label" }, "Low-stock threshold"), h("dd", { class: "value" }, String(s.low_stock_threshold))),
    ),
    h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          replace(error);
          const data = formData(e.target);
          try {
            await api.post(`/api/admin/inventory/${encodeURIComponent(decoded)}/adjust`, { delta: Number(data.delta), reason: data.reason, note: data.note || null });
            announce(`Stock of ${decoded} adjusted by ${data.delta}.`, "ok");
            await stockPage(sku);
          } catch (err) {
            replace(error, h("p", { class: "alert" }, describe(err)));
          }
        },
      },
      h(
        "fieldset",
        {},
        h("legend", {}, "Adjust"),
        h(
          "div",
          { class: "form-grid" },
          field("Change (units, negative to remove)", "delta", { type: "number", required: true, step: "1" }),
          field("Reason", "reason", { type: "select", value: "receiving", options: [["receiving", "Receiving"], ["return", "Return"], ["correction", "Correction"], ["damage", "Damage"]] }),
          field("Note", "note", { maxlength: "500" }),
        ),
        h("button", { type: "submit", class: "primary" }, "Apply"),
      ),
    ),
    h("h2", {}, "History"),
    table("Stock movements", ["When", "Reason", "#Change", "#On hand after", "#Reserved after", "Order", "Note"], (inv.movements || []).map((m) => [when(m.created_at), label(m.reason || ""), num(m.delta > 0 ? `+${m.delta}` : String(m.delta)), num(String(m.on_hand_after)), num(String(m.reserved_after)), m.order_id ? m.order_id.slice(0, 8) : "", m.note || ""])),
  );
}

// ---- analytics -----------------------------------------------------------------------------

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

async function analytics(query) {
  const params = new URLSearchParams((query || "").replace(/^\?/, ""));
  const today = new Date();
  const to = params.get("to") || isoDay(today);
  const from = params.get("from") || isoDay(new Date(today.getTime() - 13 * 86400000));
  const range = new URLSearchParams({ from, to });
  const [summary, series, top] = await Promise.all([
    api.get(`/api/admin/analytics/summary?${range}`),
    api.get(`/api/admin/analytics/timeseries?${range}`),
    api.get(`/api/admin/analytics/top-products?${range}&by=revenue&limit=10`),
  ]);
  const cur = summary.currency || "USD";
  const stat = (name, value, id) => h("div", { class: "stat" }, h("dt", { class: "label" }, name), h("dd", { class: "value", id }, value));
  replace(
    view,
    h("h1", {}, "Analytics"),
    h(
      "form",
      {
        class: "actions",
        onsubmit: (e) => {
          e.preventDefault();
          const data = formData(e.target);
          location.hash = `#/analytics?${new URLSearchParams({ from: data.from, to: data.to })}`;
        },
      },
      field("From", "from", { type: "date", value: from }),
      field("To", "to", { type: "date", value: to }),
      h("button", { type: "submit" }, "Show"),
      h("button", { type: "button", onclick: () => analytics(query).then(() => announce("Figures refreshed.", "ok")) }, "Refresh"),
    ),
    h(
      "dl",
      { class: "summary", "aria-label": "Summary" },
      stat("Orders", String(summary.orders), "a-orders"),
      stat("Paid orders", String(summary.paid_orders), "a-paid"),
      stat("Revenue", minor(summary.revenue, cur), "a-revenue"),
      stat("Refunded", minor(summary.refunded, cur), "a-refunded"),
      stat("Average order", minor(summary.average_order_value, cur), "a-aov"),
      stat("Customers", `${summary.customers} (${summary.new_customers} new)`, "a-customers"),
      stat("Conversion", `${(100 * summary.conversion.rate).toFixed(0)}%`, "a-conversion"),
    ),
    h("h2", {}, "Revenue and refunds per day"),
    h("div", { class: "legend" }, h("span", {}, h("span", { class: "swatch" }), "Revenue"), h("span", {}, h("span", { class: "swatch alt" }), "Refunded")),
    barChart({
      label: "Revenue and refunds per day",
      categories: series.days.map((d) => d.date.slice(5)),
      series: [series.days.map((d) => d.revenue), series.days.map((d) => d.refunded)],
      format: (v) => minor(v, cur),
    }),
    h("h2", {}, "Top products by revenue"),
    barChart({ label: "Top products by revenue", categories: top.products.map((p) => p.sku), series: [top.products.map((p) => p.revenue)], format: (v) => minor(v, cur) }),
    table("Top products", ["SKU", "Product", "#Units", "#Revenue"], top.products.map((p) => [p.sku, p.name, num(String(p.units)), num(minor(p.revenue, cur))])),
    h("h2", {}, "Orders by status"),
    table("Orders by status", ["Status", "#Orders", "#Amount"], summary.by_status.map((s) => [label(s.status), num(String(s.orders)), num(minor(s.amount, cur))])),
  );
}

// ---- events: queues and dead letters -------------------------------------------------------

async function events(visit) {
  const queues = h("div", {}, spinner());
  const dead = h("div", {}, spinner());
  const refresh = h("button", { type: "button" }, "Refresh now");
  replace(view, h("h1", {}, "Queues and dead letters"), h("div", { class: "actions" }, refresh, h("span", { class: "muted" }, `Figures refresh every ${POLL_MS / 1000} s.`)), h("h2", {}, "Queues"), queues, h("h2", { id: "dead-h", tabindex: "-1" }, "Dead letters"), dead);

  const redrive = async (consumer, d) => {
    try {
      await api.post(`/api/admin/dead-letters/${encodeURIComponent(consumer)}/${encodeURIComponent(d.event_id)}/redrive`);
      announce(`Re-drove ${d.event_type} ${d.event_id.slice(0, 13)} to ${consumer}: it is back in its queue.`, "ok");
    } catch (err) {
      announce(describe(err), "error");
    }
    await paint();
    // The button is gone with its row: the reader goes on from the section's heading.
    document.getElementById("dead-h")?.focus();
  };

  const paintQueues = async () => {
    try {
      replace(queues, queueTable(await api.get("/api/admin/queues")));
    } catch (err) {
      replace(queues, queuesProblem(err));
    }
  };
  const paintDead = async () => {
    let list;
    try {
      list = await api.get("/api/admin/dead-letters?limit=50");
    } catch (err) {
      replace(dead, h("p", { class: "alert" }, describe(err)));
      return;
    }
    const sections = (list.consumers || []).map((c) =>
      h(
        "section",
        { "aria-label": `Dead letters of ${c.consumer}` },
        h("h3", {}, `${c.consumer}: ${c.total} parked`),
        c.items.length
          ? table(
              `Dead letters of ${c.consumer}`,
              ["Event", "Type", "#Attempts", "Error", "Died", ""],
              c.items.map((d) => [
                d.event_id ? d.event_id.slice(0, 13) : "(not an event)",
                d.event_type,
                num(String(d.attempts)),
                d.error,
                when(d.dead_at),
                d.event_id ? h("button", { type: "button", "aria-label": `Re-drive ${d.event_type} ${d.event_id} for ${c.consumer}`, onclick: () => redrive(c.consumer, d) }, "Re-drive") : "",
              ]),
            )
          : h("p", { class: "muted" }, "Nothing parked."),
      ),
    );
    replace(dead, sections.length ? sections : h("p", { class: "muted" }, "No consumers."));
  };

  let timer = null;
  let busy = null;
  const paint = () => {
    // One after the other: listing dead letters takes each one out of its queue for a moment
    // (and puts it back), so a depth read at the same time would not count it.
    busy ||= paintQueues().then(paintDead).finally(() => {
      busy = null;
    });
    return busy;
  };
  const schedule = () => {
    clearInterval(timer);
    timer = setInterval(paint, POLL_MS);
  };
  visit.onLeave(() => clearInterval(timer));
  refresh.addEventListener("click", async () => {
    announce("Refreshing the figures…");
    schedule();
    await busy;
    await paint();
    announce("Figures refreshed.", "ok");
  });
  schedule();
  await paint();
}

// ---- fault injection -----------------------------------------------------------------------

const SERVICES = ["user", "product", "cart", "order", "payment", "delivery", "notification", "analytics"];

function describeFault(f) {
  const parts = [];
  if (f.error_rate > 0) parts.push(`${percent(f.error_rate)} of calls fail`);
  if (f.latency_ms > 0) parts.push(`${f.latency_ms} ms added`);
  return `${f.service} ${f.method === "*" ? "(every method)" : f.method}: ${parts.join(", ")}`;
}

function percent(rate) {
  return `${Number((100 * rate).toFixed(1))}%`;
}

async function faults() {
  let state;
  try {
    state = await api.get("/api/admin/faults");
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      replace(view, h("h1", {}, "Fault injection"), unavailable("Fault injection", "/api/admin/faults"));
      return;
    }
    throw err;
  }
  const error = h("div", { role: "alert" });
  const enabled = h("p", {});
  const active = h("div", {});

  const paint = (s) => {
    replace(
      enabled,
      "Fault injection is ",
      s.enabled ? h("span", { class: "badge warn" }, "enabled") : h("span", { class: "badge" }, "disabled"),
      s.enabled ? " on this installation: rules below fail or slow the calls they match, from every caller." : " on this installation: every process must run with FAULT_INJECTION_ENABLED=true for drills.",
    );
    replace(
      active,
      (s.faults || []).length
        ? table(
            "Active faults",
            ["Service", "Method", "#Added latency", "#Error rate", ""],
            s.faults.map((f) => [
              f.service,
              f.method,
              num(`${f.latency_ms} ms`),
              num(percent(f.error_rate)),
              h("button", { type: "button", "aria-label": `Remove the fault of ${f.service} ${f.method}`, onclick: () => act(() => api.delete(`/api/admin/faults?${new URLSearchParams({ service: f.service, method: f.method })}`), `Fault removed: ${describeFault(f)}.`, true) }, "Remove"),
            ]),
          )
        : h("p", { class: "muted" }, "No faults: every call is served normally."),
    );
  };

  // Runs a change, says what it did (or shows why not) and shows the rules now in force.
  const act = async (fn, message, refocus = false) => {
    replace(error);
    try {
      await fn();
    } catch (err) {
      replace(error, h("p", { class: "alert" }, describe(err)));
      return;
    }
    announce(message, "ok");
    try {
      paint(await api.get("/api/admin/faults"));
    } catch (err) {
      replace(error, h("p", { class: "alert" }, describe(err)));
    }
    // A removed rule takes its button along: the reader goes on from the list's heading.
    if (refocus) document.getElementById("active-h")?.focus();
  };

  paint(state);
  replace(
    view,
    h("h1", {}, "Fault injection"),
    error,
    enabled,
    h("h2", { id: "active-h", tabindex: "-1" }, "Active faults"),
    active,
    h(
      "form",
      {
        onsubmit: (e) => {
          e.preventDefault();
          const data = formData(e.target);
          const body = { service: data.service, method: data.method.trim() || "*", latency_ms: Number(data.latency_ms || 0), error_rate: Number(data.error_rate || 0) / 100 };
          act(() => api.put("/api/admin/faults", body), `Fault set: ${describeFault(body)}.`);
        },
      },
      h(
        "fieldset",
        {},
        h("legend", {}, "Set a fault"),
        h(
          "div",
          { class: "form-grid" },
          field("Service", "service", { type: "select", options: SERVICES.map((s) => [s, s]) }),
          field("Method (or *)", "method", { value: "*", required: true }),
          field("Added latency (ms)", "latency_ms", { type: "number", min: "0", max: "30000", step: "1", value: "0" }),
          field("Error rate (%)", "error_rate", { type: "number", min: "0", max: "100", step: "0.1", value: "0" }),
        ),
        h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Set fault"), h("button", { type: "button", class: "danger", onclick: () => act(() => api.delete("/api/admin/faults"), "All faults cleared.", true) }, "Clear all")),
      ),
    ),
  );
}

// ---- start ---------------------------------------------------------------------------------

installSkipLink();
session.onChange(renderWho);
rerender = route(routes, view, {
  beforeRender: () => {
    renderWho();
    return session.signedIn ? undefined : signIn;
  },
  notFound: () => [h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview"))],
  onError: showError,
});
