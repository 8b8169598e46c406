// ondrop's dashboard: plain JavaScript over the platform's own REST API, nothing loaded
// from anywhere else. The credentials live in this script's memory only, never in the
// browser's storage: an exposed service is served on the platform's origin, and its pages
// could read that storage. Reloading the page asks to sign in again.
"use strict";

const PHASES = ["Pending", "Running", "Succeeded", "Failed", "Cancelled", "Refused"];
const LISTED = 200; // files listed per folder
let credentials = "";
let timers = [];
// The view shown: each navigation counts one more, and a view whose answers come after it
// was left draws nothing.
let generation = 0;
const showing = () => { const mine = generation; return () => mine === generation; };
function stop() { timers.forEach(clearInterval); timers = []; generation += 1; }

// -- small helpers ----------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}
const svg = (tag, attrs = {}, ...children) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
};
const enc = encodeURIComponent;
const path = (p) => p.split("/").map(enc).join("/");
const every = (ms, fn) => { fn(); const timer = setInterval(fn, ms); timers.push(timer); return timer; };
const seconds = (s) => (s === null || s === undefined ? "" : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(s < 10 ? 2 : 0)} s`);
const bytes = (n) => (n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : n < 2 ** 30 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 2 ** 30).toFixed(1)} GiB`);

function base64(text) {
  let binary = "";
  for (const b of new TextEncoder().encode(text)) binary += String.fromCharCode(b);
  return btoa(binary);
}

class Refused extends Error {}
class Forbidden extends Error {} // signed in, but this is the admin's

async function api(method, url, body, raw = false) {
  const headers = { Authorization: credentials, "X-Requested-With": "ondrop-ui" };
  let data = body;
  if (body !== undefined && typeof body !== "string" && !(body instanceof Blob)) {
    headers["Content-Type"] = "application/json";
    data = JSON.stringify(body);
  }
  const answer = await fetch(url, { method, headers, body: data });
  if (answer.status === 401) throw new Refused("the platform refused these credentials");
  if (!answer.ok) {
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail || detail; } catch (e) { /* not JSON */ }
    const Kind = answer.status === 403 ? Forbidden : Error;
    throw new Kind(`${answer.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return raw ? answer : answer.status === 204 ? null : answer.json();
}

function failed(where, error) {
  if (error instanceof Refused) { signOut(error.message); return; }
  where.replaceChildren(h("p", { class: "error", role: "alert" }, String(error.message || error)));
}

// -- sign-in ------------------------------------------------------------------------------
function signOut(why = "") {
  stop();
  credentials = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("view").replaceChildren();
  const form = document.getElementById("signin");
  form.hidden = false;
  document.getElementById("signin-error").textContent = why;
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  const token = form.token.value.trim();
  credentials = token ? `Bearer ${token}` : `Basic ${base64(`${form.user.value}:${form.password.value}`)}`;
  try {
    await api("GET", "/system/services");
  } catch (error) {
    credentials = "";
    document.getElementById("signin-error").textContent =
      error instanceof Refused ? "Refused: the user name, password or token is wrong." : String(error.message);
    return;
  }
  form.password.value = "";
  form.token.value = "";
  form.hidden = true;
  route();
}

// -- services -------------------------------------------------------------------------------
const paths = (list) => (list || []).map((io) => `${io.storage_provider || "minio.default"}:${io.path}`);

function servicesView(view) {
  const list = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading…"));
  const chains = h("div", { class: "card" });
  const refresh = servicesOf(list, chains, showing());
  view.replaceChildren(h("h1", {}, "Services"), list, chains, applyForm(refresh));
  refresh();
}

// A function that draws the services into `list` and their chains into `chains`, while
// the view is `live`.
const servicesOf = (list, chains, live) => async function refresh() {
  let services;
  try { services = await api("GET", "/system/services"); } catch (error) { if (live()) failed(list, error); return; }
  const counts = await Promise.all(services.map((s) =>
    api("GET", `/system/logs/${enc(s.name)}?limit=1`).then((a) => a.counts || {}, () => ({}))));
  if (!live()) return;
  if (!services.length) {
    list.replaceChildren(h("p", {}, "No services yet: apply an FDL below."));
  } else {
    list.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ["Service", "Input", "Output", "Runtime", "Pool", "Jobs", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, services.map((s, i) => h("tr", { "data-service": s.name },
        h("td", {}, h("a", { href: `#/service/${enc(s.name)}` }, s.name)),
        h("td", {}, paths(s.input).map((p) => h("div", {}, h("code", {}, p)))),
        h("td", {}, paths(s.output).map((p) => h("div", {}, h("code", {}, p)))),
        h("td", {}, s.image ? h("code", {}, s.image) : "script"),
        h("td", {}, s.mode || "faas"),
        h("td", {}, PHASES.filter((p) => counts[i][p]).map((p) => h("div", { class: `status-${p}` }, `${counts[i][p]} ${p.toLowerCase()}`))),
        h("td", {}, h("button", { class: "danger", type: "button", onclick: () => remove(s.name, refresh) }, "Delete")),
      )))));
  }
  chains.replaceChildren(h("h2", {}, "Chains"), chainPicture(services));
};

