/* markovformer: readable on every screen (book/_ext/readable.py). */
(function () {
  "use strict";
  const script = document.currentScript;
  const MIN_SCALE = parseFloat((script && script.dataset.minMathScale) || "0.7");
  const article = () => document.querySelector("article.bd-article") || document.querySelector("main");

  // display equations wider than a narrow column (a window under 1200 px: at 1280 px every
  // equation fits as written, and the browser test checks that): a smaller type, down to MIN_SCALE
  const NARROW = 1200;
  function fitMath() {
    const root = article();
    if (!root) return;
    const narrow = window.innerWidth < NARROW;
    for (const c of root.querySelectorAll("mjx-container[display='true']")) {
      if (c.dataset.mfFont === undefined) c.dataset.mfFont = c.style.fontSize || "";
      c.style.fontSize = c.dataset.mfFont;
      const math = c.firstElementChild;
      if (!math) continue;
      const room = c.clientWidth, need = math.getBoundingClientRect().width;
      if (!narrow || need <= room + 0.5) continue;
      const base = parseFloat(c.dataset.mfFont) || 100;
      const scale = Math.max(MIN_SCALE, (room - 1) / need);
      c.style.fontSize = (base * scale).toFixed(1) + "%";
    }
  }

  // a table wider than its column: one card per row, each cell labelled with its header
  function fitTables() {
    const root = article();
    if (!root) return;
    for (const t of root.querySelectorAll("table")) {
      if (t.closest(".mf-live, .highlight, .mf-zoom-view")) continue;
      if (!t.dataset.mfLabelled) {
        const heads = Array.from(t.querySelectorAll("thead th"), (th) => th.innerText.trim());
        for (const tr of t.querySelectorAll("tbody tr")) {
          Array.from(tr.children).forEach((td, i) => { td.dataset.mfLabel = heads[i] || ""; });
        }
        t.dataset.mfLabelled = "1";
      }
      t.classList.remove("mf-cards");
      const holder = t.parentElement;
      const room = Math.min(holder.clientWidth, root.clientWidth);
      if (t.getBoundingClientRect().width > room + 1 && t.querySelector("thead th")) {
        t.classList.add("mf-cards");
      }
    }
  }

  // a figure shown smaller than it was drawn: tap to see it at full size
  function markZoomable() {
    const root = article();
    if (!root) return;
    for (const img of root.querySelectorAll("figure img, .cell_output img")) {
      if (!img.complete || !img.naturalWidth) continue;
      const shrunk = img.naturalWidth > img.getBoundingClientRect().width * 1.02;
      img.classList.toggle("mf-zoomable", shrunk);
      if (shrunk) img.title = "Tap to see this figure at full size";
      else img.removeAttribute("title");
    }
  }
  function closeZoom() {
    const view = document.querySelector(".mf-zoom-view");
    if (view) view.remove();
  }
  function openZoom(img) {
    closeZoom();
    const view = document.createElement("div");
    view.className = "mf-zoom-view";
    view.setAttribute("role", "dialog");
    view.setAttribute("aria-label", "The figure at full size");
    const note = document.createElement("p");
    note.textContent = "Full size: scroll to read it, tap to close.";
    const big = document.createElement("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt;
    big.width = img.naturalWidth;
    view.append(note, big);
    view.addEventListener("click", closeZoom);
    document.body.append(view);
  }
  document.addEventListener("click", (ev) => {
    const img = ev.target.closest && ev.target.closest("img.mf-zoomable");
    if (img && !img.closest(".mf-zoom-view")) { ev.preventDefault(); openZoom(img); }
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeZoom(); });

  function fit() { fitMath(); fitTables(); markZoomable(); }
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(fit, 100);
  });
  // MathJax loads asynchronously: wait for it (if the page has math), then fit the equations
  function mathReady() {
    return new Promise((resolve) => {
      const t0 = Date.now();
      (function poll() {
        const mj = window.MathJax;
        if (mj && mj.startup && mj.startup.promise) mj.startup.promise.then(resolve, resolve);
        else if (!document.querySelector(".math") || Date.now() - t0 > 20000) resolve();
        else setTimeout(poll, 50);
      })();
    });
  }
  let done;
  // the browser test waits for this before it measures
  window.MFReadable = { ready: new Promise((r) => { done = r; }), fit: fit };
  function start() {
    fitTables();
    const root = article();
    if (root) {
      for (const img of root.querySelectorAll("img")) img.addEventListener("load", markZoomable);
    }
    markZoomable();
    window.addEventListener("load", fit);
    mathReady().then(() => { fit(); done(); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
