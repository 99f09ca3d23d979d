/*
 * Martix console: the operators' page. Vanilla JavaScript, no build step, served at /ui under a
 * strict CSP (no inline code, handlers or styles). Server data is untrusted: every node is built
 * with el() and text only ever goes in through textContent / text nodes, never innerHTML.
 *
 * Structure, top to bottom:
 *   helpers   el(), times, money, enum names, payload decoding
 *   api       api(method, path, body): bearer token, JSON, errors as ApiError; rpc() for the engine
 *   session   whoami, the token form, sign out, can(action)
 *   flash     the #flash line (ok / error)
 *   confirm   the <dialog id="confirm"> every action goes through
 *   actions   engine actions (shared by the order, workflow and stuck pages) and order actions
 *   history   the History <details> panel (readable table + JSON toggle), loaded when opened;
 *             the order page's "Saga now" panel (the running saga's `status` query), loaded
 *             when the page shows a running run and on Reload
 *   pages     each page is {nav, need, mount(ctx), load(ctx), render(ctx, data), after?, failed?}:
 *             mount builds the static parts (heading, filters) once; load makes the refresh's
 *             request; render rebuilds only the data region, and only when the answer changed.
 *             The Workflows page also has the #batch panel (preview the runs its filters match,
 *             then one action on each of them), built by mount and never touched by the refresh
 *   poller    router + refresh loop: every 3 s while the tab is visible
 */
'use strict';

const POLL_MS = 3000;
const TOKEN_KEY = 'martix.token';
const ORDER_STATUSES = ['placed', 'priced', 'reserved', 'charged', 'shipped', 'compensating',
  'needs_attention', 'completed', 'compensated', 'canceled', 'failed', 'rejected'];
const WF_STATUSES = ['RUNNING', 'COMPLETED', 'FAILED', 'CANCELED', 'TERMINATED', 'CONTINUED_AS_NEW',
  'TIMED_OUT', 'COMPENSATED'].map(s => 'WORKFLOW_STATUS_' + s);
const COMPENSATIONS = new Set(['refund_payment', 'release_inventory']);
const SVG_NS = 'http://www.w3.org/2000/svg';
const SVG_TAGS = new Set(['svg', 'polyline', 'path', 'line', 'g']);

/* ---------- helpers ---------- */

const $ = (sel, root = document) => root.querySelector(sel);

/** Builds an element: attrs are attributes (class may be an array; on* functions are listeners;
 * booleans set properties such as hidden, open, disabled); children are nodes or text. */
function el(tag, attrs, ...children) {
  const svg = SVG_TAGS.has(tag);
  const node = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.setAttribute('class', [].concat(v).filter(Boolean).join(' '));
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (typeof v === 'boolean' && !svg) node[k] = v;
    else node.setAttribute(k, String(v));
  }
  return add(node, children);
}

