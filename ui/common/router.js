// The hash router of the storefront and the console. Each route is [pattern, render, options]:
// the first pattern matching location.hash renders, with the pattern's groups as arguments and
// then a visit, whose onLeave(fn) registers a cleanup (a poll, a stream) run when the next view
// starts (a view routed from patterns with different numbers of groups must be wrapped). The navigation link of the view's section is marked (options.nav, or the render
// function's name), the previous view's status message is cleared, and focus moves to the new
// heading, except on the first view, which keeps the browser's focus (the skip link comes
// first). A view that fails is handed to onError, unless the reader has moved on meanwhile.
import { clearStaleStatus, focusMain, replace, spinner } from "/common/dom.js";

export function markNav(section) {
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.dataset.route === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// Starts routing: renders the current hash now and on every change. beforeRender(hash, options)
// may return false (it navigated elsewhere: nothing renders) or a render function to show
// instead (such as a sign-in form); notFound() returns the content of an unknown hash. Returns
// a function that renders the current hash again.
export function route(routes, view, { beforeRender, notFound, onError }) {
  let firstView = true;
  let cleanups = [];
  let current = 0;

  async function render() {
    for (const cleanup of cleanups.splice(0)) cleanup();
    const visit = ++current;
    const hash = location.hash || "#/";
    let found = null;
    for (const [pattern, fn, options = {}] of routes) {
      const match = hash.match(pattern);
      if (match) {
        found = { fn, options, args: match.slice(1) };
        break;
      }
    }
    const instead = beforeRender ? beforeRender(hash, found?.options || {}) : undefined;
    if (instead === false) return;
    const live = () => visit === current;
    const context = {
      get live() {
        return live();
      },
      // A cleanup registered by a view the reader already left runs at once.
      onLeave(fn) {
        if (live()) cleanups.push(fn);
        else fn();
      },
    };
    if (typeof instead === "function") {
      markNav("");
      clearStaleStatus();
      await instead(context);
    } else if (!found) {
      markNav("");
      replace(view, ...notFound());
    } else {
      markNav(found.options.nav || found.fn.name);
      clearStaleStatus();
      replace(view, spinner());
      try {
        await found.fn(...found.args, context);
      } catch (err) {
        if (live()) onError(err);
      }
    }
    if (!live()) return;
    if (!firstView) focusMain();
    firstView = false;
  }

  window.addEventListener("hashchange", render);
  render();
  return render;
}