async function remove(name, done) {
  if (!confirm(`Delete the service ${name} and its jobs? Its files stay.`)) return;
  try { await api("DELETE", `/system/services/${enc(name)}`); } catch (error) { alert(error.message); }
  done();
}

function applyForm(done) {
  const text = h("textarea", { name: "fdl", placeholder: "functions:\n  oscar:\n  - my-cluster:\n      name: shout\n      script: shout.sh\n      input:\n      - path: shout/in", "aria-label": "FDL" });
  const files = h("input", { type: "file", multiple: true, name: "files", "aria-label": "FDL and script files" });
  const result = h("div", { id: "apply-result" });
  const form = h("form", { class: "card", id: "apply" },
    h("h2", {}, "Create or update from an FDL"),
    h("p", { class: "muted" }, "Paste an FDL (OSCAR's, SCAR's or ondrop's), or choose its file with the scripts it names."),
    text, h("label", {}, "Files ", files), h("button", { class: "primary", type: "submit" }, "Apply"), result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const scripts = {};
    let fdl = text.value;
    let source = "";
    for (const file of files.files) {
      const content = await file.text();
      if (!fdl.trim() && !source && /\.ya?ml$/i.test(file.name)) { fdl = content; source = file.name; } else scripts[file.name] = content;
    }
    const from = source ? `The FDL is ${source}` : "The FDL is the text above";
    const sent = Object.keys(scripts);
    const read = h("p", { class: "muted" }, `${from}${sent.length ? `; scripts sent: ${sent.join(", ")}` : ""}.`);
    try {
      const answer = await api("POST", "/system/apply", { fdl, scripts, ...(source ? { source } : {}) });
      const said = [];
      for (const k of ["created", "updated", "unchanged"]) if (answer[k].length) said.push(`${k}: ${answer[k].join(", ")}`);
      result.replaceChildren(h("p", { role: "status" }, said.join("; ")), read, ...answer.warnings.map((w) => h("p", { class: "muted" }, w)));
      done();
    } catch (error) { failed(result, error); result.append(read); }
  });
  return form;
}

