// The wasmorch dashboard: one page, no framework, no build step.
//
// Each kind (workloads, instances, nodes, events) is held by an informer:
// it lists the kind page by page, then follows the member's Watch from
// the revision of the first page, applying each change, so the page stays
// live without reloading. A watch refused because its revision is too old
// (OutOfRange) lists again; one that ends otherwise watches again from
// its last bookmark. Every view is drawn from the informers.
'use strict';

// ---- talking to the member ------------------------------------------------

const UNAUTHORIZED = 401;

// toLogin replaces the page with the login page: the member answers 401
// with it for any request once the token is no longer valid, and logging
// in again reloads the same view.
function toLogin() {
  location.reload();
}

async function request(method, path, body) {
  const opts = {method, headers: {'X-Wasmorch-UI': '1'}};
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === UNAUTHORIZED) {
    toLogin();
    const e = new Error(r.headers.get('X-Wasmorch-UI-Error') || 'not logged in');
    e.loggedOut = true;
    throw e;
  }
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (e) { data = {error: text}; }
  if (!r.ok) throw new Error(data.error || ('HTTP ' + r.status));
  return data;
}

const num = (v) => Number(v || 0); // protojson writes int64 as strings, and omits zeros

// ---- informers ------------------------------------------------------------

const LIST_CAP = 5000; // the most objects of one kind the page holds

// An Informer holds one kind: it lists it page by page, then the page's
// watcher follows it from the revision of the first page.
class Informer {
  constructor(kind, keyOf, opts = {}) {
    this.kind = kind;
    this.keyOf = keyOf;
    this.items = new Map();
    this.rev = 0;
    this.truncated = false;
    this.live = false;
    this.listed = false; // its list is done: it can be watched
    this.append = opts.append || false; // events: a log, not a set
    // narrowed on the server's side (a workload's page): the list's
    // parameters and the workload its watch follows
    this.listQuery = opts.list || '';
    this.workload = opts.workload || '';
    this.started = false;
    this.gen = 0; // bumped by stop: a list of an older start drops its result
  }

  // ensure starts the informer the first time a view needs it.
  ensure() {
    if (!this.started) this.restart(0);
  }

  async start() {
    const gen = this.gen;
    this.live = false;
    this.listed = false;
    changed();
    const items = new Map();
    let cont = '', first = 0;
    this.truncated = false;
    do {
      const page = await request('GET', `/ui/api/list/${this.kind}?limit=500${this.listQuery}` + (cont ? `&continue=${encodeURIComponent(cont)}` : ''));
      if (gen !== this.gen) return;
      if (!first) first = num(page.revision);
      for (const o of page[this.kind] || []) items.set(this.keyOf(o), o);
      cont = page.continue || '';
      if (items.size >= LIST_CAP && cont) { this.truncated = true; break; }
    } while (cont);
    this.items = items;
    this.rev = first;
    this.listed = true;
    changed();
    watcher.reopen(50); // gathered with the other kinds' lists into one stream
  }

  stop() {
    this.gen++;
    this.started = false;
    this.live = false;
    this.listed = false;
  }

  // spec is the informer's watch as the stream takes it.
  spec() {
    return `${this.kind}:${this.rev}` + (this.workload ? `:${this.workload}` : '');
  }

  // apply takes one event of its watch.
  apply(ev) {
    this.rev = Math.max(this.rev, num(ev.revision));
    const type = ev.type || '';
    if (type.endsWith('BOOKMARK')) {
      if (!this.live) { this.live = true; changed(); }
      return;
    }
    const obj = ev.workload || ev.instance || ev.node || ev.event;
    if (!obj) return;
    const key = this.keyOf(obj);
    if (type.endsWith('DELETED')) this.items.delete(key);
    else if (!this.truncated || this.items.has(key)) this.items.set(key, obj); // a truncated list shows its first objects only
    if (this.append && this.items.size > LIST_CAP) this.items.delete(this.items.keys().next().value);
    changed();
  }

