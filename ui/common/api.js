// The one client of the REST edge for the storefront and the console: same origin, JSON in and
// out, RFC 9457 problems turned into ApiError, and the access token renewed once with the
// refresh token when a request answers 401.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `request failed (${status})`);
    this.status = status;
    this.title = problem?.title || "";
    this.detail = problem?.detail || "";
    this.errors = Array.isArray(problem?.errors) ? problem.errors : [];
  }

  // A message for a person: the detail and, for validation problems, each field's complaint.
  describe() {
    const fields = this.errors
      .map((e) => [e.field || e.name || e.pointer, e.message || e.detail].filter(Boolean).join(": "))
      .filter(Boolean);
    return [this.detail || this.title || this.message, ...fields].join(" — ");
  }
}

// Tokens of one browser tab: kept in sessionStorage (gone when the tab closes), under a name
// per application so the storefront and the console sign in separately.
export class Session {
  constructor(name) {
    this.key = `shopmesh.${name}.session`;
    this.listeners = new Set();
  }

  get tokens() {
    try {
      return JSON.parse(sessionStorage.getItem(this.key) || "null");
    } catch {
      return null;
    }
  }

  set tokens(value) {
    if (value) sessionStorage.setItem(this.key, JSON.stringify(value));
    else sessionStorage.removeItem(this.key);
    for (const listener of this.listeners) listener(value);
  }

  get signedIn() {
    return Boolean(this.tokens?.access_token);
  }

  onChange(listener) {
    this.listeners.add(listener);
  }
}

// The anonymous cart of this browser, sent as X-Cart-Id until the shopper signs in.
export function anonymousCartId() {
  let id = localStorage.getItem("shopmesh.cart-id");
  if (!id) {
    id = crypto.randomUUID();
    localStorage.setItem("shopmesh.cart-id", id);
  }
  return id;
}

export function forgetAnonymousCart() {
  localStorage.removeItem("shopmesh.cart-id");
}

export class Api {
  constructor(session) {
    this.session = session;
    this.refreshing = null;
  }

  async request(method, path, { body, headers = {}, auth = true, cart = false, raw = false } = {}) {
    const send = () => {
      const h = { accept: "application/json, application/problem+json", ...headers };
      const tokens = this.session.tokens;
      if (auth && tokens?.access_token) h.authorization = `Bearer ${tokens.access_token}`;
      else if (cart) h["x-cart-id"] = anonymousCartId();
      if (body !== undefined) h["content-type"] = "application/json";
      return fetch(path, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    };
    let response = await send();
    if (response.status === 401 && auth && this.session.tokens?.refresh_token) {
      if (await this.refresh()) response = await send();
    }
    if (raw) return response;
    return Api.read(response);
  }

  static async read(response) {
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // One refresh at a time: parallel 401s wait for the same renewal.
  refresh() {
    if (!this.refreshing) {
      const refresh_token = this.session.tokens?.refresh_token;
      this.refreshing = fetch("/api/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ refresh_token }),
      })
        .then(async (response) => {
          if (!response.ok) {
            this.session.tokens = null;
            return false;
          }
          // Keep what the application stored beside the tokens (the email it shows).
          this.session.tokens = { ...this.session.tokens, ...(await response.json()) };
          return true;
        })
        .catch(() => false)
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  get(path, options) {
    return this.request("GET", path, options);
  }

  post(path, body, options = {}) {
    return this.request("POST", path, { ...options, body });
  }

  put(path, body, options = {}) {
    return this.request("PUT", path, { ...options, body });
  }

  patch(path, body, options = {}) {
    return this.request("PATCH", path, { ...options, body });
  }

  delete(path, options) {
    return this.request("DELETE", path, options);
  }

  async login(email, password) {
    const headers = {};
    const cartId = localStorage.getItem("shopmesh.cart-id");
    // The anonymous cart is merged into the account's cart by the login itself.
    if (cartId) headers["x-cart-id"] = cartId;
    const tokens = await this.request("POST", "/api/auth/login", {
      body: { email, password },
      headers,
      auth: false,
    });
    forgetAnonymousCart();
    this.session.tokens = tokens;
    return tokens;
  }

  async logout() {
    const refresh_token = this.session.tokens?.refresh_token;
    try {
      if (refresh_token) await this.post("/api/auth/logout", { refresh_token });
    } finally {
      this.session.tokens = null;
    }
  }

  // Server-Sent Events over fetch (EventSource cannot send the Authorization header). Calls
  // onEvent({event, id, data}) for each event and resolves when the server ends the stream.
  async stream(path, onEvent, signal) {
    const open = () =>
      fetch(path, {
        headers: {
          accept: "text/event-stream",
          authorization: `Bearer ${this.session.tokens?.access_token || ""}`,
        },
        signal,
      });
    let response = await open();
    if (response.status === 401 && (await this.refresh())) response = await open();
    if (response.status === 204) return;
    if (!response.ok) await Api.read(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const event = { event: "message", id: "", data: "" };
        const data = [];
        for (const line of block.split(/\r?\n/)) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(text);
          else if (field === "event") event.event = text;
          else if (field === "id") event.id = text;
        }
        if (data.length) {
          event.data = data.join("\n");
          onEvent(event);
        }
      }
    }
  }
}

export function money(amount) {
  if (!amount) return "";
  const value = Number(amount.amount) / 100;
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: amount.currency }).format(value);
  } catch {
    return `${value.toFixed(2)} ${amount.currency}`;
  }
}

export function minor(amount, currency = "USD") {
  return money({ amount, currency });
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}