/** Appends children: nodes or text (arrays are flattened; null, undefined and false skipped). */
function add(node, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** Replaces the children of node (as add() does). */
function fill(node, ...children) {
  node.replaceChildren();
  return add(node, children);
}

const pad = n => String(n).padStart(2, '0');

/** An RFC 3339 time as a Date (nanoseconds cut to milliseconds), or null. */
function parseTime(t) {
  if (!t) return null;
  const d = new Date(String(t).replace(/(\.\d{3})\d+/, '$1'));
  return isNaN(d) ? null : d;
}

/** Local `YYYY-MM-DD HH:MM:SS`. */
function fmtTime(t) {
  const d = parseTime(t);
  if (!d) return t ? String(t) : '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function clock(d = new Date()) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "3m ago", "in 12s". */
function ago(t) {
  const d = parseTime(t);
  if (!d) return '';
  const s = Math.round((Date.now() - d) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? a + 's' : a < 3600 ? Math.floor(a / 60) + 'm'
    : a < 86400 ? Math.floor(a / 3600) + 'h' : Math.floor(a / 86400) + 'd';
  return s >= 0 ? text + ' ago' : 'in ' + text;
}

/** A <time> with the local time, optionally followed by its age. */
function timeEl(t, withAge) {
  if (!t) return el('span', { class: 'muted' }, '—');
  return el('time', { datetime: t, title: String(t) }, fmtTime(t),
    withAge ? el('span', { class: 'age' }, ' ' + ago(t)) : null);
}

function money(cents, currency) {
  if (cents === null || cents === undefined) return '—';
  return (Number(cents) / 100).toFixed(2) + ' ' + (currency || '');
}

/** WORKFLOW_STATUS_RUNNING -> running. */
function enumName(v, prefix) {
  return v ? String(v).replace(prefix, '').toLowerCase() : 'unspecified';
}

const wfStatus = v => enumName(v, 'WORKFLOW_STATUS_');

function compact(v, max = 0) {
  let s = typeof v === 'string' ? v : JSON.stringify(v);
  if (s === undefined) s = '';
  return max && s.length > max ? s.slice(0, max - 1) + '…' : s;
}

const pretty = v => JSON.stringify(v, null, 2);

/** A Payload's value: JSON decoded when its encoding is json*, else its text. */
function decodePayload(p) {
  if (!p || !p.data) return null;
  try {
    const bytes = Uint8Array.from(atob(p.data), c => c.charCodeAt(0));
    const text = new TextDecoder().decode(bytes);
    return String(p.encoding || '').startsWith('json') ? JSON.parse(text) : text;
  } catch (e) {
    return `<${p.encoding || 'payload'}, ${p.data.length} base64 characters>`;
  }
}

const isPayload = v => v && typeof v === 'object' && !Array.isArray(v) && typeof v.encoding === 'string' &&
  Object.keys(v).every(k => k === 'encoding' || k === 'data');

/** A copy of v with every Payload's data decoded (for reading history as JSON). */
function decodeDeep(v) {
  if (isPayload(v)) return { encoding: v.encoding, data: decodePayload(v) };
  if (Array.isArray(v)) return v.map(decodeDeep);
  if (v && typeof v === 'object') {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = decodeDeep(x);
    return out;
  }
  return v;
}

/** A map<string, Payload> as {key: decoded value}. */
function payloadMap(m) {
  const out = {};
  for (const [k, p] of Object.entries(m || {})) out[k] = decodePayload(p);
  return out;
}

/** UTF-8 text as base64 (a Payload's data). */
function base64(text) {
  let bin = '';
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin);
}

const failureText = f => !f ? '' : [f.message || '(no message)', f.type && `(${f.type})`,
  f.nonRetryable && 'non-retryable', f.breaker && `breaker ${f.breaker}`].filter(Boolean).join(' ');

/** A <table> with a header row; rows are arrays of cells (nodes or text) or <tr> elements. */
function table(attrs, headers, rows) {
  return el('div', { class: 'scroll' }, el('table', attrs,
    el('thead', {}, el('tr', {}, headers.map(h => el('th', {}, h)))),
    el('tbody', {}, rows.map(r => r instanceof Node ? r : el('tr', {}, r.map(c => el('td', {}, c)))))));
}

/** A definition list from [label, value] pairs (pairs with value null are left out). */
function facts(pairs, attrs) {
  return el('dl', Object.assign({ class: 'facts' }, attrs),
    pairs.filter(p => p && p[1] !== null && p[1] !== undefined)
      .map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function section(title, ...children) {
  return el('section', { class: 'card' }, el('h2', {}, title), children);
}

const orderLink = id => el('a', { href: '#/orders/' + encodeURIComponent(id), class: 'mono' }, id);
const wfLink = id => el('a', { href: '#/workflows/' + encodeURIComponent(id), class: 'mono' }, id);
const badge = (status, attrs) => el('span', Object.assign({ class: ['badge', 'st-' + status] }, attrs), status);

/* ---------- api ---------- */

class ApiError extends Error {
  constructor(status, message, code, field) {
    super(message);
    this.status = status;
    this.code = code || '';
    this.field = field || '';
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

/** One HTTP call: adds the bearer token, parses JSON (other bodies come back as text), throws
 * an ApiError with the status and the server's message on a non-2xx answer. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json, text/plain;q=0.5' };
  if (token()) headers.Authorization = 'Bearer ' + token();
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'cannot reach the server: ' + e.message, 'UNAVAILABLE');
  }
  const text = await res.text();
  if (!res.ok) throw errorOf(res, text);
  const type = res.headers.get('Content-Type') || '';
  if (!type.includes('json') && !/^\s*[[{]/.test(text)) return text;
  try {
    return text.trim() ? JSON.parse(text) : {};
  } catch (e) {
    throw new ApiError(res.status, 'the answer is not JSON: ' + compact(text, 120), 'INTERNAL');
  }
}

/** The error of an answer: `{"error": {code, message, field}}`, or `{code, message}`, or text. */
function errorOf(res, text) {
  let e = {};
  try {
    const j = JSON.parse(text);
    e = j && typeof j.error === 'object' && j.error ? j.error : (j || {});
  } catch (_) { /* not JSON */ }
  const message = (typeof e.message === 'string' && e.message) || text.trim() || res.statusText || 'HTTP ' + res.status;
  return new ApiError(res.status, message, e.code ? String(e.code) : '', e.field);
}

const errText = e => e.code ? `${e.message} (${e.code})` : e.message;

/** A WorkflowService method over JSON, in the signed-in namespace. */
const rpc = (method, body) =>
  api('POST', '/api/martix.v1.WorkflowService/' + method, Object.assign({ namespace: me.namespace }, body));

/* ---------- session ---------- */

let me = null;
let signInTimer = null;
const can = action => !!(me && me.can && me.can[action]);

async function signIn() {
  clearTimeout(signInTimer);
  stopPolling();
  try {
    me = await api('GET', '/api/console/whoami');
  } catch (e) {
    me = null;
    showWhoami();
    if (e.status === 401) return showTokenForm(e.message);
    flash(errText(e), 'error');
    signInTimer = setTimeout(signIn, POLL_MS);
    return;
  }
  me.can = me.can || {};
  hideTokenForm();
  showWhoami();
  clearFlash();
  route();
}

/** The token form, built when needed (so that #token exists only while it is asked for). */
function showTokenForm(message) {
  // The token held was refused: forget it, or each reload would send it again (and count
  // against the failed sign-in limit of this address).
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  stopPolling();
  closeConfirm();
  fill($('#main'));
  showWhoami();
  const auth = $('#auth');
  if (!$('#token-form')) {
    fill(auth,
      el('h1', {}, 'Sign in'),
      el('p', { class: 'muted' }, 'This Martix server needs a bearer token. It is kept in this tab only (sessionStorage).'),
      el('form', { id: 'token-form', autocomplete: 'off', onsubmit: onTokenSubmit },
        el('label', { for: 'token' }, 'Token'),
        el('input', { id: 'token', type: 'password', required: true, spellcheck: 'false', autocomplete: 'off' }),
        el('button', { id: 'token-submit', type: 'submit', class: 'primary' }, 'Sign in'),
        el('p', { id: 'token-error', class: 'error-text' })));
  }
  auth.hidden = false;
  $('#token-error').textContent = message || '';
  $('#token').focus();
}

function hideTokenForm() {
  fill($('#auth'));
  $('#auth').hidden = true;
}

function showWhoami() {
  const w = $('#whoami');
  $('#nav').hidden = !me;
  $('#sign-out').hidden = !me || !me.auth;
  if (!me) {
    w.textContent = '';
  } else if (!me.auth) {
    w.textContent = 'no authentication (martix dev)';
  } else {
    w.textContent = `${me.subject} · roles: ${(me.roles || []).join(', ') || 'none'}`;
    w.title = 'namespace ' + me.namespace;
  }
  const need = { stuck: 'list', workflows: 'list', queues: 'list', system: 'metrics' };
  for (const a of document.querySelectorAll('a[data-nav]')) {
    const n = need[a.dataset.nav];
    a.hidden = !me || (!!n && !can(n));
  }
}

function onTokenSubmit(ev) {
  ev.preventDefault();
  const t = $('#token').value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  $('#token').value = '';
  $('#token-error').textContent = '';
  signIn();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  clearFlash();
  $('#updated').textContent = '';
  signIn();
}

/* ---------- flash ---------- */

let flashTimer = null;
let flashFromPoll = false;

function flash(message, kind = 'ok', fromPoll = false) {
  const f = $('#flash');
  f.textContent = message;
  f.className = kind;
  f.hidden = false;
  flashFromPoll = fromPoll;
  clearTimeout(flashTimer);
  if (kind === 'ok') flashTimer = setTimeout(clearFlash, 10000);
}

function clearFlash() {
  const f = $('#flash');
  f.hidden = true;
  f.textContent = '';
  f.className = '';
  flashFromPoll = false;
}

/* ---------- confirm dialog ---------- */

let pending = null;

/** Asks before an action. opts: {title, text, reason: 'required'|'optional'|'none',
 * reasonLabel, extra: [nodes], validate(): message|'' , run(reason): Promise<flash text>}. */
function confirmAction(opts) {
  const d = $('#confirm');
  if (d.open) d.close();
  pending = opts;
  $('#confirm-title').textContent = opts.title;
  $('#confirm-text').textContent = opts.text || '';
  fill($('#confirm-extra'), opts.extra || []);
  $('#confirm-error').textContent = '';
  $('#confirm-reason').value = '';
  setReasonMode(opts.reason || 'required', opts.reasonLabel);
  const ok = $('#confirm-ok');
  ok.textContent = opts.okLabel || 'Confirm';
  ok.disabled = false;
  ok.classList.toggle('danger', !!opts.danger);
  d.showModal();
  const first = $('#confirm-extra input, #confirm-extra select, #confirm-extra textarea');
  (first || ($('#confirm-reason').hidden ? ok : $('#confirm-reason'))).focus();
}

function setReasonMode(mode, label) {
  const r = $('#confirm-reason');
  r.hidden = $('#confirm-reason-label').hidden = mode === 'none';
  r.required = mode === 'required';
  $('#confirm-reason-label').textContent = label ||
    (mode === 'required' ? 'Reason (required, recorded in the history)' : 'Reason (optional)');
}

async function onConfirmSubmit(ev) {
  ev.preventDefault();
  const opts = pending;
  if (!opts) return;
  const reasonBox = $('#confirm-reason');
  const reason = reasonBox.value.trim();
  const problem = (reasonBox.required && !reason) ? 'A reason is required.' : (opts.validate ? opts.validate() : '');
  if (problem) {
    $('#confirm-error').textContent = problem;
    return;
  }
  $('#confirm-ok').disabled = true;
  try {
    const message = await opts.run(reason);
    closeConfirm();
    flash(message, 'ok');
  } catch (e) {
    closeConfirm();
    if (e.status === 401) return showTokenForm(e.message);
    flash(errText(e), 'error');
  }
  refreshNow();
}

function closeConfirm() {
  pending = null;
  const d = $('#confirm');
  if (d.open) d.close();
}

/* ---------- actions ---------- */

const exec = id => ({ workflowId: id });

/** Engine actions on a workflow id: label, the `can` they need, and what they do. */
const ENGINE_ACTIONS = {
  retry: {
    label: 'Retry now', need: 'retry', reason: 'none',
    text: 'Runs now every activity of the run that waits for its next attempt.',
    run: async id => {
      const r = await rpc('RetryActivity', { execution: exec(id), activityId: '', resetAttempts: false });
      return `retried activities ${(r.activityIds || []).length}`;
    },
  },
  pause: {
    label: 'Pause', need: 'pause',
    text: 'No task of the run is handed out until it is resumed; running tasks finish.',
    run: async (id, reason) => {
      const r = await rpc('PauseWorkflow', { execution: exec(id), reason });
      return r.changed ? 'paused' : 'paused already (nothing changed)';
    },
  },
  resume: {
    label: 'Resume', need: 'pause',
    text: 'Its tasks become available again.',
    run: async (id, reason) => {
      const r = await rpc('ResumeWorkflow', { execution: exec(id), reason });
      return r.changed ? 'resumed' : 'was not paused (nothing changed)';
    },
  },
  cancel: {
    label: 'Cancel', need: 'cancel', danger: true,
    text: 'Asks the workflow to cancel; a saga compensates what it did (refund, release).',
    run: async (id, reason) => {
      await rpc('CancelWorkflow', { execution: exec(id), reason });
      return 'canceled';
    },
  },
  terminate: {
    label: 'Terminate', need: 'terminate', danger: true,
    text: 'Stops the run now: no more workflow code runs and nothing is compensated.',
    run: async (id, reason) => {
      await rpc('TerminateWorkflow', { execution: exec(id), reason });
      return 'terminated';
    },
  },
  reset: {
    label: 'Reset', need: 'reset', danger: true,
    text: 'Starts a new run from the last good workflow task of this run.',
    run: async (id, reason) => {
      const r = await rpc('ResetWorkflow', { execution: exec(id), workflowTaskFinishEventId: '0', reason });
      return `reset: new run ${r.runId || '?'}`;
    },
  },
  signal: {
    label: 'Signal', need: 'signal', reason: 'optional',
    reasonLabel: 'Note (optional; a signal carries no reason, this is not sent)',
    text: 'Sends a signal to the open run.',
    extra: () => [
      el('label', { for: 'signal-name' }, 'Signal name'),
      el('input', { id: 'signal-name', type: 'text', required: true, spellcheck: 'false' }),
      el('label', { for: 'signal-input' }, 'Input (JSON, optional)'),
      el('textarea', { id: 'signal-input', rows: '4', spellcheck: 'false', placeholder: '{"key": "value"}' }),
    ],
    validate: () => {
      if (!$('#signal-name').value.trim()) return 'A signal name is required.';
      const input = $('#signal-input').value.trim();
      try {
        if (input) JSON.parse(input);
      } catch (e) {
        return 'The input is not JSON: ' + e.message;
      }
      return '';
    },
    run: async id => {
      const name = $('#signal-name').value.trim();
      const input = $('#signal-input').value.trim();
      const body = { execution: exec(id), signalName: name };
      if (input) body.input = { encoding: 'json/plain', data: base64(input) };
      await rpc('SignalWorkflow', body);
      return `signaled ${name}`;
    },
  },
};

/** Order actions: cancel through the engine (with the reason), resolve over the order REST API. */
const ORDER_ACTIONS = {
  cancel: {
    label: 'Cancel order', need: 'cancel', danger: true, reason: 'required',
    text: 'The saga compensates what it did (refund the charge, release the stock) and ends canceled or compensated.',
    run: async (id, reason) => {
      await rpc('CancelWorkflow', { execution: { workflowId: id }, reason });
      return 'cancel requested';
    },
  },
  resolve: {
    label: 'Resolve', need: 'retry', reason: 'optional',
    text: 'The order waits for a decision: a compensation failed for good.',
    extra: () => {
      const select = el('select', { id: 'resolve-action' },
        el('option', { value: 'retry' }, 'retry: run the failed compensations again'),
        el('option', { value: 'done' }, 'done: they were done by hand (ends compensated)'),
        el('option', { value: 'fail' }, 'fail: give up (ends failed)'));
      select.addEventListener('change', () => setReasonMode(select.value === 'retry' ? 'optional' : 'required'));
      return [el('label', { for: 'resolve-action' }, 'Decision'), select];
    },
    run: async (id, reason) => {
      const action = $('#resolve-action').value;
      await api('POST', `/v1/orders/${encodeURIComponent(id)}/resolve`, { action, reason });
      return `resolved: ${action}`;
    },
  },
};

/** A button[data-action] that opens the confirmation of `action` on workflow `id`. */
function actionButton(name, action, id) {
  return el('button', {
    type: 'button', 'data-action': name, class: ['act', action.danger && 'danger'],
    onclick: () => confirmAction({
      title: `${action.label}: ${id}`,
      text: action.text,
      reason: action.reason,
      reasonLabel: action.reasonLabel,
      danger: action.danger,
      okLabel: action.label,
      extra: action.extra ? action.extra() : [],
      validate: action.validate,
      run: reason => action.run(id, reason),
    }),
  }, action.label);
}

/** The buttons of the named actions the signed-in caller may use. */
function actionButtons(names, id, actions = ENGINE_ACTIONS) {
  return names.map(n => [n, actions[n] || ENGINE_ACTIONS[n]])
    .filter(([, a]) => can(a.need))
    .map(([n, a]) => actionButton(n, a, id));
}

/* ---------- history ---------- */

const eventType = ev => Object.keys(ev).find(k => k !== 'eventId' && k !== 'eventTime') || 'unknown';
const ref = id => id ? 'of #' + id : '';
const by = who => who ? 'by ' + who : '';
const pl = (label, p) => p && p.data ? `${label} ${compact(decodePayload(p), 160)}` : '';

/** One line per event type from its attributes. */
const SUMMARIES = {
  workflowExecutionStarted: a => [a.workflowType, a.taskQueue && 'queue ' + a.taskQueue, pl('input', a.input),
    a.continuedFromRunId && 'continued from ' + a.continuedFromRunId, by(a.identity)],
  workflowTaskScheduled: a => [a.taskQueue && 'queue ' + a.taskQueue, 'attempt ' + (a.attempt || 1)],
  workflowTaskStarted: a => [ref(a.scheduledEventId), by(a.identity)],
  workflowTaskCompleted: a => [ref(a.scheduledEventId), by(a.identity)],
  workflowTaskFailed: a => [enumName(a.cause, 'WORKFLOW_TASK_FAILED_CAUSE_'), failureText(a.failure), by(a.identity)],
  activityTaskScheduled: a => [a.activityType, a.activityId && 'id ' + a.activityId, pl('input', a.input)],
  activityTaskStarted: a => [ref(a.scheduledEventId), 'attempt ' + (a.attempt || 1), by(a.identity),
    a.lastFailure && 'last failure: ' + failureText(a.lastFailure)],
  activityTaskCompleted: a => [ref(a.scheduledEventId), pl('result', a.result), by(a.identity)],
  activityTaskFailed: a => [ref(a.scheduledEventId), failureText(a.failure), by(a.identity)],
  activityTaskTimedOut: a => [ref(a.scheduledEventId), failureText(a.failure)],
  activityTaskCancelRequested: a => [ref(a.scheduledEventId)],
  activityTaskCanceled: a => [ref(a.scheduledEventId), pl('details', a.details)],
  timerStarted: a => ['timer ' + (a.timerId || ''), a.startToFireTimeout && 'fires after ' + a.startToFireTimeout],
  timerFired: a => ['timer ' + (a.timerId || '')],
  timerCanceled: a => ['timer ' + (a.timerId || '')],
  workflowExecutionSignaled: a => [a.signalName, pl('input', a.input), by(a.identity)],
  workflowExecutionCancelRequested: a => [a.reason, by(a.identity)],
  markerRecorded: a => [a.markerName, a.details && compact(payloadMap(a.details), 160)],
  eventPublished: a => [a.eventType, a.sequence && 'seq ' + a.sequence, pl('body', a.body)],
  workflowExecutionCompleted: a => [a.compensated && 'compensated', pl('result', a.result)],
  workflowExecutionFailed: a => [failureText(a.failure)],
  workflowExecutionCanceled: a => [pl('details', a.details)],
  workflowExecutionTerminated: a => [a.reason, by(a.identity)],
  workflowExecutionContinuedAsNew: a => [a.newRunId && 'new run ' + a.newRunId, a.workflowType],
  workflowExecutionTimedOut: () => [],
  startChildWorkflowExecutionInitiated: a => ['child ' + (a.workflowId || ''), a.workflowType,
    pl('input', a.input), a.parentClosePolicy && enumName(a.parentClosePolicy, 'PARENT_CLOSE_POLICY_') + ' if this run closes first'],
  childWorkflowExecutionStarted: a => ['child ' + ((a.workflowExecution || {}).workflowId || ''), ref(a.initiatedEventId),
    'run ' + ((a.workflowExecution || {}).runId || '')],
  startChildWorkflowExecutionFailed: a => ['child ' + (a.workflowId || ''), ref(a.initiatedEventId), failureText(a.failure)],
  childWorkflowExecutionClosed: a => ['child ' + ((a.workflowExecution || {}).workflowId || ''), ref(a.initiatedEventId),
    enumName(a.status, 'WORKFLOW_STATUS_'), pl('result', a.result), a.failure && failureText(a.failure)],
  childWorkflowExecutionCancelRequested: a => ['child ' + (a.workflowId || ''), ref(a.initiatedEventId)],
};

function eventSummary(ev) {
  const type = eventType(ev);
  const attrs = ev[type] || {};
  const f = SUMMARIES[type] || (a => [compact(a, 160)]);
  return f(attrs).filter(Boolean).join(' · ');
}

function eventClass(type) {
  if (/Failed|TimedOut|Terminated/.test(type)) return 'bad';
  if (/Completed$/.test(type) && type.startsWith('activity')) return 'good';
  if (/^workflowExecution/.test(type)) return 'milestone';
  return '';
}

/** The History <details>: loads GetWorkflowHistory when opened, when the page moves to another
 * run, and when Reload is pressed; the page's own refresh stays one request. */
function historyPanel(id) {
  const body = el('div', { class: 'history-body' }, el('p', { class: 'muted' }, 'Loading…'));
  const json = el('input', { type: 'checkbox', class: 'json-toggle' });
  const reload = el('button', { type: 'button', class: 'history-reload' }, 'Reload');
  const details = el('details', { id, class: 'card history' },
    el('summary', {}, 'History'),
    el('label', { class: 'toggle' }, json, ' JSON'), ' ', reload,
    body);
  const panel = { details, execution: null, key: null, events: null, more: false, busy: false };

  panel.draw = () => {
    if (!panel.events) return;
    const note = panel.more ? el('p', { class: 'muted' }, `First ${panel.events.length} events; the history goes on.`) : null;
    if (json.checked) {
      fill(body, el('p', { class: 'muted' }, 'Raw events, payloads decoded.'),
        el('pre', { class: 'json' }, pretty(decodeDeep(panel.events))), note);
      return;
    }
    const rows = panel.events.map(ev => {
      const type = eventType(ev);
      return el('tr', { 'data-event-type': type, class: eventClass(type) },
        el('td', { class: 'num inline' }, ev.eventId || '0'),
        el('td', { class: 'inline' }, timeEl(ev.eventTime)),
        el('td', { class: 'mono inline' }, type),
        el('td', { class: 'summary' }, eventSummary(ev)));
    });
    fill(body, table({ class: 'history-table stack' }, ['#', 'time', 'type', 'summary'], rows), note);
  };

  panel.load = async () => {
    if (!panel.execution || panel.busy) return;
    panel.busy = true;
    try {
      const r = await rpc('GetWorkflowHistory', { execution: panel.execution, pageSize: 1000 });
      const key = JSON.stringify(r);
      if (key !== panel.key) {
        panel.key = key;
        panel.events = r.events || [];
        panel.more = !!r.nextPageToken;
        panel.draw();
      }
    } catch (e) {
      panel.key = null;
      fill(body, el('p', { class: 'error-text' }, 'History: ' + errText(e)));
    } finally {
      panel.busy = false;
    }
  };

  /** Called after each refresh of the page with the run to show: loads only for another run. */
  panel.refresh = execution => {
    const moved = JSON.stringify(execution) !== JSON.stringify(panel.execution);
    panel.execution = execution;
    if (moved && details.open) panel.load();
  };

  details.addEventListener('toggle', () => { if (details.open) panel.load(); });
  reload.addEventListener('click', () => panel.load());
  json.addEventListener('change', panel.draw);
  return panel;
}

/** The order page's "Saga now" panel: the running saga's own answer to its `status` query
 * (QueryWorkflow, answered by a worker replaying the run), not the read model. Loads when the
 * page first shows a running run (or another one), and on Reload; the page's own refresh stays
 * one request. Hidden while the run is closed. */
function sagaPanel() {
  const body = el('div', { class: 'saga-body' });
  const asked = el('span', { class: 'saga-asked' });
  const reload = el('button', { type: 'button', class: 'saga-reload' }, 'Reload');
  const node = el('section', { id: 'saga-now', class: ['card', 'saga-now'], hidden: true },
    el('div', { class: 'saga-head' }, el('h2', {}, 'Saga now'), reload),
    el('p', { class: 'muted saga-caption' },
      'From the running saga itself (its ', el('code', {}, 'status'), ' query), not the read model', asked, '.'),
    body);
  // seq drops an answer about a run the page no longer shows.
  const panel = { node, execution: null, currency: undefined, status: null, seq: 0 };

  panel.draw = () => {
    const s = panel.status;
    if (s === null) return;
    if (typeof s !== 'object') {
      fill(body, el('code', {}, compact(s, 400)));
      return;
    }
    const m = c => money(c, panel.currency);
    fill(body, facts([
      ['Step', el('span', { class: 'saga-step mono' }, String(s.step || ''))],
      ['Total', el('span', { class: 'saga-total' }, m(s.total_cents))],
      ['Charged', el('span', { class: 'saga-charged' }, m(s.charged_cents))],
      ['Failed step', s.failed_step ? el('span', { class: 'saga-failed-step mono' }, s.failed_step) : null],
      ['Cause', s.cause ? el('span', { class: 'saga-cause error-text' }, s.cause) : null],
      ['Attention', s.attention ? el('span', { class: 'saga-attention warn-text' }, s.attention) : null],
    ], { class: 'facts money' }));
  };

  panel.load = async () => {
    if (!panel.execution) return;
    const seq = ++panel.seq;
    reload.disabled = true;
    panel.status = null;
    asked.textContent = '';
    fill(body, el('p', { class: 'muted' }, 'asking the saga…'));
    try {
      const r = await rpc('QueryWorkflow', { execution: panel.execution, queryType: 'status' });
      if (seq !== panel.seq) return;
      const s = decodePayload(r.result);
      asked.textContent = ', asked at ' + clock();
      if (s === null) {
        fill(body, el('p', { class: 'muted' }, 'The saga answered nothing.'));
        return;
      }
      panel.status = s;
      panel.draw();
    } catch (e) {
      if (seq !== panel.seq) return;
      fill(body, el('p', { class: 'error-text saga-error' },
        e.code === 'DEADLINE_EXCEEDED' ? 'No worker answered: ' + errText(e) : errText(e)));
    } finally {
      if (seq === panel.seq) reload.disabled = false;
    }
  };

  /** Called after each refresh of the page with the run if it is running (else null) and the
   * order's currency: loads only for a run it has not asked yet. */
  panel.refresh = (execution, currency) => {
    node.hidden = !execution;
    if (currency !== panel.currency) {
      panel.currency = currency;
      panel.draw();
    }
    const moved = JSON.stringify(execution) !== JSON.stringify(panel.execution);
    panel.execution = execution;
    if (!moved) return;
    if (!execution) {
      panel.seq++;
      reload.disabled = false;
      return;
    }
    panel.load();
  };

  reload.addEventListener('click', () => panel.load());
  return panel;
}

/* ---------- pages: orders ---------- */

const ordersState = { status: '', customer: '', token: '', prev: [] };

/** The list's query: filters, page, and the counts by status (for the chips) in the same answer. */
function ordersQuery() {
  const q = new URLSearchParams({ page_size: '50' });
  if (ordersState.status) q.set('status', ordersState.status);
  if (ordersState.customer) q.set('customer_id', ordersState.customer);
  if (ordersState.token) q.set('page_token', ordersState.token);
  q.set('counts', 'true');
  return q.toString();
}

function setOrdersFilter(change) {
  Object.assign(ordersState, change, { token: '', prev: [] });
  $('#filter-status').value = ordersState.status;
  refreshNow();
}

const ordersPage = {
  nav: 'orders',
  mount(ctx) {
    const status = el('select', { id: 'filter-status' },
      el('option', { value: '' }, 'all'), ORDER_STATUSES.map(s => el('option', { value: s }, s)));
    status.value = ordersState.status;
    status.addEventListener('change', () => setOrdersFilter({ status: status.value }));

    const customer = el('input', { id: 'filter-customer', type: 'search', value: ordersState.customer, placeholder: 'customer id', spellcheck: 'false' });
    let debounce = null;
    const applyCustomer = () => {
      clearTimeout(debounce);
      if (customer.value.trim() !== ordersState.customer) setOrdersFilter({ customer: customer.value.trim() });
    };
    customer.addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(applyCustomer, 500); });
    customer.addEventListener('change', applyCustomer);

    const search = el('input', { id: 'search-order', type: 'search', placeholder: 'order id, Enter to open', spellcheck: 'false' });
    search.addEventListener('keydown', ev => {
      if (ev.key === 'Enter' && search.value.trim()) {
        ev.preventDefault();
        location.hash = '#/orders/' + encodeURIComponent(search.value.trim());
      }
    });

    ctx.counts = el('div', { id: 'order-counts', class: 'chips' });
    ctx.tbody = el('tbody');
    ctx.empty = el('p', { class: 'muted', hidden: true }, 'No orders.');
    ctx.prev = el('button', { id: 'orders-prev', type: 'button', hidden: true }, '← Previous');
    ctx.first = el('button', { id: 'orders-first', type: 'button', hidden: true }, 'First page');
    ctx.next = el('button', { id: 'orders-next', type: 'button', hidden: true }, 'Next page →');
    ctx.prev.addEventListener('click', () => {
      ordersState.token = ordersState.prev.pop() || '';
      refreshNow();
    });
    ctx.first.addEventListener('click', () => { ordersState.token = ''; ordersState.prev = []; refreshNow(); });
    ctx.next.addEventListener('click', () => {
      if (!ctx.nextToken) return;
      ordersState.prev.push(ordersState.token);
      ordersState.token = ctx.nextToken;
      refreshNow();
    });

    add(ctx.root,
      el('h1', {}, 'Orders'),
      ctx.counts,
      el('div', { class: 'filters' },
        el('label', {}, 'Status ', status),
        el('label', {}, 'Customer ', customer),
        el('label', {}, 'Open ', search)),
      el('div', { class: 'scroll' }, el('table', { id: 'orders-table' },
        el('thead', {}, el('tr', {}, ['order', 'customer', 'status', 'total', 'charged', 'created', 'last error']
          .map(h => el('th', {}, h)))),
        ctx.tbody)),
      ctx.empty,
      el('div', { class: 'pager' }, ctx.first, ctx.prev, ctx.next));
  },
  /* One request per refresh: the page of orders carries the counts. */
  load: () => api('GET', '/v1/orders?' + ordersQuery()),
  render(ctx, page) {
    renderCounts(ctx.counts, page.counts);
    const orders = page.orders || [];
    fill(ctx.tbody, orders.map(orderRow));
    ctx.empty.hidden = orders.length > 0;
    ctx.nextToken = page.next_page_token || '';
    ctx.next.hidden = !ctx.nextToken;
    ctx.prev.hidden = ordersState.prev.length === 0;
    ctx.first.hidden = ordersState.prev.length < 2;
  },
};

/** The server counts each status up to 10,001, which means "over 10,000". */
const COUNT_CAP = 10000;
const countText = n => n > COUNT_CAP ? COUNT_CAP.toLocaleString('en-US') + '+' : String(n);

/** The chips: one per status (from the list's `counts`), and "all" with their sum. */
function renderCounts(box, counts) {
  if (!counts || typeof counts !== 'object') {
    fill(box, el('span', { class: 'muted' }, 'counts unavailable'));
    return;
  }
  const c = {};
  for (const [s, n] of Object.entries(counts)) c[s] = Math.max(0, Number(n) || 0);
  const statuses = ORDER_STATUSES.concat(Object.keys(c).filter(s => !ORDER_STATUSES.includes(s)));
  // A capped count makes the sum a lower bound: "10,012+".
  const over = Object.values(c).some(n => n > COUNT_CAP);
  const total = Object.values(c).reduce((a, n) => a + Math.min(n, COUNT_CAP), 0);
  fill(box,
    el('button', { type: 'button', class: ['chip', 'chip-all', !ordersState.status && 'active'], onclick: () => setOrdersFilter({ status: '' }) },
      `all ${over ? total.toLocaleString('en-US') + '+' : total}`),
    ...statuses.map(s => el('button', {
      type: 'button', 'data-status': s,
      class: ['chip', 'st-' + s, !c[s] && 'zero', ordersState.status === s && 'active'],
      onclick: () => setOrdersFilter({ status: ordersState.status === s ? '' : s }),
    }, `${s} ${countText(c[s] || 0)}`)));
}

function orderRow(o) {
  const net = (o.charged_cents || 0) - (o.refunded_cents || 0);
  return el('tr', { 'data-order-id': o.order_id },
    el('td', {}, orderLink(o.order_id)),
    el('td', {}, o.customer_id),
    el('td', { class: ['status', 'st-' + o.status] }, o.status),
    el('td', { class: 'num' }, money(o.total_cents, o.currency)),
    el('td', { class: 'num', title: `charged ${money(o.charged_cents, o.currency)}, refunded ${money(o.refunded_cents, o.currency)}` },
      money(net, o.currency)),
    el('td', {}, timeEl(o.created_at)),
    el('td', { class: 'error-cell', title: o.last_error || '' }, compact(o.last_error || '', 80)));
}

/* ---------- pages: one order ---------- */

const orderPage = {
  nav: 'orders',
  mount(ctx) {
    const id = ctx.params.id;
    ctx.actions = el('div', { id: 'order-actions', class: 'actions' });
    ctx.trace = el('span');
    ctx.region = el('div', { class: 'region' }, el('p', { class: 'muted' }, 'Loading…'));
    ctx.history = can('history') ? historyPanel('order-history') : null;
    ctx.saga = sagaPanel();
    add(ctx.root,
      el('div', { class: 'page-head' },
        el('h1', {}, 'Order ', el('span', { class: 'mono' }, id)),
        can('list') ? el('a', { href: '#/workflows/' + encodeURIComponent(id) }, 'engine view') : null,
        ctx.trace),
      ctx.actions, ctx.saga.node, ctx.region, ctx.history && ctx.history.details);
  },
  load: ctx => api('GET', '/v1/orders/' + encodeURIComponent(ctx.params.id)),
  render(ctx, v) {
    const id = ctx.params.id;
    const o = v.order;
    const running = v.status === 'running';
    const names = running ? ['retry', 'cancel', 'pause', 'resume', 'terminate']
      : v.status !== 'completed' ? ['reset'] : [];
    if (o && o.status === 'needs_attention') names.unshift('resolve');
    fill(ctx.actions, actionButtons(names, id, ORDER_ACTIONS));
    const trace = traceHref(v.trace_id);
    fill(ctx.trace, trace ? el('a', { id: 'order-trace', href: trace, target: '_blank', rel: 'noopener noreferrer' }, 'trace') : null);
    fill(ctx.region,
      el('div', { class: 'grid' },
        section('Status', facts([
          ['Order', o ? badge(o.status, { id: 'order-status' }) : el('span', { id: 'order-status', class: 'muted' }, 'not yet in the read model')],
          ['Run', [badge(v.status, { id: 'run-status' }), v.cancel_requested ? el('span', { class: 'tag' }, 'cancel requested') : null]],
          ['Customer', o ? o.customer_id : null],
          ['Last step', o ? o.step : null],
          ['Shipment', o && o.shipment ? o.shipment : null],
          ['Last error', o && o.last_error ? el('span', { class: 'error-text' }, o.last_error) : null],
          ['Created', timeEl(v.created_at, true)],
          ['Closed', v.closed_at ? timeEl(v.closed_at, true) : null],
          ['Run id', el('span', { class: 'mono' }, v.run_id)],
        ])),
        section('Money', orderMoney(o)),
        section('Outcome', orderOutcome(v))),
      section('Steps', orderTimeline(v.steps || [])),
      section('Events', orderEvents(v.events || [])));
  },
  after(ctx, v) {
    ctx.saga.refresh(v.status === 'running' ? { workflowId: ctx.params.id, runId: v.run_id } : null,
      v.order ? v.order.currency : undefined);
    if (!ctx.history) return;
    ctx.history.details.hidden = false;
    ctx.history.refresh({ workflowId: ctx.params.id, runId: v.run_id });
  },
  failed(ctx, e) {
    if (e.status !== 404) return false;
    ctx.key = null;
    fill(ctx.actions);
    fill(ctx.trace);
    ctx.saga.refresh(null);
    if (ctx.history) ctx.history.details.hidden = true;
    fill(ctx.region, el('p', { class: 'notice' }, `No order '${ctx.params.id}': ${e.message}`));
    return true;
  },
};

/** The tracing UI's page of a trace: whoami's trace_url with {trace_id} replaced, or null when
 * either is missing or the template is not an http(s) URL (no javascript: or data: link). */
function traceHref(traceId) {
  const template = me && typeof me.trace_url === 'string' ? me.trace_url : '';
  if (!template || typeof traceId !== 'string' || !traceId) return null;
  const href = template.split('{trace_id}').join(encodeURIComponent(traceId));
  try {
    const ok = u => ['http:', 'https:'].includes(new URL(u).protocol);
    return ok(template) && ok(href) ? href : null;
  } catch (e) {
    return null;
  }
}

function orderMoney(o) {
  if (!o) return el('div', { id: 'order-money', class: 'muted' }, 'not yet in the read model');
  const m = c => money(c, o.currency);
  const items = Array.isArray(o.items) ? o.items : [];
  return el('div', { id: 'order-money' },
    facts([
      ['Subtotal', m(o.subtotal_cents)],
      ['Discount', m(o.discount_cents)],
      ['Tax', m(o.tax_cents)],
      ['Total', el('strong', {}, m(o.total_cents))],
      ['Charged', m(o.charged_cents)],
      ['Refunded', m(o.refunded_cents)],
    ], { class: 'facts money' }),
    items.length ? table({ class: 'items' }, ['sku', 'qty', 'unit price'],
      items.map(i => [i.sku, String(i.qty), money(i.unit_price_cents, o.currency)])) : null);
}

function orderOutcome(v) {
  const box = el('div', { id: 'order-outcome' });
  if (v.outcome !== null && v.outcome !== undefined) add(box, el('pre', { class: 'json' }, pretty(v.outcome)));
  if (v.failure) add(box, el('p', { class: 'error-text' }, v.failure));
  if (!box.firstChild) add(box, el('span', { class: 'muted' }, v.status === 'running' ? 'running: no outcome yet' : 'none'));
  return box;
}

function orderTimeline(steps) {
  const list = el('ol', { id: 'order-timeline', class: 'timeline' }, steps.map(s => {
    const comp = COMPENSATIONS.has(s.activity);
    return el('li', {
      'data-activity': s.activity, 'data-status': s.status,
      class: ['step', 'st-' + s.status, comp && 'compensation'],
    },
    el('span', { class: 'step-name mono' }, s.activity),
    badge(s.status),
    el('span', { class: 'muted' }, `attempts ${s.attempts || 0}`),
    comp ? el('span', { class: 'tag' }, 'compensation') : null,
    s.error ? el('div', { class: 'error-text step-error' }, s.error) : null);
  }));
  return [list, steps.length ? null : el('p', { class: 'muted' }, 'No step scheduled yet.')];
}

function orderEvents(events) {
  return [
    table({ id: 'order-events' }, ['seq', 'type', 'time', 'data'], events.map(e =>
      el('tr', { 'data-event-type': e.type },
        el('td', { class: 'num' }, String(e.sequence)),
        el('td', { class: 'mono' }, e.type),
        el('td', {}, timeEl(e.time)),
        el('td', {}, el('code', {}, compact(e.data)))))),
    events.length ? null : el('p', { class: 'muted' }, 'No business event yet.'),
  ];
}

/* ---------- pages: stuck ---------- */

const stuckState = { minAttempts: 3 };

const stuckPage = {
  nav: 'stuck',
  need: 'list',
  mount(ctx) {
    const min = el('input', { id: 'stuck-min-attempts', type: 'number', min: '1', value: String(stuckState.minAttempts) });
    min.addEventListener('change', () => {
      stuckState.minAttempts = Math.max(1, parseInt(min.value, 10) || 3);
      refreshNow();
    });
    ctx.tbody = el('tbody');
    ctx.table = el('div', { class: 'scroll' }, el('table', { id: 'stuck-table', class: 'stack' },
      el('thead', {}, el('tr', {}, ['workflow', 'type', 'started', 'why', 'actions'].map(h => el('th', {}, h)))),
      ctx.tbody));
    ctx.empty = el('p', { id: 'stuck-empty', class: 'notice good', hidden: true }, 'Nothing is stuck.');
    ctx.truncated = el('p', { class: 'muted', hidden: true }, 'Only the most recently started running runs were looked at.');
    ctx.breakers = el('div', { id: 'breakers' });
    add(ctx.root,
      el('h1', {}, 'Stuck'),
      el('div', { class: 'filters' }, el('label', {}, 'Activity attempts at least ', min)),
      ctx.table, ctx.empty, ctx.truncated,
      el('h2', {}, 'Open breakers'), ctx.breakers,
      can('breakers') ? breakersPanel() : null);
  },
  load: loadStuck,
  render(ctx, r) {
    const stuck = r.stuck;
    ctx.truncated.hidden = !r.truncated;
    fill(ctx.tbody, stuck.map(stuckRow));
    ctx.table.hidden = stuck.length === 0;
    ctx.empty.hidden = stuck.length > 0;
    const open = r.open_breakers;
    fill(ctx.breakers, open.length
      ? table({ class: 'breakers' }, ['adapter', 'worker', 'since'],
        open.map(b => [el('strong', {}, b.adapter), b.worker, timeEl(b.since, true)]))
      : el('p', { class: 'muted' }, 'No breaker is open.'));
  },
};

/** The engine's ListStuckWorkflows, in the shape the Stuck page draws. */
async function loadStuck() {
  const r = await rpc('ListStuckWorkflows', { minAttempts: stuckState.minAttempts });
  return {
    stuck: (r.workflows || []).map(w => {
      const i = w.info || {};
      const x = i.execution || {};
      return { workflow_id: x.workflowId || '', run_id: x.runId || '', workflow_type: i.workflowType || '',
        task_queue: i.taskQueue || '', start_time: i.startTime || '', why: w.why || [], retryable: !!w.retryable };
    }),
    open_breakers: r.openBreakers || [],
    truncated: !!r.truncated,
  };
}

function stuckRow(s) {
  const names = [s.retryable && 'retry', 'pause', 'cancel', 'terminate'].filter(Boolean);
  return el('tr', { 'data-workflow-id': s.workflow_id },
    el('td', {}, s.workflow_type === 'order' ? orderLink(s.workflow_id) : wfLink(s.workflow_id)),
    el('td', {}, s.workflow_type),
    el('td', {}, timeEl(s.start_time, true)),
    el('td', { class: 'why' }, el('ul', {}, (s.why || []).map(w => el('li', {}, w)))),
    el('td', { class: 'actions' }, actionButtons(names, s.workflow_id)));
}

/** Every breaker of the namespace (ListBreakers), loaded when its <details> opens or on Reload
 * (the page's own refresh stays one request). */
function breakersPanel() {
  const body = el('div');
  const details = el('details', { id: 'breakers-all', class: 'card' }, el('summary', {}, 'All breakers (holds, parked tasks)'), body);
  const load = async () => {
    try {
      const r = await rpc('ListBreakers', {});
      const list = r.breakers || [];
      fill(body, list.length ? table({}, ['breaker', 'open', 'hold', 'parked', 'workers'], list.map(b => [
        el('strong', {}, b.breaker),
        b.open ? el('span', { class: 'badge st-failed' }, 'open') : el('span', { class: 'badge st-completed' }, 'closed'),
        [b.hold ? enumName(b.hold, 'BREAKER_HOLD_') : 'none', b.holdReason ? ': ' + b.holdReason : ''],
        String(b.parked || '0'),
        (b.workers || []).map(w => `${w.worker || '?'} ${w.state || '?'}`).join(', '),
      ])) : el('p', { class: 'muted' }, 'No breaker reported.'));
    } catch (e) {
      fill(body, el('p', { class: 'error-text' }, errText(e)));
    }
  };
  const reload = el('button', { type: 'button' }, 'Reload');
  reload.addEventListener('click', load);
  details.insertBefore(reload, body);
  details.addEventListener('toggle', () => { if (details.open) load(); });
  return details;
}

/* ---------- pages: workflows ---------- */

const wfState = { type: '', status: '', prefix: '', token: '', prev: [] };

function setWfFilter(change) {
  Object.assign(wfState, change, { token: '', prev: [] });
  refreshNow();
}

/** The page's filters as ListWorkflows fields (the list and the batch preview use the same). */
function wfFilters() {
  const f = {};
  if (wfState.status) f.statuses = [wfState.status];
  if (wfState.type) f.workflowType = wfState.type;
  if (wfState.prefix) f.workflowIdPrefix = wfState.prefix;
  return f;
}

/** A text filter input that applies after a pause in typing, or at once on Enter. */
function wfFilterInput(id, key, placeholder, apply) {
  const input = el('input', { id, type: 'search', value: wfState[key], placeholder, spellcheck: 'false' });
  let t = null;
  const go = () => {
    clearTimeout(t);
    if (input.value.trim() !== wfState[key]) apply({ [key]: input.value.trim() });
  };
  input.addEventListener('input', () => { clearTimeout(t); t = setTimeout(go, 500); });
  input.addEventListener('change', go);
  return input;
}

const workflowsPage = {
  nav: 'workflows',
  need: 'list',
  mount(ctx) {
    const status = el('select', { id: 'wf-status' },
      el('option', { value: '' }, 'any'), WF_STATUSES.map(s => el('option', { value: s }, wfStatus(s))));
    status.value = wfState.status;
    ctx.batch = batchPanel();
    // A filter change makes a batch preview stale: it has to be made again before applying.
    const setFilter = change => {
      if (ctx.batch) ctx.batch.invalidate();
      setWfFilter(change);
    };
    status.addEventListener('change', () => setFilter({ status: status.value }));
    const filters = el('div', { class: 'filters' },
      el('label', {}, 'Type ', wfFilterInput('wf-type', 'type', 'workflow type', setFilter)),
      el('label', {}, 'Status ', status),
      el('label', {}, 'Id prefix ', wfFilterInput('wf-prefix', 'prefix', 'id prefix', setFilter)));
    if (ctx.batch) filters.addEventListener('input', ctx.batch.invalidate);
    ctx.tbody = el('tbody');
    ctx.empty = el('p', { class: 'muted', hidden: true }, 'No workflow matches.');
    ctx.prev = el('button', { id: 'wf-prev', type: 'button', hidden: true }, '← Previous');
    ctx.next = el('button', { id: 'wf-next', type: 'button', hidden: true }, 'Next page →');
    ctx.prev.addEventListener('click', () => { wfState.token = wfState.prev.pop() || ''; refreshNow(); });
    ctx.next.addEventListener('click', () => {
      if (!ctx.nextToken) return;
      wfState.prev.push(wfState.token);
      wfState.token = ctx.nextToken;
      refreshNow();
    });
    add(ctx.root,
      el('h1', {}, 'Workflows'),
      filters,
      ctx.batch && ctx.batch.node,
      el('div', { class: 'scroll' }, el('table', { id: 'workflows-table' },
        el('thead', {}, el('tr', {}, ['workflow', 'type', 'queue', 'status', 'started', 'closed', 'events', 'notes']
          .map(h => el('th', {}, h)))),
        ctx.tbody)),
      ctx.empty,
      el('div', { class: 'pager' }, ctx.prev, ctx.next));
  },
  load() {
    const body = Object.assign({ pageSize: 50 }, wfFilters());
    if (wfState.token) body.nextPageToken = wfState.token;
    return rpc('ListWorkflows', body);
  },
  render(ctx, r) {
    const list = r.executions || [];
    fill(ctx.tbody, list.map(workflowRow));
    ctx.empty.hidden = list.length > 0;
    ctx.nextToken = r.nextPageToken || '';
    ctx.next.hidden = !ctx.nextToken;
    ctx.prev.hidden = wfState.prev.length === 0;
  },
};

function workflowRow(w) {
  const id = (w.execution || {}).workflowId || '';
  const status = wfStatus(w.status);
  return el('tr', { 'data-workflow-id': id },
    el('td', {}, wfLink(id)),
    el('td', {}, w.workflowType || ''),
    el('td', {}, w.taskQueue || ''),
    el('td', { class: ['status', 'st-' + status] }, status),
    el('td', {}, timeEl(w.startTime)),
    el('td', {}, timeEl(w.closeTime)),
    el('td', { class: 'num' }, w.historyLength || '0'),
    el('td', {},
      w.pausedSince ? el('span', { class: 'tag warn', title: `${w.pausedBy || ''}: ${w.pausedReason || ''}` }, 'paused') : null,
      w.attention ? el('span', { class: 'tag warn', title: w.attention }, 'attention') : null));
}

/* ---------- workflows: batch actions ---------- */

const BATCH_MAX = 1000;
const BATCH_PAGE_SIZE = 500;
const BATCH_IN_FLIGHT = 4;
const BATCH_FAILURES_SHOWN = 5;

/** What a batch can do to each run (by workflow id and run id): the `can` it needs, whether it
 * takes a reason, and the call. The texts and danger come from ENGINE_ACTIONS. */
const BATCH_ACTIONS = {
  cancel: { need: 'cancel', call: (execution, reason) => rpc('CancelWorkflow', { execution, reason }) },
  terminate: { need: 'terminate', call: (execution, reason) => rpc('TerminateWorkflow', { execution, reason }) },
  pause: { need: 'pause', call: (execution, reason) => rpc('PauseWorkflow', { execution, reason }) },
  resume: { need: 'pause', call: (execution, reason) => rpc('ResumeWorkflow', { execution, reason }) },
  reset: {
    need: 'reset',
    call: (execution, reason) => rpc('ResetWorkflow', { execution, workflowTaskFinishEventId: '0', reason }),
  },
  retry: {
    need: 'retry', noReason: true,
    call: execution => rpc('RetryActivity', { execution, activityId: '', resetAttempts: false }),
  },
};

/** The batch being applied, if any: {name, total, done, failed, failures, over, stopped}. It goes
 * on when the page is left; its progress is drawn in whichever #batch-result is shown. */
let batchJob = null;

const runsText = n => n === 1 ? '1 run' : `${n} runs`;

/** Every run the filters match, following the pages, stopping past BATCH_MAX:
 * {runs: [{workflowId, runId}], over}. */
async function listBatchRuns(filters) {
  const runs = [];
  let token = '';
  do {
    const body = Object.assign({ pageSize: BATCH_PAGE_SIZE }, filters);
    if (token) body.nextPageToken = token;
    const r = await rpc('ListWorkflows', body);
    for (const w of r.executions || []) {
      const x = w.execution || {};
      runs.push({ workflowId: x.workflowId || '', runId: x.runId || '' });
    }
    token = r.nextPageToken || '';
  } while (token && runs.length < BATCH_MAX);
  // The engine gives a next page token only when more runs follow.
  return { runs, over: runs.length > BATCH_MAX || (runs.length === BATCH_MAX && !!token) };
}

/** The #batch panel (null when the token may do none of the actions): action, reason, preview
 * (lists the matching runs), apply (to the previewed runs, after the confirmation). It lives
 * outside the page's data region, so the refresh never resets it. */
function batchPanel() {
  const names = Object.keys(BATCH_ACTIONS).filter(n => can(BATCH_ACTIONS[n].need));
  if (!names.length) return null;
  const action = el('select', { id: 'batch-action' }, names.map(n => el('option', { value: n }, n)));
  const reason = el('input', { id: 'batch-reason', type: 'text', required: true, spellcheck: 'false',
    placeholder: 'recorded in each run', autocomplete: 'off' });
  const reasonLabel = el('label', {}, 'Reason ', reason);
  const preview = el('button', { id: 'batch-preview', type: 'button' }, 'Preview');
  const count = el('span', { id: 'batch-count', class: 'muted' });
  const apply = el('button', { id: 'batch-apply', type: 'button', class: 'danger', disabled: true }, 'Apply');
  const result = el('div', { id: 'batch-result' });
  const node = el('section', { id: 'batch', class: ['card', 'batch'] },
    el('h2', {}, 'Batch action'),
    el('div', { class: 'filters' }, el('label', {}, 'Action ', action), reasonLabel, preview, count, apply),
    result);
  // runs: the last preview's runs, null until one is made (or once it is stale or applied);
  // seq drops the answer of a preview made stale while it was on its way.
  const panel = { node, runs: null, seq: 0 };

  /** Apply is enabled only with a fresh preview that found runs, and no batch under way. */
  const sync = () => {
    const n = panel.runs ? panel.runs.length : 0;
    apply.disabled = !n || !!batchJob;
    apply.textContent = panel.runs ? `Apply to ${n}` : 'Apply';
  };
  node.sync = sync;

  panel.invalidate = () => {
    panel.seq++;
    panel.runs = null;
    count.textContent = '';
    preview.disabled = false;
    sync();
  };

  const onAction = () => {
    const b = BATCH_ACTIONS[action.value];
    reasonLabel.hidden = !!b.noReason;
    reason.required = !b.noReason;
    apply.classList.toggle('danger', !!ENGINE_ACTIONS[action.value].danger);
    panel.invalidate();
  };

  const onPreview = async () => {
    panel.invalidate();
    const seq = panel.seq;
    preview.disabled = true;
    count.className = 'muted';
    count.textContent = 'listing…';
    try {
      const { runs, over } = await listBatchRuns(wfFilters());
      if (seq !== panel.seq) return;
      if (over) {
        count.textContent = `over ${BATCH_MAX.toLocaleString('en-US')} runs match: narrow the filters`;
        count.className = 'warn-text';
        return;
      }
      panel.runs = runs;
      count.textContent = runs.length === 1 ? '1 run matches' : `${runs.length} runs match`;
      count.className = '';
    } catch (e) {
      if (seq !== panel.seq) return;
      if (e.status === 401) return showTokenForm(e.message);
      count.textContent = 'preview failed: ' + errText(e);
      count.className = 'error-text';
    } finally {
      if (seq === panel.seq) {
        preview.disabled = false;
        sync();
      }
    }
  };

  const onApply = () => {
    const runs = panel.runs;
    const name = action.value;
    const b = BATCH_ACTIONS[name];
    const why = b.noReason ? '' : reason.value.trim();
    if (!runs || !runs.length || batchJob) return;
    if (!b.noReason && !why) {
      fill(result, el('p', { class: 'error-text' }, 'A reason is required.'));
      reason.focus();
      return;
    }
    const info = ENGINE_ACTIONS[name];
    confirmAction({
      title: `Batch ${name}: ${runsText(runs.length)}`,
      text: `${info.text} Done to each of the ${runsText(runs.length)} the preview listed, ` +
        `${BATCH_IN_FLIGHT} at a time; runs closed since then fail.`,
      reason: 'none',
      danger: info.danger,
      okLabel: `Apply to ${runs.length}`,
      extra: why ? [el('p', {}, el('span', { class: 'muted' }, 'Reason: '), why)] : [],
      run: async () => {
        // The preview is used up: another batch needs another preview.
        panel.runs = null;
        runBatch(name, runs, why);
        sync();
        return `${name}: applying to ${runsText(runs.length)}…`;
      },
    });
  };

  action.addEventListener('change', onAction);
  preview.addEventListener('click', onPreview);
  apply.addEventListener('click', onApply);
  onAction();
  if (batchJob) drawBatch(batchJob, result);
  return panel;
}

/** Calls the action on each run, at most BATCH_IN_FLIGHT at a time; then the summary in the
 * flash and the first failures in #batch-result. A 401 stops it (the token form is shown). */
async function runBatch(name, runs, reason) {
  const b = BATCH_ACTIONS[name];
  const job = { name, total: runs.length, done: 0, failed: 0, failures: [], over: false, stopped: '' };
  // A batch runs as whoever started it: signing in as someone else stops it.
  const startedAs = token();
  batchJob = job;
  drawBatch(job);
  let next = 0;
  const worker = async () => {
    while (next < runs.length && !job.stopped) {
      const run = runs[next++];
      if (!me || token() !== startedAs) {
        job.stopped = 'signed out';
        break;
      }
      try {
        await b.call({ workflowId: run.workflowId, runId: run.runId }, reason);
        job.done++;
      } catch (e) {
        if (e.status === 401) {
          job.stopped = e.message;
          break;
        }
        job.failed++;
        if (job.failures.length < BATCH_FAILURES_SHOWN) job.failures.push({ run, message: errText(e) });
      }
      drawBatch(job);
    }
  };
  await Promise.all(Array.from({ length: Math.min(BATCH_IN_FLIGHT, runs.length) }, worker));
  job.over = true;
  batchJob = null;
  drawBatch(job);
  const batch = $('#batch');
  if (batch && batch.sync) batch.sync();
  const summary = `${name}: ${job.done} done, ${job.failed} failed` +
    (job.stopped ? `, stopped after ${job.done + job.failed} of ${job.total} (${job.stopped})` : '');
  if (job.stopped && me) showTokenForm(job.stopped);
  flash(summary, job.failed || job.stopped ? 'error' : 'ok');
  refreshNow();
}

/** A batch's progress, and once it is over its first failures (workflow id: server message). */
function drawBatch(job, box = $('#batch-result')) {
  if (!box) return;
  const more = job.failed - job.failures.length;
  fill(box,
    el('p', { class: job.failed ? 'warn-text' : '' }, el('strong', {}, job.name + ': '),
      `${job.done} of ${job.total} done, ${job.failed} failed`, job.over ? '' : ' …'),
    job.over && job.failures.length ? el('ul', { class: 'batch-failures' },
      job.failures.map(f => el('li', { title: 'run ' + f.run.runId },
        el('span', { class: 'mono' }, f.run.workflowId), ': ', el('span', { class: 'error-text' }, f.message))),
      more > 0 ? el('li', { class: 'muted' }, `and ${more} more`) : null) : null);
}

/* ---------- pages: one workflow ---------- */

const workflowPage = {
  nav: 'workflows',
  need: 'list',
  mount(ctx) {
    const id = ctx.params.id;
    ctx.links = el('span');
    ctx.actions = el('div', { id: 'wf-actions', class: 'actions' });
    ctx.region = el('div', { class: 'region' }, el('p', { class: 'muted' }, 'Loading…'));
    ctx.history = can('history') ? historyPanel('wf-history') : null;
    add(ctx.root,
      el('div', { class: 'page-head' }, el('h1', {}, 'Workflow ', el('span', { class: 'mono' }, id)), ctx.links),
      ctx.actions, ctx.region, ctx.history && ctx.history.details);
  },
  load: ctx => rpc('DescribeWorkflow', { execution: exec(ctx.params.id) }),
  render(ctx, d) {
    const id = ctx.params.id;
    const info = d.info || {};
    const status = wfStatus(info.status);
    const running = info.status === 'WORKFLOW_STATUS_RUNNING';
    const names = running
      ? ['retry', info.pausedSince ? 'resume' : 'pause', 'signal', 'cancel', 'terminate']
      : status !== 'completed' ? ['reset'] : [];
    fill(ctx.actions, actionButtons(names, id));
    fill(ctx.links, info.workflowType === 'order'
      ? el('a', { href: '#/orders/' + encodeURIComponent(id) }, 'order view') : '');
    const wt = d.pendingWorkflowTask;
    fill(ctx.region,
      el('div', { class: 'grid' },
        section('Run', facts([
          ['Status', [badge(status, { id: 'wf-status-text' }), d.cancelRequested ? el('span', { class: 'tag' }, 'cancel requested') : null]],
          ['Type', info.workflowType || ''],
          ['Queue', info.taskQueue || ''],
          ['Run id', el('span', { class: 'mono' }, (info.execution || {}).runId || '')],
          ['Started', timeEl(info.startTime, true)],
          ['Closed', info.closeTime ? timeEl(info.closeTime, true) : null],
          ['Events', info.historyLength || '0'],
          ['Paused', info.pausedSince ? el('span', { class: 'warn-text' },
            `since ${fmtTime(info.pausedSince)} (${ago(info.pausedSince)}) by ${info.pausedBy || '?'}: ${info.pausedReason || ''}`) : null],
          ['Attention', info.attention ? el('span', { class: 'warn-text' },
            `${info.attention} (since ${fmtTime(info.attentionSince)}, ${ago(info.attentionSince)})`) : null],
          ['Workflow task', wt ? [`attempt ${wt.attempt || 1}`, wt.started ? ', started' : ', waiting',
            wt.lastFailure ? el('div', { class: 'error-text' }, failureText(wt.lastFailure)) : null] : null],
        ])),
        section('Workers', pollersOf(d.pollers || []), breakersOf(d.openBreakers || []))),
      section('Pending activities', pendingActivities(d.pendingActivities || [])),
      (d.pendingTimers || []).length ? section('Timers', table({}, ['timer', 'fires'],
        d.pendingTimers.map(t => [t.timerId || '', timeEl(t.fireTime, true)]))) : null);
  },
  after(ctx, d) {
    const runId = ((d.info || {}).execution || {}).runId || '';
    if (!ctx.history) return;
    ctx.history.details.hidden = false;
    ctx.history.refresh({ workflowId: ctx.params.id, runId });
  },
  failed(ctx, e) {
    if (e.status !== 404) return false;
    ctx.key = null;
    fill(ctx.actions);
    if (ctx.history) ctx.history.details.hidden = true;
    fill(ctx.region, el('p', { class: 'notice' }, `No workflow '${ctx.params.id}': ${e.message}`));
    return true;
  },
};

function pendingActivities(list) {
  return [
    table({ id: 'wf-pending', class: 'stack' }, ['activity', 'attempt', 'state', 'last error', 'next attempt', 'parked behind'],
      list.map(a => el('tr', { 'data-activity': a.activityType || '' },
        el('td', {}, el('span', { class: 'mono' }, a.activityType || ''), el('div', { class: 'muted' }, 'id ' + (a.activityId || ''))),
        el('td', { class: 'num', 'data-label': 'attempt' }, String(a.attempt || 1)),
        el('td', { 'data-label': 'state' }, enumName(a.state, 'PENDING_ACTIVITY_STATE_')),
        el('td', { class: 'error-text', 'data-label': 'last error' }, failureText(a.lastFailure)),
        el('td', { 'data-label': 'next attempt' }, a.nextAttemptTime ? timeEl(a.nextAttemptTime, true) : '—'),
        el('td', { 'data-label': 'parked behind' }, a.parkedBehind ? [el('strong', {}, a.parkedBehind), ' since ', timeEl(a.parkedSince, true)] : '—')))),
    list.length ? null : el('p', { class: 'muted' }, 'No pending activity.'),
  ];
}

function pollersOf(pollers) {
  if (!pollers.length) return el('p', { class: 'error-text' }, 'No worker polled this queue in the last minute (its workers are down, or the queue is misspelled).');
  return table({ class: 'pollers' }, ['worker', 'kind', 'last seen'],
    pollers.map(p => [p.identity || '', p.kind || '', timeEl(p.lastSeen, true)]));
}

function breakersOf(open) {
  if (!open.length) return el('p', { class: 'muted' }, 'No breaker open.');
  return table({ class: 'breakers' }, ['open breaker', 'worker', 'since'],
    open.map(b => [el('strong', {}, b.adapter || ''), b.worker || '', timeEl(b.since, true)]));
}

/* ---------- pages: system ---------- */

const SPARK_POINTS = 60;
const sys = { prev: null, started: [], closed: [], retries: [] };

/** Prometheus text: [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    out.push({ name: m[1], labels, value: parseFloat(m[3]) });
  }
  return out;
}

const sum = (ms, name) => ms.filter(m => m.name === name).reduce((a, m) => a + (isFinite(m.value) ? m.value : 0), 0);

function byLabel(ms, name, label) {
  const out = {};
  for (const m of ms.filter(x => x.name === name)) {
    const k = typeof label === 'function' ? label(m.labels) : (m.labels[label] || '');
    out[k] = (out[k] || 0) + m.value;
  }
  return out;
}

/** Records this poll's counters and the rates since the last poll. */
function sample(ms) {
  const now = { t: Date.now(), started: sum(ms, 'martix_workflows_started_total'),
    closed: sum(ms, 'martix_workflows_closed_total'), retries: sum(ms, 'martix_activity_retries_total') };
  const p = sys.prev;
  if (p && now.t > p.t) {
    const dt = (now.t - p.t) / 1000;
    for (const k of ['started', 'closed', 'retries']) {
      sys[k].push(Math.max(0, now[k] - p[k]) / dt);
      if (sys[k].length > SPARK_POINTS) sys[k].shift();
    }
  }
  sys.prev = now;
}

const last = a => a.length ? a[a.length - 1] : null;
const num = (v, digits = 0) => v === null || v === undefined || !isFinite(v) ? '—' : Number(v).toFixed(digits);
const rate = a => last(a) === null ? '—' : num(last(a), 1) + '/s';

function seconds(s) {
  if (!isFinite(s)) return '—';
  if (s < 1) return (s * 1000).toFixed(0) + ' ms';
  if (s < 120) return s.toFixed(1) + ' s';
  if (s < 7200) return (s / 60).toFixed(1) + ' min';
  if (s < 172800) return (s / 3600).toFixed(1) + ' h';
  return (s / 86400).toFixed(1) + ' d';
}

function sparkline(id, title) {
  const svg = el('svg', { id, class: 'spark', viewBox: '0 0 120 32', preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
  const label = el('span', { class: 'spark-value' });
  return { svg, label, node: el('figure', { class: 'card spark-card' }, el('figcaption', {}, title, ' ', label), svg) };
}

function drawSpark(chart, series) {
  const w = 120, h = 32;
  const max = Math.max(...series, 0.001);
  const pts = series.map((v, i) =>
    `${(w * (i + SPARK_POINTS - series.length) / (SPARK_POINTS - 1)).toFixed(1)},${(h - 2 - (h - 4) * v / max).toFixed(1)}`);
  const nodes = [el('line', { x1: '0', y1: String(h - 1), x2: String(w), y2: String(h - 1), class: 'axis' })];
  if (pts.length > 1) {
    const x0 = pts[0].split(',')[0];
    nodes.push(el('path', { class: 'area', d: `M${x0},${h} L${pts.join(' L')} L${w},${h} Z` }));
    nodes.push(el('polyline', { class: 'line', points: pts.join(' ') }));
  }
  fill(chart.svg, nodes);
  chart.label.textContent = series.length ? `${num(last(series), 1)}/s (max ${num(max === 0.001 ? 0 : max, 1)})` : 'collecting…';
}

function stat(label, value, note) {
  return el('div', { class: 'stat' }, el('div', { class: 'stat-label' }, label), el('div', { class: 'stat-value' }, value),
    note ? el('div', { class: 'muted' }, note) : null);
}

function breakdown(title, map, format = v => num(v)) {
  const keys = Object.keys(map).sort();
  return section(title, keys.length
    ? table({ class: 'breakdown' }, ['', 'value'],
      keys.map(k => el('tr', {}, el('td', {}, k || '—'), el('td', { class: 'num' }, format(map[k])))))
    : el('p', { class: 'muted' }, 'none'));
}

const systemPage = {
  nav: 'system',
  need: 'metrics',
  mount(ctx) {
    ctx.started = sparkline('chart-started', 'Sagas started');
    ctx.closed = sparkline('chart-closed', 'Sagas closed');
    ctx.region = el('div', { class: 'region' }, el('p', { class: 'muted' }, 'Loading…'));
    add(ctx.root, el('h1', {}, 'System'),
      el('div', { id: 'system' }, el('div', { class: 'grid charts' }, ctx.started.node, ctx.closed.node), ctx.region));
  },
  async load() {
    const text = await api('GET', '/metrics');
    sample(parseMetrics(String(text)));
    return { text: String(text), polls: sys.started.length, at: sys.prev.t };
  },
  render(ctx, { text }) {
    const ms = parseMetrics(text);
    drawSpark(ctx.started, sys.started);
    drawSpark(ctx.closed, sys.closed);
    const durSum = sum(ms, 'martix_workflow_duration_seconds_sum');
    const durCount = sum(ms, 'martix_workflow_duration_seconds_count');
    const oldest = byLabel(ms, 'martix_oldest_closed_run_age_seconds', 'namespace');
    fill(ctx.region,
      el('div', { class: 'stats' },
        stat('Started', rate(sys.started), `${num(sum(ms, 'martix_workflows_started_total'))} in all`),
        stat('Closed', rate(sys.closed), `${num(sum(ms, 'martix_workflows_closed_total'))} in all`),
        stat('Activity retries', rate(sys.retries), `${num(sum(ms, 'martix_activity_retries_total'))} in all`),
        stat('Mean saga duration', durCount ? seconds(durSum / durCount) : '—', `${num(durCount)} closed runs`),
        stat('Outbox unsent', num(sum(ms, 'martix_outbox_unsent'))),
        stat('Outbox unprojected', num(sum(ms, 'martix_outbox_unprojected'))),
        stat('Read model lag', seconds(sum(ms, 'martix_read_model_lag_seconds'))),
        stat('Runs purged', num(sum(ms, 'martix_runs_purged_total'))),
        stat('Oldest closed run', seconds(oldest[me.namespace] !== undefined ? oldest[me.namespace] : Math.max(0, ...Object.values(oldest))),
          'age since close, kept by retention')),
      el('div', { class: 'grid' },
        breakdown('Closed by status', byLabel(ms, 'martix_workflows_closed_total', 'status')),
        breakdown('Long polls waiting', byLabel(ms, 'martix_long_polls_waiting', 'kind')),
        breakdown('Task queue backlog', byLabel(ms, 'martix_task_queue_backlog', l => `${l.task_queue || l.queue || ''} (${l.kind || ''})`)),
        breakdown('Breakers open', byLabel(ms, 'martix_breaker_open', 'adapter'), v => v > 0 ? 'open' : 'closed')));
  },
};

/* ---------- pages: queues ---------- */

/** The namespace's task queues (ListTaskQueues): who polls each and what waits in it. */
const queuesPage = {
  nav: 'queues',
  need: 'list',
  mount(ctx) {
    ctx.region = el('div', { class: 'region' }, el('p', { class: 'muted' }, 'Loading…'));
    add(ctx.root, el('h1', {}, 'Task queues'),
      el('p', { class: 'muted' }, 'Queues polled in the last minute or holding tasks due. A queue with a backlog and no poller has no worker: a misspelled queue, or its workers are down.'),
      ctx.region);
  },
  load: () => rpc('ListTaskQueues', {}),
  render(ctx, r) {
    const queues = r.queues || [];
    if (!queues.length) {
      fill(ctx.region, el('p', { id: 'queues-empty', class: 'notice' }, 'No queue is polled and no task waits.'));
      return;
    }
    const rows = queues.map(q => {
      const pollers = q.pollers || [];
      const idle = !pollers.length && (Number(q.workflowBacklog || 0) + Number(q.activityBacklog || 0)) > 0;
      return el('tr', { 'data-queue': q.name, class: idle ? 'bad' : '' },
        el('td', { class: 'mono' }, q.name),
        el('td', { class: 'num' }, q.workflowBacklog || '0'),
        el('td', { class: 'num' }, q.activityBacklog || '0'),
        el('td', { class: 'pollers' }, pollers.length
          ? el('ul', {}, pollers.map(p => el('li', {}, `${p.identity || '?'} (${p.kind || '?'}) `, timeEl(p.lastSeen, true))))
          : el('span', { class: 'error-text' }, 'no poller')));
    });
    fill(ctx.region, el('div', { class: 'scroll' }, el('table', { id: 'queues-table', class: 'stack' },
      el('thead', {}, el('tr', {}, ['queue', 'workflow tasks due', 'activity tasks due', 'pollers (last minute)'].map(h => el('th', {}, h)))),
      el('tbody', {}, rows))));
  },
};

/* ---------- router and poller ---------- */

let cur = null;

function match(hash) {
  const [head, ...rest] = hash.replace(/^#\/?/, '').split('/');
  let id = rest.join('/');
  try {
    id = decodeURIComponent(id);
  } catch (e) { /* keep it as it is */ }
  switch (head) {
    case '': case 'orders': return id ? { page: orderPage, params: { id } } : { page: ordersPage, params: {} };
    case 'stuck': return { page: stuckPage, params: {} };
    case 'workflows': return id ? { page: workflowPage, params: { id } } : { page: workflowsPage, params: {} };
    case 'queues': return { page: queuesPage, params: {} };
    case 'system': return { page: systemPage, params: {} };
    default: return null;
  }
}

function route() {
  if (!me) return;
  stopPolling();
  closeConfirm();
  clearFlash();
  const m = match(location.hash);
  if (!m) {
    location.replace('#/orders');
    return;
  }
  for (const a of document.querySelectorAll('a[data-nav]')) a.classList.toggle('active', a.dataset.nav === m.page.nav);
  const root = $('#main');
  fill(root);
  window.scrollTo(0, 0);
  if (m.page.need && !can(m.page.need)) {
    add(root, el('p', { class: 'notice' }, `Your token may not see this page (it needs '${m.page.need}').`));
    return;
  }
  cur = { page: m.page, params: m.params, root, key: null, timer: null, busy: false, again: false };
  m.page.mount(cur);
  refresh(cur);
}

/** Re-renders the data region, keeping the scroll position (filters, <details> panels and the
 * dialog live outside the region and are never rebuilt). */
function renderKeeping(c, data) {
  const x = window.scrollX, y = window.scrollY;
  c.page.render(c, data);
  if (window.scrollX !== x || window.scrollY !== y) window.scrollTo(x, y);
}

/** One refresh of the current page: its request, a render if the answer changed, the next poll. */
async function refresh(c) {
  if (c !== cur) return;
  if (c.busy) {
    c.again = true;
    return;
  }
  clearTimeout(c.timer);
  c.busy = true;
  c.again = false;
  try {
    const data = await c.page.load(c);
    if (c === cur && !c.again) {
      const key = typeof data === 'string' ? data : JSON.stringify(data);
      if (key !== c.key) {
        c.key = key;
        renderKeeping(c, data);
      }
      if (c.page.after) c.page.after(c, data);
      $('#updated').textContent = 'updated ' + clock();
      if (flashFromPoll) clearFlash();
    }
  } catch (e) {
    if (c !== cur) return;
    if (e.status === 401) {
      showTokenForm(e.message);
      return;
    }
    if (!(c.page.failed && c.page.failed(c, e))) flash(errText(e), 'error', true);
  } finally {
    c.busy = false;
  }
  if (c !== cur) return;
  if (c.again) refresh(c);
  else schedule(c);
}

function schedule(c) {
  clearTimeout(c.timer);
  if (!document.hidden) c.timer = setTimeout(() => refresh(c), POLL_MS);
}

function refreshNow() {
  if (cur) refresh(cur);
}

function stopPolling() {
  if (cur) clearTimeout(cur.timer);
  cur = null;
}

function onVisibility() {
  if (!cur) return;
  if (document.hidden) clearTimeout(cur.timer);
  else refreshNow();
}

function start() {
  $('#sign-out').addEventListener('click', signOut);
  $('#confirm-form').addEventListener('submit', onConfirmSubmit);
  $('#confirm-cancel').addEventListener('click', closeConfirm);
  $('#confirm').addEventListener('close', () => { pending = null; });
  $('#flash').addEventListener('click', clearFlash);
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', onVisibility);
  signIn();
}

start();
