// skycanary dashboard: plain JS, no dependency. Text goes in with textContent only; the one
// piece of markup taken from the server is its SVG chart, escaped where it is drawn.
'use strict';

const POLL_MS = 1500;
const ACTIONS = [
  ['promote', 'Promote', 'Promote %s to its next step (the current pause or analysis ends now)?'],
  ['pause', 'Pause', 'Pause %s where it is?'],
  ['resume', 'Resume', 'Resume %s?'],
  ['retry', 'Retry', 'Retry %s from its first step?'],
  ['abort', 'Abort', 'Abort %s and send all traffic back to stable?'],
];

let csrf = null;
let pollTimer = null;
let pending = null; // the action waiting for confirmation
const cards = new Map(); // "ns/name" -> {json, el}

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function hhmmss(iso) {
  return typeof iso === 'string' && iso.length >= 19 ? iso.substring(11, 19) : '';
}

function showLogin(message) {
  csrf = null;
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
  cards.clear();
  $('canaries').replaceChildren();
  $('dashboard').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

function showDashboard() {
  $('login').hidden = true;
  $('login-error').textContent = '';
  $('dashboard').hidden = false;
  $('logout').hidden = false;
  poll();
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') return body.error;
  } catch (_) { /* not JSON */ }
  return 'HTTP ' + response.status;
}

async function boot() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('confirm').addEventListener('close', confirmed);
  try {
    const r = await fetch('/ui/session', { credentials: 'same-origin' });
    if (r.ok) {
      csrf = (await r.json()).csrf;
      showDashboard();
    } else {
      showLogin();
    }
  } catch (e) {
    showLogin('cannot reach the daemon: ' + e);
  }
}

async function login(event) {
  event.preventDefault();
  const input = $('token');
  const token = input.value;
  input.value = '';
  try {
    const r = await fetch('/ui/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token }),
    });
    if (!r.ok) {
      showLogin(await errorOf(r));
      return;
    }
    csrf = (await r.json()).csrf;
    showDashboard();
  } catch (e) {
    showLogin('cannot reach the daemon: ' + e);
  }
}

async function logout() {
  try {
    await fetch('/ui/logout', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf || '' },
    });
  } finally {
    showLogin('Logged out.');
  }
}

async function poll() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
  try {
    const r = await fetch('/ui/state', { credentials: 'same-origin', cache: 'no-store' });
    if (r.status === 401) {
      showLogin(await errorOf(r));
      return;
    }
    if (r.ok) {
      render(await r.json());
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } else {
      $('updated').textContent = 'update failed: ' + (await errorOf(r));
    }
  } catch (e) {
    $('updated').textContent = 'daemon unreachable, retrying';
  }
  if (csrf !== null) pollTimer = setTimeout(poll, POLL_MS);
}

function render(state) {
  const list = $('canaries');
  if (list.firstElementChild && !list.firstElementChild.matches('section.canary')) {
    list.replaceChildren();
  }
  const seen = new Set();
  let previous = null;
  for (const c of state.canaries) {
    const key = c.namespace + '/' + c.name;
    seen.add(key);
    const json = JSON.stringify(c);
    let entry = cards.get(key);
    if (!entry || entry.json !== json) {
      const card = canaryCard(c, key);
      if (entry) entry.el.replaceWith(card);
      entry = { json, el: card };
      cards.set(key, entry);
    }
    // Keep the daemon's order.
    const want = previous ? previous.nextSibling : list.firstChild;
    if (want !== entry.el) list.insertBefore(entry.el, want);
    previous = entry.el;
  }
  for (const [key, entry] of cards) {
    if (!seen.has(key)) {
      entry.el.remove();
      cards.delete(key);
    }
  }
  if (state.canaries.length === 0) {
    list.replaceChildren(el('p', { class: 'muted' }, 'No canaries.'));
  }
  if (state.canariesLeftOut > 0) {
    list.append(el('p', { class: 'muted' }, state.canariesLeftOut + ' more not shown.'));
  }
  renderAlarms(state.alarms);
  renderScheduled(state.scheduled);
}