function chainPicture(services) {
  // service A feeds B when a folder A writes to is, or holds, one B reads from
  const edges = [];
  for (const a of services) for (const out of paths(a.output)) for (const b of services) for (const inp of paths(b.input)) {
    if (inp === out || inp.startsWith(`${out}/`) || out.startsWith(`${inp}/`)) edges.push([a.name, b.name, out]);
  }
  if (!edges.length) return h("p", { class: "muted", id: "chains" }, "No service feeds another.");
  const names = services.map((s) => s.name);
  const depth = Object.fromEntries(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++) for (const [a, b] of edges) if (a !== b) depth[b] = Math.max(depth[b], Math.min(depth[a] + 1, names.length));
  const columns = {};
  for (const n of names) (columns[depth[n]] = columns[depth[n]] || []).push(n);
  const place = {};
  for (const [d, col] of Object.entries(columns)) col.forEach((n, i) => { place[n] = [20 + d * 330, 30 + i * 70]; });
  const width = (Math.max(...Object.values(depth)) + 1) * 330 - 140;
  const height = 20 + Math.max(...Object.values(columns).map((c) => c.length)) * 70;
  const picture = svg("svg", { id: "chains", viewBox: `0 0 ${width} ${height}`, width, role: "img", "aria-label": "chains of services" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#5d6576" }))));
  for (const [a, b, via] of edges) {
    const [x1, y1] = place[a]; const [x2, y2] = place[b];
    picture.append(svg("line", { x1: x1 + 150, y1: y1 + 20, x2: x2, y2: y2 + 20, stroke: "#5d6576", "marker-end": "url(#arrow)", "data-edge": `${a}->${b}` }),
      svg("text", { x: (x1 + 150 + x2) / 2, y: (y1 + y2) / 2 + 12, fill: "#5d6576", "text-anchor": "middle" }, via.split(":").pop()));
  }
  for (const n of names) {
    const [x, y] = place[n];
    picture.append(svg("a", { href: `#/service/${enc(n)}` }, svg("rect", { x, y, width: 150, height: 40, rx: 6, fill: "#fff", stroke: "#2458c6" }),
      svg("text", { x: x + 10, y: y + 25, fill: "#1d2330" }, n)));
  }
  return picture;
}

// -- a service: its jobs, a job's log, its files ---------------------------------------
async function serviceView(view, name) {
  const live = showing();
  let service;
  try { service = await api("GET", `/system/services/${enc(name)}`); } catch (error) { if (live()) failed(view, error); return; }
  if (!live()) return;
  const jobs = h("div", { class: "card", id: "jobs" });
  const log = h("div", { class: "card", id: "log", hidden: true });
  const files = h("div", { class: "card", id: "files" });
  view.replaceChildren(h("h1", {}, service.name), jobs, log, files);
  let following = null;
  const showLog = (job) => { following = job; log.hidden = false; refreshLog(); };
  const refreshLog = async () => {
    const job = following;
    if (!job) return;
    try {
      const [text, detail] = await Promise.all([
        api("GET", `/system/logs/${enc(name)}/${enc(job)}`, undefined, true).then((a) => a.text()),
        api("GET", `/system/jobs/${enc(name)}/${enc(job)}`)]);
      if (job !== following) return; // another job's log was asked for meanwhile
      log.replaceChildren(h("h2", {}, `Log of ${job}`), h("p", { class: `status-${detail.status}` }, detail.status, detail.reason ? ` — ${detail.reason}` : ""),
        h("pre", { id: "log-text" }, text || "(nothing written yet)"));
    } catch (error) { failed(log, error); }
  };
  const refreshJobs = async () => {
    try {
      const answer = await api("GET", `/system/logs/${enc(name)}?limit=100`);
      const rows = Object.entries(answer.jobs);
      jobs.replaceChildren(h("h2", {}, "Jobs"),
        h("p", { class: "muted" }, PHASES.filter((p) => answer.counts[p]).map((p) => `${answer.counts[p]} ${p.toLowerCase()}`).join(" · ") || "No jobs yet: drop a file into an input folder below."),
        rows.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Job", "Status", "Input", "Node", "Pool", "Attempts", "Duration", "Reason", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, rows.map(([id, j]) => h("tr", { "data-job": id },
            h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showLog(id); } }, id)),
            h("td", { class: `status-${j.status}` }, j.status), h("td", {}, h("code", {}, j.input)), h("td", {}, j.node),
            h("td", {}, j.pool), h("td", {}, j.attempts), h("td", {}, seconds(j.duration)), h("td", {}, j.reason),
            h("td", { class: "actions" },
              ["Failed", "Cancelled"].includes(j.status) && h("button", { type: "button", onclick: () => act(`/system/jobs/${enc(name)}/${enc(id)}/retry`) }, "Retry"),
              ["Pending", "Running"].includes(j.status) && h("button", { type: "button", class: "danger", onclick: () => act(`/system/jobs/${enc(name)}/${enc(id)}/cancel`) }, "Cancel")),
          )))) : "");
    } catch (error) { failed(jobs, error); }
  };
  const act = async (url) => { try { await api("POST", url); } catch (error) { alert(error.message); } refreshJobs(); };
  every(2000, refreshJobs);
  every(1500, refreshLog);
  filesOf(files, service);
}

