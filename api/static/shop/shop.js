// InterestGraph shop page: plain DOM, no build. Every call to the API goes through `api`.
"use strict";

const params = new URLSearchParams(location.search);
const NEW_SHOPPER = "__new__";
const SHELF_K = 12;
const FEATURE_WAIT_MS = 30000; // give up waiting for the live job after this long
const items = new Map(); // item_id -> {title, category}: names for the profile panel
const state = { user: null, gridOffset: 0, product: null, shelfVersion: 0, firstShelf: true };
// Timings the benchmark reads (bench/shop_bench.py): ms since navigation / since a click.
window.shopTimings = { firstShelfMs: null, updates: [] };

// -- the API: one place for every call (headers, errors) ------------------------------------
const api = {
  key() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
    if (fromHash) {
      sessionStorage.setItem("ig-key", fromHash); // the key never reaches a server log
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("ig-key");
  },
  headers(json) {
    const h = { Accept: "application/json" };
    if (json) h["Content-Type"] = "application/json";
    const key = this.key();
    if (key) h["X-API-Key"] = key;
    return h;
  },
  async call(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: this.headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error(data.message || data.detail || `HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return data;
  },
  get(path, query) {
    const q = query ? "?" + new URLSearchParams(query) : "";
    return this.call("GET", path + q);
  },
  post(path, body) {
    return this.call("POST", path, body);
  },
};

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

function remember(list) {
  for (const it of list) items.set(it.item_id, { title: it.title, category: it.category });
}

// -- cards -------------------------------------------------------------------------------------
function card(it, source, requestId) {
  const label = `${it.title || it.item_id}, ${it.category || "no category"}` +
    (it.explored ? ", explored" : "");
  const button = el(
    "button",
    {
      type: "button", className: "card", "aria-label": label, "data-item-id": it.item_id,
      "data-category": it.category || "", "data-source": source,
      "data-request-id": requestId, "data-explored": it.explored ? "true" : null,
    },
    el("span", { className: "title", textContent: it.title || it.item_id }),
    el("span", { className: "cat", textContent: it.category || "" }),
  );
  if (it.reason) button.append(el("span", { className: "reason", textContent: it.reason }));
  if (it.explored) {
    button.append(el("span", {
      className: "badge", textContent: "explored",
      title: `Shown to learn (propensity ${Number(it.propensity).toFixed(3)})`,
    }));
  }
  button.addEventListener("click", () => openProduct(it, source, requestId));
  return el("li", {}, button);
}

// -- shelf ---------------------------------------------------------------------------------------
async function loadShelf(clickedAt) {
  const query = { k: SHELF_K };
  for (const p of ["explore", "policy"]) if (params.get(p)) query[p] = params.get(p);
  if (matchMedia("(max-width: 800px)").matches) query.device = "mobile";
  const user = state.user;
  let body;
  try {
    body = await api.get(`/v1/recommend/${encodeURIComponent(user)}`, query);
  } catch (e) {
    $("shelf-meta").textContent = `No recommendations: ${e.message}`;
    return;
  }
  if (user !== state.user) return; // the shopper changed meanwhile
  remember(body.items);
  const old = new Set([...$("shelf").querySelectorAll(".card")].map((b) => b.dataset.itemId));
  const cards = body.items.map((it) => card(it, "shelf", body.request_id));
  if (!state.firstShelf) {
    for (const li of cards) if (!old.has(li.firstChild.dataset.itemId)) li.firstChild.classList.add("new");
  }
  $("shelf").replaceChildren(...cards);
  $("shelf").setAttribute("aria-busy", "false");
  state.shelfVersion += 1;
  $("shelf").dataset.version = state.shelfVersion;
  $("shelf").dataset.requestId = body.request_id;
  const explored = body.items.filter((i) => i.explored).length;
  $("shelf-meta").textContent = `${body.items.length} items · policy ${body.policy} · ` +
    `${explored} explored · ${body.known ? "known shopper" : "new shopper"}` +
    (body.model_version ? ` · model ${body.model_version}` : "");
  notice(body.degraded
    ? "Degraded mode: the feature store (Redis) is unreachable, so the shelf shows popular " +
      "items rather than ones chosen for this shopper. It recovers by itself."
    : api.key() ? "" : "Read-only: open the address `ig shop` printed (it carries the API key) " +
      "to send clicks.");
  if (state.firstShelf) {
    state.firstShelf = false;
    window.shopTimings.firstShelfMs = performance.now();
  }
  if (clickedAt !== undefined) {
    window.shopTimings.updates.push(performance.now() - clickedAt);
  }
}

// -- product: open (view / click), cart, buy --------------------------------------------------
async function openProduct(it, source, requestId) {
  state.product = { it, source, requestId };
  $("product-title").textContent = it.title || it.item_id;
  $("product-category").textContent = `${it.category || "no category"} · item ${it.item_id}`;
  $("product-reason").textContent = it.reason ? `Why: ${it.reason}` : "";
  $("product-status").textContent = "";
  $("product").showModal();
  // A product opened from an answer (shelf, search) names it: the click is attributed to
  // the slot that showed it (explore/exploit learning) and the view to that answer too.
  const types = requestId ? ["click", "view"] : ["view"];
  await send(types, it);
}

async function send(types, it) {
  const clickedAt = performance.now();
  const { requestId } = state.product || {};
  const events = types.map((t) => ({
    user_id: state.user, item_id: it.item_id, event_type: t,
    ...(it.category ? { category_id: it.category } : {}),
    ...(requestId ? { request_id: requestId } : {}),
  }));
  try {
    await api.post("/v1/events", { events });
  } catch (e) {
    $("product-status").textContent = `Not recorded: ${e.message}`;
    return;
  }
  $("product-status").textContent = `Recorded ${types.join(" + ")}; waiting for the live job…`;
  const seen = await waitForFeatures();
  $("product-status").textContent = seen
    ? "In your live profile; the shelf has moved."
    : "Recorded; the live job has not written it yet (see Live job).";
  await loadShelf(clickedAt);
}

async function waitForFeatures() {
  // The live job acknowledges an event once its features are online: wait until it has
  // acknowledged everything on the stream (ours included), then read the profile.
  const deadline = performance.now() + FEATURE_WAIT_MS;
  while (performance.now() < deadline) {
    const s = await loadLive();
    if (s && s.lag === 0 && s.pending === 0) return (await loadProfile()) !== null;
    if (s && s.behind_s > 1) {
      $("product-status").textContent = `Recorded; the live job is ${s.behind_s.toFixed(1)} s behind…`;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await loadProfile();
  return false;
}

// -- side panel: live profile and live job ----------------------------------------------------
const WINDOW_TYPES = ["views", "carts", "purchases", "clicks"];
const WINDOWS = ["1h", "24h", "7d"];

async function loadProfile() {
  const user = state.user;
  let p;
  try {
    p = await api.get(`/v1/users/${encodeURIComponent(user)}/profile`);
  } catch (e) {
    $("profile").replaceChildren(el("p", { className: "meta", textContent: `Unavailable: ${e.message}` }));
    return null;
  }
  if (user !== state.user) return null;
  renderProfile(p);
  return p;
}

async function nameItems(ids) {
  // Titles for ids the page has not shown yet (the profile lists items from any session).
  const missing = ids.filter((id) => !items.has(id));
  if (!missing.length) return false;
  for (const id of missing) items.set(id, { title: null, category: null }); // ask once
  remember(await api.get("/v1/items", { ids: missing.join(",") }).catch(() => []));
  return true;
}

function renderProfile(p) {
  const f = p.features;
  const shown = p.recent_items.slice(0, 8);
  state.profile = p;
  nameItems(shown).then((named) => named && state.profile === p && renderProfile(p));
  const scores = f.user_interest__top_category_scores || [];
  const max = Math.max(...scores, 1e-9);
  const cats = el("div", { id: "top-categories" }, ...p.top_categories.map((c, i) =>
    el("div", { className: "bar", "data-category": c },
      el("span", { textContent: c, title: c }),
      el("meter", { min: 0, max, value: scores[i] || 0, "aria-label": `${c} affinity` }),
      el("span", { textContent: (scores[i] || 0).toFixed(2) }))));
  const recent = el("ol", { id: "recent-items" }, ...shown.map((id) => {
    const known = items.get(id);
    return el("li", { "data-item-id": id, textContent: known && known.title ? known.title : id });
  }));
  const head = el("tr", {}, el("th", { textContent: "count" }), ...WINDOWS.map((w) => el("th", { textContent: w })));
  const rows = WINDOW_TYPES.map((t) => el("tr", {}, el("td", { textContent: t }),
    ...WINDOWS.map((w) => el("td", { textContent: f[`user_behavior__${t}_${w}`] ?? 0 }))));
  $("profile").replaceChildren(
    el("p", { className: "meta", textContent:
      `${p.user_id} · ${p.known ? `${f.user_behavior__events_total} events` : "no history yet"}` }),
    el("h3", { textContent: "Top categories" }), cats,
    el("h3", { textContent: "Recent items" }), recent,
    el("h3", { textContent: "Window counts" }), el("table", {}, head, ...rows),
  );
}

async function loadLive() {
  let s;
  try {
    s = await api.get("/v1/stream");
  } catch (e) {
    $("live").replaceChildren(el("dt", { textContent: "status" }), el("dd", { textContent: e.message }));
    return null;
  }
  const running = s.job_seen_s !== null && s.job_seen_s < 10;
  const rows = [
    ["status", running ? "running" : "not reading (start `ig stream`)"],
    ["freshness", s.behind_s === 0 ? "up to date" : `${s.behind_s.toFixed(1)} s behind`],
    ["lag", `${s.lag} undelivered · ${s.pending} in flight`],
    ["last poll", s.job_seen_s === null ? "never" : `${s.job_seen_s.toFixed(1)} s ago`],
    ["last event", s.last_event_age_s === null ? "none" : `${s.last_event_age_s.toFixed(1)} s ago`],
  ];
  $("live").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
  $("live").dataset.running = running;
  return s;
}

// -- grid, categories, search, shoppers -------------------------------------------------------
async function loadGrid(reset) {
  if (reset) {
    state.gridOffset = 0;
    $("grid").replaceChildren();
  }
  const query = { offset: state.gridOffset, limit: 24 };
  if ($("category").value) query.category = $("category").value;
  const page = await api.get("/v1/catalogue", query);
  remember(page.items);
  $("grid").append(...page.items.map((it) => card(it, "grid")));
  state.gridOffset += page.items.length;
  $("more").hidden = state.gridOffset >= page.total;
}

async function loadCategories() {
  const cats = await api.get("/v1/categories");
  $("category").append(...cats.map((c) => el("option", { value: c.category, textContent: `${c.category} (${c.items})` })));
}

async function search(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  $("results-section").hidden = false;
  $("results-h").textContent = `Search results for “${q}”`;
  try {
    const body = await api.get("/v1/search", { q, user_id: state.user, k: 12 });
    remember(body.items);
    $("results").replaceChildren(...body.items.map((it) => card(it, "search", body.request_id)));
  } catch (e) {
    $("results").replaceChildren(el("li", { className: "meta", textContent: `Search failed: ${e.message}` }));
  }
}

async function loadShoppers() {
  let shoppers = [];
  try {
    shoppers = await api.get("/v1/users", { limit: 12 });
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) throw e; // no model: main() says so
    notice(`Known shoppers and live profiles need a key (${e.message}): open the address \`ig shop\` printed.`);
  }
  const select = $("shopper");
  select.append(el("option", { value: NEW_SHOPPER, textContent: "New shopper" }),
    ...shoppers.map((s) => el("option", { value: s.user_id, textContent: `${s.user_id} (${s.history} items)` })));
  const wanted = params.get("user");
  if (wanted && !shoppers.some((s) => s.user_id === wanted)) {
    select.append(el("option", { value: wanted, textContent: wanted }));
  }
  select.value = wanted || (shoppers[0] ? shoppers[0].user_id : NEW_SHOPPER);
}