function canaryCard(c, key) {
  const card = el('section', { class: 'canary', 'data-canary': key, 'data-phase': c.phase });
  card.append(el('div', { class: 'card-head' },
    el('h3', {}, key),
    el('span', { class: 'badge phase phase-' + c.phase }, c.phase),
    el('span', { class: 'step' }, c.step),
    el('span', { class: 'weight', 'data-weight': c.canaryWeight }, 'canary ' + c.canaryWeight + ' %'),
    c.revision ? el('span', { class: 'muted' }, 'revision ' + c.revision) : null));
  const repeats = (text) => !!text && !!c.message && text.endsWith(c.message);
  if (c.message && !(c.abort && c.abort.reason === c.message)) {
    card.append(el('p', { class: 'message muted' }, c.message));
  }
  if (c.paused && !repeats(c.paused)) card.append(el('p', { class: 'paused' }, 'Paused: ' + c.paused));
  if (c.abort) {
    const dl = el('dl', { class: 'abort' });
    const field = (name, value, cls) => {
      if (value) dl.append(el('dt', {}, name), el('dd', { class: cls }, value));
    };
    field('aborted', c.abort.reason, 'abort-reason');
    field('metric', c.abort.metric, 'abort-metric');
    field('value', c.abort.value, 'abort-value');
    field('condition', c.abort.condition, 'abort-condition');
    field('alarm', c.abort.alarm, 'abort-alarm');
    card.append(dl);
  }
  const actions = el('div', { class: 'actions' });
  for (const [action, label, question] of ACTIONS) {
    const button = el('button', {
      type: 'button',
      class: action === 'abort' ? 'danger' : '',
      'data-action': action,
    }, label);
    button.addEventListener('click', () => ask(c.namespace, c.name, action, question.replace('%s', key)));
    actions.append(button);
  }
  card.append(actions);
  if (c.weightsSvg) {
    const chart = el('div', { class: 'weights-chart' });
    // Server-rendered by the report code, every text in it escaped there.
    chart.innerHTML = c.weightsSvg;
    card.append(chart);
  }
  const history = el('ol', { class: 'weight-history' });
  for (const w of c.weights) {
    history.append(el('li', { 'data-weight': w.canary }, hhmmss(w.at) + ' → ' + w.canary + ' %'));
  }
  card.append(history);
  if (c.measurements.length > 0) {
    const table = el('table', { class: 'measurements' },
      el('tr', {}, ...['time', 'run', 'metric', 'verdict', 'value', 'condition', 'threshold']
        .map((h) => el('th', {}, h))));
    for (const m of c.measurements) {
      const conds = el('td', { class: 'expr' });
      const thresholds = el('td', { class: 'threshold' });
      for (const cond of m.conditions) {
        conds.append(el('div', { class: 'holds-' + cond.holds, title: cond.decided ? 'decided the verdict' : '' },
          cond.kind + ': ' + cond.expression + (cond.holds ? ' ✓' : ' ✗')));
        thresholds.append(el('div', {}, cond.threshold || '—'));
      }
      table.append(el('tr', { class: 'measurement', 'data-phase': m.phase, title: m.message || '' },
        el('td', {}, hhmmss(m.at)),
        el('td', {}, m.run),
        el('td', {}, m.metric),
        el('td', { class: 'm-' + m.phase }, m.phase),
        el('td', { class: 'value' }, m.value || '—'),
        conds,
        thresholds));
    }
    card.append(table);
  }
  return card;
}

function renderAlarms(alarms) {
  const box = $('alarms');
  if (alarms.length === 0) {
    box.replaceChildren(el('p', { class: 'muted' }, 'No canary aborted by an alarm.'));
    return;
  }
  const table = el('table', { class: 'alarms' },
    el('tr', {}, el('th', {}, 'canary'), el('th', {}, 'alarm'), el('th', {}, 'reason')));
  for (const a of alarms) {
    table.append(el('tr', {}, el('td', {}, a.namespace + '/' + a.name), el('td', {}, a.alarm), el('td', {}, a.reason)));
  }
  box.replaceChildren(table);
}

function renderScheduled(items) {
  const box = $('scheduled');
  if (items.length === 0) {
    box.replaceChildren(el('p', { class: 'muted' }, 'No scheduled analyses.'));
    return;
  }
  const json = JSON.stringify(items);
  if (box.dataset.json === json) return;
  box.dataset.json = json;
  const table = el('table', { class: 'scheduled' },
    el('tr', {}, ...['analysis', 'schedule', 'next', 'active', 'last run', 'phase', 'message', '']
      .map((h) => el('th', {}, h))));
  for (const s of items) {
    const key = s.namespace + '/' + s.name;
    const run = el('button', { type: 'button', 'data-action': 'run' }, 'Run now');
    run.addEventListener('click', () => ask(s.namespace, s.name, 'run', 'Start a run of ' + key + ' now?'));
    table.append(el('tr', { 'data-scheduled': key },
      el('td', {}, key),
      el('td', {}, s.schedule + (s.suspend ? ' (suspended)' : '')),
      el('td', {}, s.next ? s.next.replace('T', ' ').substring(0, 19) : '—'),
      el('td', {}, s.active),
      el('td', {}, s.lastRun || '—'),
      el('td', {}, s.lastPhase || '—'),
      el('td', {}, s.message || ''),
      el('td', {}, run)));
  }
  box.replaceChildren(table);
}

function ask(namespace, name, action, question) {
  pending = { namespace, name, action };
  $('confirm-text').textContent = question;
  $('confirm').returnValue = '';
  $('confirm').showModal();
}

async function confirmed() {
  const chosen = pending;
  pending = null;
  if (!chosen || $('confirm').returnValue !== 'ok') return;
  const { namespace, name, action } = chosen;
  const ns = encodeURIComponent(namespace);
  const nm = encodeURIComponent(name);
  const url = action === 'run'
    ? '/api/v1/scheduled-analyses/' + ns + '/' + nm + '/run'
    : '/api/v1/canaries/' + ns + '/' + nm + '/' + action;
  const init = {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-CSRF-Token': csrf || '', 'Content-Type': 'application/json' },
  };
  if (action === 'abort') init.body = JSON.stringify({ reason: 'aborted from the dashboard' });
  const notice = $('notice');
  try {
    const r = await fetch(url, init);
    if (r.status === 401) {
      showLogin(await errorOf(r));
      return;
    }
    if (r.ok) {
      notice.className = 'good';
      notice.textContent = action + ' ' + namespace + '/' + name + ': accepted';
    } else {
      notice.className = 'bad';
      notice.textContent = action + ' ' + namespace + '/' + name + ' refused: ' + (await errorOf(r));
    }
  } catch (e) {
    notice.className = 'bad';
    notice.textContent = action + ' failed: ' + e;
  }
  poll();
}

document.addEventListener('DOMContentLoaded', boot);