function filesOf(card, service) {
  card.replaceChildren(h("h2", {}, "Files"));
  const folders = [...(service.input || []).map((io) => ["input", io]), ...(service.output || []).map((io) => ["output", io])];
  const preview = h("div", { class: "preview", id: "preview" });
  const mine = [];
  const forbidden = () => { // files are the admin's: an OIDC user sees a line, not errors
    mine.forEach(clearInterval);
    card.replaceChildren(h("h2", {}, "Files"), h("p", { class: "muted" }, "The files of a service's folders are the admin's to see."));
  };
  for (const [kind, io] of folders) {
    const provider = io.storage_provider || "minio.default";
    const listing = h("div", {});
    const refresh = async () => {
      try {
        const answer = await api("GET", `/system/files/${enc(provider)}?prefix=${enc(io.path)}&limit=${LISTED}`);
        listing.replaceChildren(answer.objects.length ? h("table", {}, h("tbody", {}, answer.objects.map((o) => h("tr", { "data-key": o.key },
          h("td", {}, h("code", {}, o.key)), h("td", {}, bytes(o.size)),
          h("td", { class: "actions" },
            h("button", { type: "button", onclick: () => download(provider, o.key) }, "Download"),
            h("button", { type: "button", onclick: () => show(preview, provider, o.key) }, "Preview")))))) : h("p", { class: "muted" }, "Empty."),
          ...(answer.truncated ? [h("p", { class: "muted" }, `The first ${LISTED} files, in name order; more are not shown.`)] : []));
      } catch (error) {
        if (error instanceof Forbidden) forbidden();
        else failed(listing, error);
      }
    };
    const section = h("section", { "data-folder": `${provider}:${io.path}` }, h("h3", {}, `${kind}: `, h("code", {}, `${provider}:${io.path}`)), listing);
    if (kind === "input") section.append(dropZone(provider, io.path, refresh));
    card.append(section);
    mine.push(every(3000, refresh));
  }
  card.append(preview);
}

function dropZone(provider, folder, done) {
  const bars = h("div", {});
  const picker = h("input", { type: "file", multiple: true, "aria-label": `upload into ${folder}` });
  const zone = h("div", { class: "drop" }, "Drop files here to upload them into ", h("code", {}, folder), " (or ", picker, ")", bars);
  const send = (list) => { for (const file of list) upload(provider, `${folder}/${file.name}`, file, bars, done); };
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); send(e.dataTransfer.files); });
  picker.addEventListener("change", () => send(picker.files));
  return zone;
}

function upload(provider, key, file, bars, done) {
  const bar = h("progress", { max: 1, value: 0, "data-upload": file.name });
  const said = h("span", {}, `${file.name}: 0%`);
  bars.append(h("div", {}, said, bar));
  const request = new XMLHttpRequest();
  request.open("PUT", `/system/files/${enc(provider)}/${path(key)}`);
  request.setRequestHeader("Authorization", credentials);
  request.setRequestHeader("X-Requested-With", "ondrop-ui");
  request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) { bar.value = e.loaded / e.total; said.textContent = `${file.name}: ${Math.round(100 * bar.value)}%`; } });
  request.addEventListener("load", () => {
    bar.value = 1;
    said.textContent = request.status < 300 ? `${file.name}: uploaded` : `${file.name}: refused (${request.status}) ${request.responseText}`;
    said.className = request.status < 300 ? "status-Succeeded" : "error";
    done();
  });
  request.addEventListener("error", () => { said.textContent = `${file.name}: the upload failed (the platform could not be reached)`; said.className = "error"; });
  request.send(file);
}

async function blobOf(provider, key) {
  return (await api("GET", `/system/files/${enc(provider)}/${path(key)}`, undefined, true)).blob();
}

async function download(provider, key) {
  try {
    const url = URL.createObjectURL(await blobOf(provider, key));
    const link = h("a", { href: url, download: key.split("/").pop() });
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) { alert(error.message); }
}

async function show(where, provider, key) {
  try {
    const blob = await blobOf(provider, key);
    const title = h("h3", {}, h("code", {}, key));
    if (/\.(png|jpe?g|gif|webp|bmp)$/i.test(key)) where.replaceChildren(title, h("img", { src: URL.createObjectURL(blob), alt: key }));
    else where.replaceChildren(title, h("pre", {}, (await blob.slice(0, 65536).text()) || "(empty)"));
  } catch (error) { failed(where, error); }
}