function pickShopper() {
  const v = $("shopper").value;
  state.user = v === NEW_SHOPPER ? `guest-${crypto.randomUUID().slice(0, 8)}` : v;
  if (v === NEW_SHOPPER) {
    $("shopper").append(el("option", { value: state.user, textContent: `${state.user} (new)` }));
    $("shopper").value = state.user;
  }
  state.firstShelf = state.shelfVersion === 0;
  $("results-section").hidden = true;
  return Promise.all([loadShelf(), loadProfile()]);
}

async function main() {
  $("search-form").addEventListener("submit", search);
  $("shopper").addEventListener("change", pickShopper);
  $("category").addEventListener("change", () => loadGrid(true));
  $("more").addEventListener("click", () => loadGrid(false));
  $("close").addEventListener("click", () => $("product").close());
  $("cart").addEventListener("click", () => state.product && send(["cart"], state.product.it));
  $("buy").addEventListener("click", () => state.product && send(["purchase"], state.product.it));
  api.key();
  try {
    await loadShoppers();
  } catch (e) {
    notice(`The API has no model to serve (${e.message}): run \`make train\`.`);
    return;
  }
  await Promise.all([pickShopper(), loadCategories(), loadGrid(true), loadLive()]);
  setInterval(loadLive, 2000);
}

main();