  restart(delay) {
    this.stop();
    this.started = true;
    this.items = new Map();
    const gen = this.gen;
    setTimeout(() => {
      if (gen === this.gen) this.start().catch((e) => { showError(`${this.kind}: ${e.message}`); this.restart(2000); });
    }, delay);
  }
}

// The watcher follows the informers of the page over one event stream (a
// browser opens few connections to one server, six over HTTP/1.1): it is
// opened again, each informer from its last revision, whenever the set
// changes, an informer has listed again, or the stream ends.
const watcher = {
  informers: [],
  es: null,
  timer: null,

  // follow makes the informers the ones followed, stopping the others.
  follow(list) {
    const same = list.length === this.informers.length && list.every((inf, i) => inf === this.informers[i]);
    for (const inf of this.informers) if (!list.includes(inf)) inf.stop();
    this.informers = list;
    for (const inf of list) inf.ensure();
    if (!same) this.reopen(50);
  },

  reopen(delay) {
    if (this.es) { this.es.close(); this.es = null; }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  },

  open() {
    const watched = this.informers.filter((inf) => inf.listed);
    if (!watched.length) return;
    const es = new EventSource('/ui/api/watch?' + watched.map((inf) => 'w=' + encodeURIComponent(inf.spec())).join('&'));
    this.es = es;
    es.onmessage = (m) => {
      if (this.es !== es) return;
      const msg = JSON.parse(m.data);
      const inf = watched[msg.i];
      if (!inf || !this.informers.includes(inf)) return;
      if (!msg.failure) { inf.apply(msg.ev); return; }
      inf.live = false;
      changed();
      if (msg.failure.code === 'OutOfRange') inf.restart(0); // compacted: list again, then watch again
      else this.reopen(1000);
    };
    es.onerror = () => {
      // The connection dropped (the member restarting, the token expired):
      // find out which before watching again, from the last bookmarks.
      es.close();
      if (this.es !== es) return;
      for (const inf of watched) inf.live = false;
      changed();
      clearTimeout(this.timer);
      this.timer = setTimeout(async () => {
        if (this.es !== es) return;
        try {
          await request('GET', '/ui/api/session');
        } catch (e) {
          if (e.loggedOut) return; // the login page is on its way
        }
        this.open(); // a member still away fails again, and comes back here
      }, 2000);
    };
  },
};

function eventKey(e) { return `${e.unixNano}/${e.object}/${e.reason}/${e.message}`; }

const informers = {
  workloads: new Informer('workloads', (w) => w.workload.name),
  instances: new Informer('instances', (i) => i.instance.id),
  nodes: new Informer('nodes', (n) => n.node.name),
  events: new Informer('events', eventKey, {append: true}),
};

// ---- drawing --------------------------------------------------------------

// h builds an element: attributes (on* are listeners), then children
// (strings become text: nothing from the cluster is ever parsed as HTML).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function table(headers, rows, empty) {
  if (!rows.length) return h('div', {class: 'panel empty'}, empty);
  return h('table', {}, h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))), h('tbody', {}, rows));
}

const stateName = (s) => (s || '').replace(/^INSTANCE_STATE_/, '').toLowerCase().replace(/^./, (c) => c.toUpperCase());
const stateCell = (s) => h('td', {class: 'state-' + s}, s);