// -- pools and nodes ---------------------------------------------------------------------
async function poolsView(view) {
  const card = h("div", { class: "card" });
  view.replaceChildren(h("h1", {}, "Pools and nodes"), card);
  every(3000, async () => {
    try {
      const status = await api("GET", "/system/status");
      const running = (pool) => Object.values(status.running[pool] || {}).reduce((a, b) => a + b, 0);
      card.replaceChildren(
        h("table", { id: "pools" }, h("thead", {}, h("tr", {}, ["Pool", "Capacity", "Running", "Queued"].map((t) => h("th", {}, t)))),
          h("tbody", {}, Object.entries(status.pools).map(([name, pool]) => h("tr", {}, h("td", {}, name),
            h("td", {}, Object.entries(pool).filter(([k]) => k !== "queued").map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ")),
            h("td", {}, running(name)), h("td", {}, pool.queued))))),
        h("h2", {}, "Nodes"),
        h("table", { id: "nodes" }, h("thead", {}, h("tr", {}, ["Node", "CPUs", "Memory", "GPUs"].map((t) => h("th", {}, t)))),
          h("tbody", {}, status.cluster.nodes.map((n) => h("tr", {}, h("td", {}, n.name),
            h("td", {}, `${n.cpu.usage_cores} of ${n.cpu.capacity_cores} in use`),
            h("td", {}, `${bytes(n.memory.usage_bytes)} of ${bytes(n.memory.capacity_bytes)}`), h("td", {}, n.gpu))))),
        h("p", { class: "muted" }, `health: ${status.health.status}${status.health.problems.length ? ` — ${status.health.problems.join("; ")}` : ""}`));
    } catch (error) {
      if (error instanceof Forbidden) card.replaceChildren(h("p", {}, "Pools and nodes are the admin's to see."));
      else failed(card, error);
    }
  });
}

// -- the last hour -------------------------------------------------------------------------
function bars(rows, keys, colors, label) {
  const width = 720, height = 160, top = Math.max(1, ...rows.map((r) => keys.reduce((a, k) => a + r[k], 0)));
  const step = width / rows.length;
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, width: "100%", role: "img", "aria-label": label });
  rows.forEach((r, i) => {
    let y = height;
    keys.forEach((k, j) => {
      const tall = (r[k] / top) * height;
      if (tall > 0) picture.append(svg("rect", { x: i * step, y: y - tall, width: Math.max(1, step - 1), height: tall, fill: colors[j] }, svg("title", {}, `${r[k]} ${k}`)));
      y -= tall;
    });
  });
  picture.append(svg("text", { x: 0, y: height + 16, fill: "#5d6576" }, `${label}, the highest ${top}: ${keys.join(", ")}`));
  return picture;
}

async function activityView(view) {
  const card = h("div", { class: "card", id: "activity" });
  view.replaceChildren(h("h1", {}, "The last hour"), card);
  every(5000, async () => {
    try {
      const a = await api("GET", "/system/history?minutes=60");
      const row = (name, p) => h("tr", {}, h("td", {}, name), ...["p50", "p90", "p99"].map((k) => h("td", {}, p[k] === null ? "—" : seconds(p[k]))));
      card.replaceChildren(
        h("h2", {}, "Jobs ended per minute"), bars(a.minutes, ["succeeded", "failed", "cancelled"], ["#1d7f46", "#b3261e", "#9aa0ab"], "jobs per minute"),
        h("h2", {}, "Queue depth"), bars(a.minutes, ["queued"], ["#8a6d00"], "jobs queued"),
        h("h2", {}, "Times"),
        h("table", {}, h("thead", {}, h("tr", {}, ["", "p50", "p90", "p99"].map((t) => h("th", {}, t)))),
          h("tbody", {}, row("landing to start", a.wait_seconds), row("run time", a.run_seconds))),
        h("p", { class: "muted" }, `${a.jobs} jobs in the window`));
    } catch (error) { failed(card, error); }
  });
}

// -- routing ------------------------------------------------------------------------------
function route() {
  stop();
  if (!credentials) { signOut(); return; }
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  const view = document.getElementById("view");
  const [, page, arg] = (location.hash || "#/").split("/");
  if (page === "service" && arg) serviceView(view, decodeURIComponent(arg));
  else if (page === "pools") poolsView(view);
  else if (page === "activity") activityView(view);
  else servicesView(view);
}

document.getElementById("signin").addEventListener("submit", signIn);
document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
