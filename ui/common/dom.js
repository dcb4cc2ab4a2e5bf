// A few DOM helpers. Text always goes in as text nodes, never as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Polite status messages for screen readers and everyone else: the element with id "status"
// is an aria-live region in every page.
export function announce(message, kind = "info") {
  const region = document.getElementById("status");
  if (!region) return;
  region.dataset.kind = kind;
  region.dataset.at = String(Date.now());
  region.textContent = "";
  // A fresh text node is read out even when the message repeats.
  requestAnimationFrame(() => {
    region.textContent = message;
  });
}

// Clears a message left by an earlier view; one announced just before this navigation (such
// as "Signed in.") stays.
export function clearStaleStatus() {
  const region = document.getElementById("status");
  if (region && Date.now() - Number(region.dataset.at || 0) > 1500) region.textContent = "";
}

// A labelled form field. type "select" takes options [[value, label], ...].
export function field(label, name, { type = "text", value = "", options = [], ...attrs } = {}) {
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  let control;
  if (type === "select") {
    control = h(
      "select",
      { id, name, ...attrs },
      options.map(([v, text]) => h("option", { value: v, selected: String(v) === String(value) }, text)),
    );
  } else if (type === "textarea") {
    control = h("textarea", { id, name, ...attrs }, value);
  } else {
    control = h("input", { id, name, type, value, ...attrs });
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// Focus the main heading after a view change, so keyboard and screen-reader users start there.
export function focusMain() {
  const heading = document.querySelector("main h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

export function spinner(text = "Loading…") {
  return h("p", { class: "muted", role: "status" }, text);
}

// The skip link moves focus to the content without touching the hash (the pages route on it).
export function installSkipLink() {
  const link = document.querySelector(".skip-link");
  const main = document.getElementById("main");
  if (!link || !main) return;
  main.setAttribute("tabindex", "-1");
  link.addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
}