function ago(unixNano) {
  const ms = num(unixNano) / 1e6;
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

function bytes(n) {
  n = num(n);
  if (!n) return '0';
  const units = ['B', 'Ki', 'Mi', 'Gi', 'Ti'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (Number.isInteger(n) ? n : n.toFixed(1)) + units[i];
}

function kindOf(spec) {
  if (spec.http) return 'function';
  if (spec.image || spec.kind === 'container') return 'container';
  return spec.kind || 'wasm';
}

function sorted(map, key) {
  return [...map.values()].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

// rollout describes where a workload's rollout stands, as the CLI's
// describe does: replicas of the current generation, ready, old ones left.
function rollout(v) {
  const w = v.workload, spec = w.spec || {};
  const want = num(spec.replicas), gen = num(w.generation);
  const current = num(v.current), ready = num(v.ready), total = num(v.total);
  const old = Math.max(0, total - current);
  const canary = spec.canary && spec.http && gen > num(w.promotedGeneration) && gen > 1;
  let text;
  if (canary) {
    text = `canary of generation ${gen}: ${current} replica(s), ${spec.canary} of the traffic; ` +
      (num(spec.canaryDurationMs) ? 'promoted by itself when its duration passes' : 'waiting for promotion');
  } else if (current >= want && old === 0 && ready >= want) {
    text = `generation ${gen} complete: ${ready}/${want} ready`;
  } else {
    text = `rolling out generation ${gen}: ${current}/${want} updated, ${ready} ready` + (old ? `, ${old} of older generations left` : '');
  }
  const done = want ? Math.min(1, Math.min(current, ready) / want) : (total === 0 ? 1 : 0);
  return {text, done, canary};
}

function workloadsView() {
  const rows = sorted(informers.workloads.items, (v) => v.workload.name).map((v) => {
    const w = v.workload, spec = w.spec || {};
    const r = rollout(v);
    return h('tr', {class: 'link', 'data-workload': w.name, onclick: () => { location.hash = '#/workloads/' + encodeURIComponent(w.name); }},
      h('td', {}, h('a', {href: '#/workloads/' + encodeURIComponent(w.name)}, w.name)),
      h('td', {}, kindOf(spec)),
      h('td', {class: 'ready'}, `${num(v.ready)}/${num(spec.replicas)}`),
      h('td', {class: 'replicas'}, num(spec.replicas)),
      h('td', {}, num(v.current)),
      h('td', {}, num(v.total)),
      h('td', {}, num(w.generation)),
      h('td', {class: 'wrap'}, r.text),
      h('td', {}, spec.http ? spec.http.route : ''),
      h('td', {}, ago(w.createdUnixNano)));
  });
  return [h('h1', {}, 'Workloads'),
    table(['Name', 'Kind', 'Ready', 'Replicas', 'Up to date', 'Instances', 'Generation', 'Rollout', 'Route', 'Age'], rows,
      'No workloads yet: deploy one with wasmorch deploy.')];
}

function instanceRows(list) {
  return list.map((v) => {
    const i = v.instance, st = v.status || {};
    const state = stateName(v.state);
    return h('tr', {'data-instance': i.id},
      h('td', {}, i.id),
      h('td', {}, h('a', {href: '#/workloads/' + encodeURIComponent(i.workload)}, i.workload)),
      h('td', {}, num(i.generation)),
      h('td', {}, i.node || h('span', {class: 'muted'}, i.pendingReason || 'unscheduled')),
      stateCell(state),
      h('td', {}, num(st.restarts)),
      h('td', {class: 'wrap'}, [st.reason, st.message].filter(Boolean).join(': ')),
      h('td', {}, ago(i.createdUnixNano)));
  });
}
const instanceHeaders = ['ID', 'Workload', 'Generation', 'Node', 'State', 'Restarts', 'Reason', 'Age'];

function instancesView() {
  const inf = informers.instances;
  return [h('h1', {}, 'Instances'),
    inf.truncated ? h('p', {class: 'muted'}, `Showing the first ${inf.items.size} instances.`) : null,
    table(instanceHeaders, instanceRows(sorted(inf.items, (v) => v.instance.id)), 'No instances.')];
}

function nodesView() {
  const rows = sorted(informers.nodes.items, (v) => v.node.name).map((v) => {
    const n = v.node, cap = n.capacity || {}, used = v.allocated || {};
    let state = v.ready ? 'Ready' : 'NotReady';
    if (n.draining) state += ', draining';
    else if (n.cordoned) state += ', cordoned';
    const conds = (n.conditions || []).map((c) => (c.type || '').replace(/^NODE_CONDITION_TYPE_/, '')).join(', ');
    return h('tr', {'data-node': n.name},
      h('td', {}, n.name),
      stateCell(state),
      h('td', {}, num(v.instances) + (num(cap.instances) ? '/' + num(cap.instances) : '')),
      h('td', {}, `${bytes(used.memoryBytes)} / ${bytes(cap.memoryBytes)}`),
      h('td', {}, `${num(used.cpuMillis)}m / ${num(cap.cpuMillis)}m`),
      h('td', {}, (n.runtimes || []).join(', ')),
      h('td', {}, `${n.os || ''}/${n.arch || ''}`),
      h('td', {}, Object.entries(n.labels || {}).map(([k, val]) => `${k}=${val}`).join(', ')),
      h('td', {}, conds),
      h('td', {}, n.version || ''));
  });
  return [h('h1', {}, 'Nodes'),
    table(['Name', 'State', 'Instances', 'Memory', 'CPU', 'Runtimes', 'Platform', 'Labels', 'Conditions', 'Version'], rows, 'No nodes have registered.')];
}

function eventRows(list) {
  return list.map((e) => h('tr', {},
    h('td', {}, ago(e.unixNano)),
    h('td', {}, e.object),
    h('td', {}, e.reason),
    h('td', {class: 'wrap'}, e.message),
    h('td', {}, e.source || '')));
}
const eventHeaders = ['Age', 'Object', 'Reason', 'Message', 'Source'];

function newest(inf, n) {
  return [...inf.items.values()].sort((a, b) => num(b.unixNano) - num(a.unixNano)).slice(0, n);
}

function eventsView() {
  return [h('h1', {}, 'Events'), table(eventHeaders, eventRows(newest(informers.events, 500)), 'No events.')];
}

// ---- a workload's page ----------------------------------------------------

// detail is the state of the workload page that outlives its redraws: the
// logs stream, the request rate's last sample, and the scale box.
let detail = null;

function openDetail(name) {
  if (detail && detail.name === name) return detail;
  closeDetail();
  const q = encodeURIComponent(name);
  const d = {name, logs: h('pre', {class: 'logs', id: 'logs'}), es: null, rate: null, sample: null, timer: null,
    instances: new Informer('instances', (i) => i.instance.id, {list: `&workload=${q}`, workload: name}),
    events: new Informer('events', eventKey, {append: true, list: `&object=workload%2F${q}`, workload: name})};
  d.scale = h('input', {type: 'number', min: '0', id: 'scale-replicas', 'aria-label': 'replicas'});
  d.actions = h('div', {class: 'actions panel'},
    h('label', {for: 'scale-replicas'}, 'Replicas'), d.scale,
    h('button', {id: 'scale', onclick: () => scaleAction(d)}, 'Scale'),
    h('span', {class: 'muted'}, '·'),
    h('button', {class: 'quiet', id: 'rollout-undo', onclick: () => act(d, 'rollout/undo', `Roll ${name} back to its previous revision?`)}, 'Rollout undo'),
    h('button', {class: 'quiet', id: 'rollout-promote', onclick: () => act(d, 'rollout/promote', `Promote the canary of ${name}?`)}, 'Promote'),
    h('button', {class: 'quiet', id: 'rollout-restart', onclick: () => act(d, 'rollout/restart', `Restart every replica of ${name}, as a rollout?`)}, 'Restart'),
    h('span', {class: 'muted'}, '·'),
    h('button', {class: 'danger', id: 'delete', onclick: () => deleteAction(d)}, 'Delete'));
  d.facts = h('div', {class: 'grid'});
  d.rolloutText = h('div', {id: 'rollout-text'});
  d.bar = h('div', {});
  d.instTitle = h('h2', {});
  d.instBox = h('div', {id: 'instances'});
  d.eventsBox = h('div', {});
  d.parts = [
    h('h1', {}, h('a', {href: '#/workloads'}, 'Workloads'), ' / ', h('span', {id: 'workload-name'}, name)),
    h('div', {class: 'panel'}, d.facts, h('h2', {}, 'Rollout'), d.rolloutText, h('div', {class: 'progress'}, d.bar)),
    d.actions, d.instTitle, d.instBox, h('h2', {}, 'Events'), d.eventsBox, h('h2', {}, 'Logs'), d.logs,
  ];
  followLogs(d);
  pollRate(d);
  detail = d;
  return d;
}

function closeDetail() {
  if (!detail) return;
  if (detail.es) detail.es.close();
  clearInterval(detail.timer);
  detail = null;
}

function followLogs(d) {
  const es = new EventSource(`/ui/api/workloads/${encodeURIComponent(d.name)}/logs?tail=100`);
  d.es = es;
  es.onmessage = (m) => {
    const c = JSON.parse(m.data);
    const atEnd = d.logs.scrollTop + d.logs.clientHeight >= d.logs.scrollHeight - 4;
    if (c.notice || c.deleted) {
      d.logs.append(h('span', {class: 'note'}, (c.notice || `${d.name} was deleted`) + '\n'));
    }
    if (c.text) {
      for (const line of c.text.split('\n')) {
        if (line === '') continue;
        d.logs.append(h('span', {class: 'inst'}, `[${c.instance}] `), line + '\n');
      }
    }
    while (d.logs.childNodes.length > 4000) d.logs.firstChild.remove();
    if (atEnd) d.logs.scrollTop = d.logs.scrollHeight;
  };
  es.addEventListener('failure', (m) => {
    es.close();
    d.logs.append(h('span', {class: 'note'}, `logs: ${JSON.parse(m.data).error}\n`));
  });
  es.onerror = () => {
    // Ended: the workload deleted (said above), or the member gone.
    es.close();
    if (detail === d && !d.logs.textContent.endsWith('was deleted\n')) {
      d.logs.append(h('span', {class: 'note'}, 'logs: the stream ended; open the page again to follow them again\n'));
    }
  };
}

// pollRate samples the function's requests (summed over every gateway's
// latest load report) to show its request rate.
function pollRate(d) {
  const sample = async () => {
    try {
      const v = await request('GET', `/ui/api/workloads/${encodeURIComponent(d.name)}`);
      const now = Date.now(), n = num(v.requests);
      if (d.sample && now > d.sample.at && n >= d.sample.n) d.rate = (n - d.sample.n) / ((now - d.sample.at) / 1000);
      d.sample = {at: now, n, inFlight: num(v.inFlight)};
      if (detail === d) changed();
    } catch (e) { /* shown by the informers */ }
  };
  sample();
  d.timer = setInterval(sample, 5000);
}

async function confirmAction(text) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), {once: true}));
}

