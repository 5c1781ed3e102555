// firepath topology page: the fabric in layers, kept live by the replica's /v1/events stream (Server-Sent
// Events). Plain SVG and DOM, no library. Served by controller/page.py; the routes it reads are in docs/API.md.
'use strict';

const STATUS = ['down', 'up', 'drained', 'miscabled', 'one-way'];
const LIVENESS = ['dead', 'alive', 'unknown'];
const BAD = [1, 0, 0, 1, 1];          // statuses that take a link out of routing (not drained: on purpose)
const FULL_LIMIT = 400;               // switches: above this the page aggregates by pod and spine plane
const SILENCE_MS = 3000;              // no event (pings come every second) for this long: try the other replicas
const PROBE_MS = 1000;                // timeout of one replica probe during a failover
const SVGNS = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

// HTML from values: every value that goes into innerHTML is escaped, whatever its type or origin (a switch's
// client state is relayed from whatever answers on its REST port: tester bb40 F13 ran script through an
// unescaped programmed_version). Build markup only with html`...`: each ${value} is escaped unless it is
// markup html`...` built itself (an HTML object), or a list of such; innerHTML takes nothing else here.
class HTML { constructor(s) { this.s = s; } toString() { return this.s; } }
const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;'};
const esc = (s) => String(s).replace(/[&<>"'`]/g, (c) => ESC[c]);
const piece = (v) => (v instanceof HTML ? v.s : Array.isArray(v) ? v.map(piece).join('') : esc(v == null ? '–' : v));
const html = (strings, ...values) => new HTML(strings.reduce((out, s, i) => out + piece(values[i - 1]) + s));
const yes = (b) => (b == null ? '–' : b ? 'yes' : 'no');

// Test and debugging hooks: read-only state of the page.
const fp = window.fp = {
  ready: false, readyAt: null, drawnAt: null, header: null, serving: null, connects: 0, mode: null,
  appliedAt: {}, sentAt: {}, lastEventAt: 0, failovers: 0,
};

let V = null;                // the fabric view (GET /v1/view), with derived indexes
let status = null;           // Uint8Array per link: STATUS code
let alive = null;            // Uint8Array per switch: LIVENESS code
let replicas = [];           // [{id, url}] from the config; the page's own origin replaces its replica's url
let serving = null;          // the replica the stream comes from
let es = null;               // the EventSource
let following = false;       // after a failover the page prefers the master; a page opened on a backup stays
let searching = false;
let view = {mode: null, group: null};
let els = {link: new Map(), sw: new Map(), box: new Map(), edge: new Map(), row: new Map()};
let selected = null;         // {kind: 'link'|'switch', i}
let counts = null;           // aggregated counts (see recount)

// --------------------------------------------------------------------------------------------- the fabric
function prepare(v) {
  const n = v.switches.name.length, m = v.links.a.length, G = v.groups.length;
  v.n = n; v.m = m; v.G = G;
  v.index = new Map(v.switches.name.map((name, i) => [name, i]));
  v.members = Array.from({length: G}, () => []);
  v.switches.group.forEach((g, i) => v.members[g].push(i));
  const deg = new Int32Array(n + 1);
  for (let i = 0; i < m; i++) { deg[v.links.a[i] + 1]++; deg[v.links.b[i] + 1]++; }
  for (let i = 0; i < n; i++) deg[i + 1] += deg[i];
  v.adjStart = deg.slice();
  v.adj = new Int32Array(2 * m);
  const fill = deg.slice();
  for (let i = 0; i < m; i++) { v.adj[fill[v.links.a[i]]++] = i; v.adj[fill[v.links.b[i]]++] = i; }
  // aggregate edges between groups (a pod and a spine plane, ...) and links inside a group
  v.edgeOf = new Int32Array(m).fill(-1);
  v.edges = [];
  const key = new Map();
  for (let i = 0; i < m; i++) {
    const ga = v.switches.group[v.links.a[i]], gb = v.switches.group[v.links.b[i]];
    if (ga === gb) continue;
    const k = Math.min(ga, gb) * G + Math.max(ga, gb);
    let e = key.get(k);
    if (e === undefined) { e = v.edges.length; key.set(k, e); v.edges.push([Math.min(ga, gb), Math.max(ga, gb)]); }
    v.edgeOf[i] = e;
  }
  v.linkName = (i) => `${v.switches.name[v.links.a[i]]}:${v.links.ap[i]}-${v.switches.name[v.links.b[i]]}:${v.links.bp[i]}`;
  return v;
}

function linksOf(s) { return V.adj.subarray(V.adjStart[s], V.adjStart[s + 1]); }

// counts[g] per group: links touching it by status, switches by liveness; per aggregate edge: links by status
function recount() {
  const G = V.G;
  counts = {grpLinks: new Int32Array(G * 5), grpSw: new Int32Array(G * 3), edge: new Int32Array(V.edges.length * 5),
            links: new Int32Array(5), sw: new Int32Array(3)};
  const grp = V.switches.group;
  for (let i = 0; i < V.m; i++) {
    const st = status[i], ga = grp[V.links.a[i]], gb = grp[V.links.b[i]];
    counts.links[st]++;
    counts.grpLinks[ga * 5 + st]++;
    if (gb !== ga) { counts.grpLinks[gb * 5 + st]++; counts.edge[V.edgeOf[i] * 5 + st]++; }
  }
  for (let s = 0; s < V.n; s++) { counts.sw[alive[s]]++; counts.grpSw[grp[s] * 3 + alive[s]]++; }
}

function countLink(i, st, d) {
  const grp = V.switches.group, ga = grp[V.links.a[i]], gb = grp[V.links.b[i]];
  counts.links[st] += d;
  counts.grpLinks[ga * 5 + st] += d;
  if (gb !== ga) { counts.grpLinks[gb * 5 + st] += d; counts.edge[V.edgeOf[i] * 5 + st] += d; }
}

function countSwitch(s, a, d) {
  counts.sw[a] += d;
  counts.grpSw[V.switches.group[s] * 3 + a] += d;
}

// --------------------------------------------------------------------------------------------- drawing
function svgEl(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function title(el, text) { svgEl('title', {}, el).textContent = text; }

function clearDrawing() {
  const svg = $('topo');
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  els = {link: new Map(), sw: new Map(), box: new Map(), edge: new Map(), row: new Map()};
  $('groups').hidden = true;
  return svg;
}

function render() {
  const t0 = performance.now();
  if (view.mode === 'groups') drawGroups();
  else drawGraph(view.mode === 'drill' ? drillSet(view.group) : null);
  fp.mode = view.mode;
  crumbs();
  summary();
  fp.drawnAt = performance.now();
  fp.drawMs = fp.drawnAt - t0;
  markSelected();
}

// the switches of group g plus every switch linked to them (a pod and the spines of its planes, ...)
function drillSet(g) {
  const set = new Set(V.members[g]);
  for (const s of V.members[g]) for (const l of linksOf(s)) { set.add(V.links.a[l]); set.add(V.links.b[l]); }
  return set;
}

// The layered drawing: spines on top, aggregation switches in the middle, ToRs at the bottom, borders aside
// (right of the aggregation row). Pods are columns: a pod's aggs are centred over its ToRs.
function drawGraph(only) {
  const svg = clearDrawing();
  const role = V.switches.role, grp = V.switches.group;
  const shown = only ? [...only].sort((x, y) => x - y) : Array.from({length: V.n}, (_, i) => i);
  const spines = [], borders = [], pods = new Map();
  for (const s of shown) {
    if (role[s] === 2) spines.push(s);
    else if (role[s] === 3) borders.push(s);
    else {
      if (!pods.has(grp[s])) pods.set(grp[s], {tor: [], agg: []});
      pods.get(grp[s])[role[s] === 0 ? 'tor' : 'agg'].push(s);
    }
  }
  spines.sort((x, y) => grp[x] - grp[y] || x - y);
  const podList = [...pods.entries()].sort((x, y) => x[0] - y[0]);
  const hasAgg = podList.some(([, p]) => p.agg.length) || borders.length > 0;
  const hasTor = podList.some(([, p]) => p.tor.length);
  let slots = 0;
  const x = new Map();
  podList.forEach(([, p], k) => {
    const w = Math.max(p.tor.length, p.agg.length, 1);
    if (k > 0) slots += 0.6;              // a little air between pods
    p.tor.forEach((s, j) => x.set(s, slots + (j + 0.5) * w / p.tor.length));
    p.agg.forEach((s, j) => x.set(s, slots + (j + 0.5) * w / p.agg.length));
    slots += w;
  });
  const lower = Math.max(slots, spines.length ? 1 : 0);
  if (borders.length) {
    slots = lower + 1;
    borders.forEach((s, k) => x.set(s, slots + k + 0.5));
    slots += borders.length;
  }
  const spineSpan = podList.length ? lower : Math.max(spines.length, 1);
  spines.forEach((s, k) => x.set(s, (k + 0.5) * spineSpan / spines.length));
  slots = Math.max(slots, spineSpan, 1);
  // a fixed drawing width: a big pod gets small nodes (names in tooltips) rather than a thin strip
  const slotW = Math.min(120, 1160 / slots);
  const labels = slotW >= 44;
  // a small fabric is centred in a drawing at least 960 wide, so it is not blown up to the page width
  const W = Math.max(slots * slotW + 40, 960), x0 = (W - slots * slotW) / 2, rowGap = 120;
  const rows = [[2, 36]];
  if (hasAgg) rows.push([1, 36 + rowGap]);
  if (hasTor) rows.push([0, 36 + rowGap * rows.length]);
  const yOf = new Map(rows);
  yOf.set(3, yOf.get(1) ?? 36 + rowGap);
  const H = 36 + rowGap * (rows.length - 1) + (labels ? 46 : 30);
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const px = (s) => x0 + x.get(s) * slotW;
  const py = (s) => yOf.get(role[s]);
  const gl = svgEl('g', {class: 'links'}, svg), gn = svgEl('g', {class: 'nodes'}, svg);
  const shownSet = only || null;
  svg.setAttribute('class', shown.length > 60 ? 'dense' : '');
  for (let i = 0; i < V.m; i++) {
    const a = V.links.a[i], b = V.links.b[i];
    if (shownSet && !(shownSet.has(a) && shownSet.has(b))) continue;
    const name = V.linkName(i);
    const line = svgEl('line', {x1: px(a), y1: py(a), x2: px(b), y2: py(b), class: `link s-${STATUS[status[i]]}`,
      'data-link': name, 'data-i': i, 'data-state': STATUS[status[i]]}, gl);
    title(line, `${name} (weight ${V.links.w[i]}): ${STATUS[status[i]]}`);
    line.addEventListener('click', () => select('link', i));
    els.link.set(i, line);
  }
  // with room, the name is inside the node; otherwise it is in the tooltip only
  const nw = labels ? Math.min(86, slotW * 0.85) : Math.max(2, Math.min(34, slotW * 0.8));
  const nh = labels ? 22 : Math.min(16, Math.max(8, slotW * 0.8));
  for (const s of shown) {
    const cx = px(s), cy = py(s), name = V.switches.name[s];
    const node = svgEl('rect', {x: cx - nw / 2, y: cy - nh / 2, width: nw, height: nh, rx: role[s] === 2 ? nh / 2 : 3,
      class: `node ${LIVENESS[alive[s]]}`, 'data-switch': name, 'data-i': s, 'data-liveness': LIVENESS[alive[s]]}, gn);
    title(node, `${name} (${V.roles[role[s]]}): ${LIVENESS[alive[s]]}`);
    node.addEventListener('click', () => select('switch', s));
    els.sw.set(s, node);
    if (labels) {
      const inside = name.length * 6.6 + 8 <= nw;
      const t = svgEl('text', {x: cx, y: inside ? cy + 4 : role[s] === 2 ? cy - nh / 2 - 5 : cy + nh / 2 + 13,
        'text-anchor': 'middle'}, gn);
      t.textContent = name;
    }
  }
  if (borders.length) {
    const t = svgEl('text', {x: px(borders[0]) - nw / 2, y: yOf.get(3) - nh / 2 - 8, class: 'tier'}, gn);
    t.textContent = 'borders';
  }
}

// The aggregated drawing of a large fabric: spine planes on top, pods at the bottom, borders aside; an
// aggregate line per (pod, plane) pair; the table below has the counts; a click drills down.
function drawGroups() {
  const svg = clearDrawing();
  svg.setAttribute('class', '');
  const planes = [], pods = [], others = [];
  V.groups.forEach((g, k) => (g.kind === 'plane' ? planes : g.kind === 'pod' ? pods : others).push(k));
  const W = 1200, H = 340, side = others.length ? 150 : 0, inner = W - 40 - side;
  const pos = new Map();
  const rowBoxes = (list, y, h, x0, width) => {
    const w = width / Math.max(list.length, 1);
    list.forEach((g, k) => pos.set(g, {x: x0 + k * w + Math.min(2, w * 0.1), y, w: Math.max(w - Math.min(4, w * 0.2), 1.5), h}));
  };
  rowBoxes(planes, 20, 54, 20, inner);
  rowBoxes(pods, 250, 50, 20, inner);
  others.forEach((g, k) => pos.set(g, {x: W - side + 10, y: 135 + k * 60, w: side - 30, h: 46}));
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const ge = svgEl('g', {class: 'edges'}, svg), gb = svgEl('g', {class: 'boxes'}, svg);
  V.edges.forEach(([ga, gb2], e) => {
    const A = pos.get(ga), B = pos.get(gb2);
    const [lo, hi] = A.y > B.y ? [A, B] : [B, A];
    const line = svgEl('line', {x1: lo.x + lo.w / 2, y1: lo.y, x2: hi.x + hi.w / 2, y2: hi.y + hi.h, class: 'agg'}, ge);
    line.addEventListener('click', () => drill(V.groups[ga].kind === 'plane' ? gb2 : ga));
    els.edge.set(e, line);
    title(line, '');
  });
  for (const [g, p] of pos) {
    const r = svgEl('rect', {x: p.x, y: p.y, width: p.w, height: p.h, rx: 3, class: 'box', 'data-group': V.groups[g].name}, gb);
    title(r, '');
    r.addEventListener('click', () => drill(g));
    els.box.set(g, r);
    if (p.w >= 60) {
      const t = svgEl('text', {x: p.x + p.w / 2, y: p.y + 18, 'text-anchor': 'middle'}, gb);
      t.textContent = V.groups[g].name;
      const t2 = svgEl('text', {x: p.x + p.w / 2, y: p.y + 34, 'text-anchor': 'middle', class: 'cnt'}, gb);
      r.countText = t2;
    }
  }
  const lt = svgEl('text', {x: 20, y: 322, class: 'tier'}, svg);
  lt.textContent = `${pods.length} pods (ToRs + aggregation) — click a pod, a plane or a line to drill down`;
  // the table
  const tbl = $('groups');
  tbl.hidden = false;
  tbl.innerHTML = html`<thead><tr><th>group</th><th>kind</th><th>switches</th><th>dead</th><th>unknown</th>
    <th>links</th><th>down</th><th>one-way</th><th>miscabled</th><th>drained</th></tr></thead>`;
  const body = document.createElement('tbody');
  V.groups.forEach((g, k) => {
    const tr = document.createElement('tr');
    tr.dataset.group = g.name;
    tr.addEventListener('click', () => drill(k));
    body.appendChild(tr);
    els.row.set(k, tr);
  });
  tbl.appendChild(body);
  for (let g = 0; g < V.G; g++) styleGroup(g);
  for (let e = 0; e < V.edges.length; e++) styleEdge(e);
}

function boxClass(c, base) {     // c: counts by status (5), base: offset
  let total = 0, bad = 0;
  for (let s = 0; s < 5; s++) total += c[base + s];
  for (let s = 0; s < 5; s++) if (BAD[s]) bad += c[base + s];
  if (total === 0) return 'ok';
  if (bad === total) return 'bad';
  if (bad > 0) return 'degraded';
  if (c[base + 2] > 0) return 'drained';
  return 'ok';
}

function styleGroup(g) {
  const c = counts.grpLinks, b = g * 5, sw = counts.grpSw, n = sw[g * 3] + sw[g * 3 + 1] + sw[g * 3 + 2];
  const links = c[b] + c[b + 1] + c[b + 2] + c[b + 3] + c[b + 4];
  const r = els.box.get(g);
  if (r) {
    let cls = boxClass(c, b);
    if (sw[g * 3 + 2] === n) cls = cls === 'ok' ? 'unknown' : cls;
    else if (sw[g * 3] > 0 && cls === 'ok') cls = 'degraded';
    r.setAttribute('class', `box ${cls}`);
    r.dataset.down = c[b] + c[b + 3] + c[b + 4];
    r.firstChild.textContent = `${V.groups[g].name}: ${n} switches (${sw[g * 3]} dead), ${links} links: ` +
      `${c[b]} down, ${c[b + 4]} one-way, ${c[b + 3]} miscabled, ${c[b + 2]} drained`;
    if (r.countText) r.countText.textContent = `${n} sw · ${c[b] + c[b + 3] + c[b + 4]}/${links} links down`;
  }
  const tr = els.row.get(g);
  if (tr) {
    const cell = (v, bad) => html`<td class="${bad && v ? 'bad' : ''}">${v.toLocaleString()}</td>`;
    tr.innerHTML = html`<td>${V.groups[g].name}</td><td>${V.groups[g].kind}</td>${cell(n)}${cell(sw[g * 3], 1)}
      ${cell(sw[g * 3 + 2])}${cell(links)}${cell(c[b], 1)}${cell(c[b + 4], 1)}${cell(c[b + 3], 1)}${cell(c[b + 2])}`;
  }
}

function styleEdge(e) {
  const line = els.edge.get(e);
  if (!line) return;
  const c = counts.edge, b = e * 5, cls = boxClass(c, b);
  const links = c[b] + c[b + 1] + c[b + 2] + c[b + 3] + c[b + 4];
  line.setAttribute('class', `agg ${cls === 'ok' ? 's-up' : cls === 'drained' ? 's-drained' : 's-down'}`);
  line.style.opacity = cls === 'ok' ? 0.35 : 0.9;
  const [ga, gb] = V.edges[e];
  line.firstChild.textContent = `${V.groups[ga].name} – ${V.groups[gb].name}: ${links} links, ` +
    `${c[b] + c[b + 3] + c[b + 4]} down, ${c[b + 2]} drained`;
}

function crumbs() {
  const nav = $('crumbs');
  nav.innerHTML = '';
  if (view.mode !== 'drill') return;
  const a = document.createElement('a');
  a.textContent = '← the whole fabric';
  a.id = 'back';
  a.addEventListener('click', () => { view = {mode: 'groups', group: null}; render(); });
  nav.appendChild(a);
  nav.appendChild(document.createTextNode(` › ${V.groups[view.group].name} and its neighbours`));
}

function summary() {
  const l = counts.links, s = counts.sw;
  $('summary').textContent = `${V.fabric}: ${V.n.toLocaleString()} switches (${s[1].toLocaleString()} alive, ` +
    `${s[0].toLocaleString()} dead, ${s[2].toLocaleString()} unknown) · ${V.m.toLocaleString()} links ` +
    `(${l[1].toLocaleString()} up, ${l[0].toLocaleString()} down, ${l[4].toLocaleString()} one-way, ` +
    `${l[3].toLocaleString()} miscabled, ${l[2].toLocaleString()} drained)` +
    (view.mode === 'groups' ? ' — aggregated by pod and spine plane' : '');
}

function drill(g) {
  view = {mode: 'drill', group: g};
  render();
}

// --------------------------------------------------------------------------------------------- live state
function applyHello(d) {
  if (!fp.ready) fp.t.hello = performance.now();
  status = Uint8Array.from(d.links, (c) => c.charCodeAt(0) - 48);
  alive = Uint8Array.from(d.alive, (c) => c.charCodeAt(0) - 48);
  recount();
  if (!fp.ready) fp.t.counted = performance.now();
  if (!fp.ready) {
    const want = new URLSearchParams(location.search).get('view');     // ?view=groups|full overrides the size rule
    view = {mode: want === 'groups' || want === 'full' ? want : V.n > FULL_LIMIT ? 'groups' : 'full', group: null};
    render();
    requestAnimationFrame(() => { fp.ready = true; fp.readyAt = performance.now(); });
  } else {
    render();
  }
  header(d.header);
  refreshDetails();
}

function applyUpdate(d) {
  const now = Date.now();
  const touched = new Set(), groups = new Set(), edges = new Set();
  let sel = false;
  for (const [i, st] of d.links) {
    const old = status[i];
    if (old === st) continue;
    countLink(i, old, -1); countLink(i, st, +1);
    status[i] = st;
    fp.appliedAt[i] = now;
    fp.sentAt[i] = d.t;                   // the replica's wall clock when it pushed the change
    const line = els.link.get(i);
    if (line) {
      line.setAttribute('class', `link s-${STATUS[st]}${selected && selected.kind === 'link' && selected.i === i ? ' sel' : ''}`);
      line.dataset.state = STATUS[st];
      line.firstChild.textContent = `${V.linkName(i)} (weight ${V.links.w[i]}): ${STATUS[st]}`;
    }
    groups.add(V.switches.group[V.links.a[i]]); groups.add(V.switches.group[V.links.b[i]]);
    if (V.edgeOf[i] >= 0) edges.add(V.edgeOf[i]);
    if (selected && (selected.kind === 'link' ? selected.i === i : V.links.a[i] === selected.i || V.links.b[i] === selected.i)) sel = true;
    touched.add(i);
  }
  for (const [s, a] of d.alive) {
    const old = alive[s];
    if (old === a) continue;
    countSwitch(s, old, -1); countSwitch(s, a, +1);
    alive[s] = a;
    const node = els.sw.get(s);
    if (node) {
      node.setAttribute('class', `node ${LIVENESS[a]}${selected && selected.kind === 'switch' && selected.i === s ? ' sel' : ''}`);
      node.dataset.liveness = LIVENESS[a];
      node.firstChild.textContent = `${V.switches.name[s]} (${V.roles[V.switches.role[s]]}): ${LIVENESS[a]}`;
    }
    groups.add(V.switches.group[s]);
    if (selected && selected.kind === 'switch' && selected.i === s) sel = true;
  }
  if (view.mode === 'groups') {
    for (const g of groups) styleGroup(g);
    for (const e of edges) styleEdge(e);
  }
  if (touched.size || d.alive.length) summary();
  header(d.header);
  if (sel) refreshDetails();
}

function header(h) {
  if (!h) return;
  fp.header = h;
  $('serving').textContent = h.master;
  $('role').textContent = h.role + (h.held ? ' (holding)' : '');
  $('role').className = `role ${h.role}`;
  $('term').textContent = h.term;
  $('version').textContent = `v${h.version}`;
  const b = $('banner');
  if (h.role !== 'master') {
    b.hidden = false;
    b.className = '';
    const leader = h.leader && h.leader !== h.master ? replicaById(h.leader) : null;
    b.innerHTML = '';
    b.appendChild(document.createTextNode(h.role === 'backup'
      ? `${h.master} is a backup replica: the leader is ${h.leader || 'unknown'}. Drains go to the leader; ` +
        'link states are the replicated LSD (no port reports on a backup). '
      : `${h.master} is not serving (no master: election in progress or no majority; switches keep ` +
        'forwarding on their last LSD). '));
    if (leader) {
      const a = document.createElement('a');
      a.href = leader.url + '/';
      a.textContent = `open ${leader.id}'s page`;
      b.appendChild(a);
    }
    if (following) maybeFollowLeader(h);
  } else {
    b.hidden = true;
  }
}

function replicaById(id) { return replicas.find((r) => r.id === id) || null; }

function setConn(state, text) {
  const c = $('conn');
  c.className = `conn ${state}`;
  c.textContent = text || state;
}

function connect(rep) {
  if (es) es.close();
  serving = rep;
  fp.serving = rep.id;
  setConn('connecting', `connecting to ${rep.id || 'this replica'}`);
  const src = new EventSource(rep.url + '/v1/events');
  es = src;
  fp.lastEventAt = Date.now();
  const seen = () => { fp.lastEventAt = Date.now(); };
  src.addEventListener('hello', (e) => {
    if (es !== src) return;
    seen();
    const d = JSON.parse(e.data);
    if (d.digest !== V.digest) {
      banner(`replica ${d.header.master} serves another fabric (digest ${d.digest.slice(0, 12)}): not used`, true);
      src.close(); es = null;
      replicas = replicas.filter((r) => r !== rep);
      lost();
      return;
    }
    if (!rep.id) {       // the page's own origin: now we know which replica it is
      rep.id = d.header.master;
      replicas = replicas.filter((r) => r.id !== rep.id);
      replicas.unshift(rep);
    }
    fp.serving = rep.id;
    fp.connects++;
    setConn('live', `live from ${rep.id}`);
    applyHello(d);
  });
  src.addEventListener('update', (e) => { if (es === src) { seen(); applyUpdate(JSON.parse(e.data)); } });
  src.addEventListener('ping', (e) => { if (es === src) { seen(); header(JSON.parse(e.data).header); } });
  src.onerror = () => { if (es === src) lost(); };
}

function banner(text, error) {
  const b = $('banner');
  b.hidden = false;
  b.className = error ? 'error' : '';
  b.textContent = text;
}

function lost() {
  if (es) { es.close(); es = null; }
  setConn('reconnecting', `lost ${serving && serving.id ? serving.id : 'the replica'}: trying the others`);
  following = true;
  fp.failovers++;
  failover();
}

async function probe(rep) {
  try {
    const r = await fetch(rep.url + '/v1/lsd/version', {signal: AbortSignal.timeout(PROBE_MS), cache: 'no-store'});
    return r.ok ? await r.json() : null;
  } catch (e) {
    return null;
  }
}

// Try the configured replicas (the others first), take the one that says it is the master, else any that
// answers (a backup still streams the replicated LSD, and its header names the leader when there is one).
async function failover() {
  if (searching) return;
  searching = true;
  try {
    for (;;) {
      const k = replicas.indexOf(serving);
      const order = k < 0 ? replicas.slice() : replicas.slice(k + 1).concat(replicas.slice(0, k + 1));
      const answers = await Promise.all(order.map(probe));
      let pick = order.find((r, j) => answers[j] && answers[j].role === 'master');
      if (!pick) pick = order.find((r, j) => answers[j]);
      if (pick) { connect(pick); return; }
      setConn('down', 'no replica answers: retrying');
      await new Promise((res) => setTimeout(res, 500));
    }
  } finally {
    searching = false;
  }
}

const lastFollow = new Map();      // replica id -> when the page last tried to follow it (at most once a second)
async function maybeFollowLeader(h) {
  const leader = replicaById(h.leader);
  if (!leader || leader === serving || Date.now() - (lastFollow.get(leader.id) || 0) < 1000) return;
  lastFollow.set(leader.id, Date.now());
  const a = await probe(leader);
  if (a && a.role === 'master' && es && serving !== leader) connect(leader);
}

setInterval(() => {
  if (es && !searching && Date.now() - fp.lastEventAt > SILENCE_MS) lost();
}, 500);

// --------------------------------------------------------------------------------------------- details
// The details panel: a body reloaded whenever the selection changes state, and the drain buttons (with their
// message) that stay put while it reloads.
function select(kind, i) {
  selected = {kind, i};
  markSelected();
  const name = kind === 'link' ? V.linkName(i) : V.switches.name[i];
  const box = $('details');
  box.dataset.kind = kind;
  box.dataset.name = '';
  box.innerHTML = html`<div id="dbody"><p class="muted">${name}: loading…</p></div>
    <p><button id="drain">drain ${kind}</button><button id="undrain">undrain ${kind}</button></p>
    <p id="drain-msg" class="msg"></p>`;
  $('drain').addEventListener('click', () => drain(kind, name, true));
  $('undrain').addEventListener('click', () => drain(kind, name, false));
  refreshDetails();
}

function markSelected() {
  document.querySelectorAll('#topo .sel').forEach((e) => e.classList.remove('sel'));
  if (!selected) return;
  const el = (selected.kind === 'link' ? els.link : els.sw).get(selected.i);
  if (el) el.classList.add('sel');
}

let detailsSeq = 0;
let detailsTimer = null;
function refreshDetails() {
  if (!selected || !serving) return;
  clearTimeout(detailsTimer);
  detailsTimer = setTimeout(loadDetails, 50);
}

const fmtTime = (t, since, before) => t != null
  ? `${new Date(t * 1000).toLocaleTimeString()} (${Math.max(0, (Date.now() / 1000 - t)).toFixed(1)} s ago)`
  : before != null
    ? `before ${new Date(before * 1000).toLocaleTimeString()} (while no page was open: not known when)`
    : `not since ${new Date(since * 1000).toLocaleTimeString()} (when this replica started)`;

async function loadDetails() {
  const seq = ++detailsSeq, sel = selected, rep = serving;
  const path = sel.kind === 'link' ? `/v1/link/${sel.i}` : `/v1/switch/${encodeURIComponent(V.switches.name[sel.i])}`;
  let d;
  try {
    const r = await fetch(rep.url + path, {cache: 'no-store', signal: AbortSignal.timeout(3000)});
    d = await r.json();
  } catch (e) {
    d = {error: `${rep.id}: ${e}`};
  }
  if (seq !== detailsSeq) return;
  const box = $('dbody');
  if (!box || selected !== sel) return;
  if (d.error) { box.innerHTML = html`<p class="msg err">${d.error}</p>`; return; }
  box.innerHTML = sel.kind === 'link' ? linkHtml(d) : switchHtml(d);
  $('details').dataset.name = d.name;
  box.querySelectorAll('[data-goto-switch]').forEach((a) => a.addEventListener('click', () =>
    select('switch', V.index.get(a.dataset.gotoSwitch))));
  box.querySelectorAll('[data-goto-link]').forEach((a) => a.addEventListener('click', () =>
    select('link', Number(a.dataset.gotoLink))));
}

// The details of a link (GET /v1/link/I) and of a switch (GET /v1/switch/NAME, with its client's relayed
// /v1/state): every value through html`...`, none trusted for being a number in a sane answer.
function linkHtml(d) {
  const end = (e) => html`<tr><td><a data-goto-switch="${e.switch}">${e.switch}</a></td><td>${e.port}</td>
    <td>${e.liveness}</td><td>${yes(e.report && e.report.phy)}</td><td>${yes(e.report && e.report.nd)}</td>
    <td>${yes(e.report && e.report.usable)}</td><td>${e.report && e.report.miscabled_by || '–'}</td></tr>`;
  return html`<h2>${d.name}</h2>
    <p><span class="badge s-${d.state}" id="d-state">${d.state}</span> <span class="muted">LSD: ${d.lsd_state}, index ${d.index}</span></p>
    <p>last change: ${fmtTime(d.changed_at, d.seen_since, d.changed_before)}</p>
    <p>weight ${d.weight} <span class="muted">(capacity: not in the config; ECMP splits equally)</span></p>
    <table><tr><th>end</th><th>port</th><th>liveness</th><th>PHY</th><th>ND</th><th>usable</th><th>miscabled by</th></tr>
    ${end(d.a)}${end(d.b)}</table>
    <p class="muted">PHY/ND/usable: the last port report of each end to ${fp.header.master}.</p>`;
}

function switchHtml(d) {
  const links = (d.links || []).map((l) => html`<tr><td>${l.port}</td><td>${l.peer}</td><td>${l.weight}</td>
    <td><a data-goto-link="${l.index}"><span class="badge s-${l.state}">${l.state}</span></a></td></tr>`);
  let client = '';
  if (d.client && d.client.state) {
    const s = d.client.state;
    const ports = (Array.isArray(s.ports) ? s.ports : []).map((p) => html`<tr><td>${p.port}</td><td>${p.peer}</td>
      <td>${yes(p.phy)}</td><td>${p.nd}</td><td>${yes(p.usable)}</td><td>${p.miscabled_by || '–'}</td></tr>`);
    client = html`<h3>client state <span class="muted">(${d.client.url})</span></h3>
      <p>master ${s.master} · term ${s.term} · LSD v${s.lsd_version} · programmed v${s.programmed_version}
      ${s.fail_static ? html` · <b>fail-static</b>` : ''} · OpenFlow ${s.connected ? 'connected' : html`<b>disconnected</b>`}</p>
      <table><tr><th>port</th><th>peer</th><th>PHY</th><th>ND</th><th>usable</th><th>miscabled by</th></tr>${ports}</table>
      <details><summary>raw /v1/state</summary><pre>${JSON.stringify(s, null, 1)}</pre></details>`;
  } else if (d.client) {
    client = html`<h3>client state</h3><p class="muted" id="d-client-error">${d.client.error}${d.client.url ? html` (${d.client.url})` : ''}</p>`;
  }
  const prefixes = Array.isArray(d.prefixes) && d.prefixes.length ? html` · prefixes ${d.prefixes.join(', ')}` : '';
  return html`<h2>${d.name}</h2>
    <p><span class="badge ${d.liveness}" id="d-state">${d.liveness}</span> <span class="muted">${d.role}, id ${d.id}</span></p>
    <p>liveness last changed: ${fmtTime(d.changed_at, d.seen_since, d.changed_before)}<br>
    loopback ${d.loopback || '–'}${prefixes}</p>
    <table><tr><th>port</th><th>peer</th><th>weight</th><th>state</th></tr>${links}</table>
    ${client}`;
}

// Drains go to the leader (a backup answers 409); the token is the admin token typed in the bar.
async function drain(kind, name, on) {
  const msg = $('drain-msg');
  const token = $('token').value.trim();
  if (!token) { msg.className = 'msg err'; msg.textContent = 'type the admin token in the bar first'; return; }
  sessionStorage.setItem('fp-token', token);
  const h = fp.header || {};
  const target = h.role === 'master' ? serving : replicaById(h.leader);
  if (!target) { msg.className = 'msg err'; msg.textContent = 'no leader known: nothing can be drained now'; return; }
  msg.className = 'msg'; msg.textContent = `${on ? 'draining' : 'undraining'} via ${target.id}…`;
  try {
    const r = await fetch(target.url + '/v1/drain', {method: on ? 'POST' : 'DELETE', cache: 'no-store',
      headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
      body: JSON.stringify({[kind]: name}), signal: AbortSignal.timeout(3000)});
    const d = await r.json();
    if (!r.ok) { msg.className = 'msg err'; msg.textContent = `${r.status}: ${d.error || JSON.stringify(d)}`; return; }
    msg.className = 'msg ok';
    // a target drained before: the master says what it found (who, since when, why) and kept
    msg.textContent = on && d.outcome && d.outcome !== 'drained' ? `${d.message}: LSD v${d.version}`
      : `${on ? 'drained' : 'undrained'} ${d.links.length} link(s): LSD v${d.version}`;
  } catch (e) {
    msg.className = 'msg err'; msg.textContent = `${target.id}: ${e}`;
  }
}

// --------------------------------------------------------------------------------------------- start
async function boot() {
  $('token').value = sessionStorage.getItem('fp-token') || '';
  fp.t = {boot: performance.now()};
  const r = await fetch('v1/view', {cache: 'no-store'});
  const doc = await r.json();
  fp.t.view = performance.now();
  V = prepare(doc);
  fp.t.prepared = performance.now();
  $('fabric').textContent = `fabric ${V.fabric}`;
  document.title = `firepath · ${V.fabric}`;
  replicas = V.masters.map((m) => ({id: m.id, url: `http://${m.address}:${m.rest_port}`}));
  const origin = replicas.find((x) => x.url === location.origin);
  connect(origin || {id: null, url: location.origin});
}

boot().catch((e) => banner(`cannot load the fabric from ${location.origin}: ${e}`, true));