async function act(d, path, question) {
  if (!await confirmAction(question)) return;
  try {
    await request('POST', `/ui/api/workloads/${encodeURIComponent(d.name)}/${path}`, {});
    showNotice(`${path.replace('rollout/', 'rollout ')} ${d.name}: done`);
  } catch (e) { showError(e.message); }
}

async function scaleAction(d) {
  const n = d.scale.value.trim();
  if (!/^\d+$/.test(n)) { showError('replicas: give a whole number, 0 or more'); return; }
  if (!await confirmAction(`Scale ${d.name} to ${n} replica(s)?`)) return;
  try {
    await request('POST', `/ui/api/workloads/${encodeURIComponent(d.name)}/scale`, {replicas: Number(n)});
    showNotice(`scaled ${d.name} to ${n}`);
    d.scale.value = '';
  } catch (e) { showError(e.message); }
}

async function deleteAction(d) {
  if (!await confirmAction(`Delete ${d.name} and stop all its instances? This cannot be undone.`)) return;
  try {
    await request('DELETE', `/ui/api/workloads/${encodeURIComponent(d.name)}`);
    showNotice(`deleted ${d.name}`);
    location.hash = '#/workloads';
  } catch (e) { showError(e.message); }
}

function workloadView(name) {
  const d = openDetail(name);
  const v = informers.workloads.items.get(name);
  if (!v) {
    return [h('h1', {}, name), h('div', {class: 'panel empty'},
      informers.workloads.live ? `There is no workload ${name}.` : 'Loading…')];
  }
  const w = v.workload, spec = w.spec || {};
  const r = rollout(v);
  d.scale.placeholder = String(num(spec.replicas));
  const facts = [
    ['Kind', kindOf(spec)],
    ['Replicas', num(spec.replicas)],
    ['Ready', `${num(v.ready)}/${num(spec.replicas)}`],
    ['Generation', num(w.generation) + (num(w.promotedGeneration) ? ` (promoted ${num(w.promotedGeneration)})` : '')],
    [spec.image ? 'Image' : 'Module', spec.image || spec.moduleDigest || ''],
    ['Memory limit', spec.memoryBytes ? bytes(spec.memoryBytes) : 'default'],
  ];
  if (spec.http) {
    facts.push(['Route', (spec.http.host || '') + spec.http.route]);
    facts.push(['Request rate', h('span', {id: 'request-rate', 'data-rate': d.rate === null ? '' : String(d.rate)},
      d.rate === null ? 'measuring…' : `${d.rate.toFixed(2)} req/s`)]);
    facts.push(['In flight', d.sample ? d.sample.inFlight : '']);
  }
  if (spec.autoscale) facts.push(['Autoscale', `${num(spec.autoscale.minReplicas)}–${num(spec.autoscale.maxReplicas)}`]);
  if (Object.keys(w.labels || {}).length) facts.push(['Labels', Object.entries(w.labels).map(([k, val]) => `${k}=${val}`).join(', ')]);
  const insts = sorted(d.instances.items, (i) => i.instance.id);
  // Only what changes is redrawn: the actions and the logs stay in place.
  d.facts.replaceChildren(...facts.map(([k, val]) => h('div', {}, h('span', {class: 'label'}, k), val)));
  d.rolloutText.textContent = r.text;
  d.bar.style.width = `${Math.round(r.done * 100)}%`;
  d.instTitle.textContent = `Instances (${insts.length})`;
  d.instBox.replaceChildren(table(instanceHeaders, instanceRows(insts), 'No instances.'));
  d.eventsBox.replaceChildren(table(eventHeaders, eventRows(newest(d.events, 50)), 'No events.'));
  return d.parts;
}

// ---- the page -------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  return {view: parts[0] || 'workloads', name: parts[1] || ''};
}

let shown = null; // the parts the view holds

function render() {
  const r = route();
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.view === r.view);
  let content;
  if (r.view === 'workloads' && r.name) {
    content = workloadView(r.name);
    watcher.follow([informers.workloads, detail.instances, detail.events]);
  } else {
    closeDetail();
    const view = {instances: instancesView, nodes: nodesView, events: eventsView}[r.view] ? r.view : 'workloads';
    watcher.follow([informers[view]]);
    content = {workloads: workloadsView, instances: instancesView, nodes: nodesView, events: eventsView}[view]();
  }
  const view = document.getElementById('view');
  // A workload's page is drawn in place (workloadView): its parts are
  // put in the page once, so that what the user types stays put.
  if (content !== shown || view.firstChild !== content[0]) {
    view.replaceChildren(...content.flat().filter(Boolean));
    shown = content;
  }
  const live = watcher.informers.every((i) => i.live);
  const el = document.getElementById('live');
  el.textContent = live ? '● live' : 'reconnecting…';
  el.classList.toggle('on', live);
}

let pending = false;
function changed() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

let noticeTimer = null;
function showNotice(text, error) {
  const el = document.getElementById('notice');
  el.textContent = text;
  el.classList.toggle('error', !!error);
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, error ? 10000 : 4000);
}
const showError = (text) => showNotice(text, true);

async function main() {
  document.getElementById('logout').addEventListener('click', async () => {
    await fetch('/ui/logout', {method: 'POST', headers: {'X-Wasmorch-UI': '1'}});
    toLogin();
  });
  window.addEventListener('hashchange', changed);
  // Ages change with time, not only with the cluster.
  setInterval(changed, 10000);
  const s = await request('GET', '/ui/api/session');
  document.getElementById('who').textContent = `${s.identity} on ${s.member || 'this member'}, until ${new Date(s.expires).toLocaleString()}`;
  changed(); // the first draw starts what the view follows
}

main().catch((e) => showError(e.message));
