// Dialgate console: a small vanilla app that signs in with an API key (or the operator key) and reads the JSON API; every datum reaches the DOM through textContent, never as markup.
'use strict';

(function () {
  const KEY = 'dialgate.console.key';
  const ROLE = 'dialgate.console.role';
  const WHO = 'dialgate.console.who';
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');

  // ---- DOM helpers: elements are built, text is set as text. ----

  /** An element with attributes and children; strings and numbers become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') el.className = value;
      else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? '' : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  /** A link inside the console: the route is built from encoded parts only. */
  function link(text, ...parts) {
    return h('a', { href: '#/' + parts.map(encodeURIComponent).join('/') }, text);
  }

  function fmtNum(value, digits) {
    if (value === null || value === undefined) return '—';
    if (typeof value !== 'number') return String(value);
    return digits === undefined ? value.toLocaleString('en-US') : value.toFixed(digits);
  }
  function fmtPct(rate) {
    return rate === null || rate === undefined ? '—' : (rate * 100).toFixed(1) + '%';
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '—';
    return ms < 1000 ? Math.round(ms) + ' ms' : (ms / 1000).toFixed(1) + ' s';
  }
  function fmtTime(text) {
    if (!text) return '—';
    const at = new Date(text);
    return isNaN(at) ? String(text) : at.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }
  function badge(text, extra) {
    return h('span', { class: 'badge ' + String(text).replace(/[^A-Za-z_ ]/g, '') + (extra ? ' ' + extra : '') }, text);
  }

  /**
   * A table: `columns` are [header, value(row), options]; a value is text, a number or
   * a node. `attrs(row)` gives each row's attributes.
   */
  function table(columns, rows, opts) {
    const options = opts || {};
    if (!rows || rows.length === 0) return h('div', { class: 'empty', 'data-empty': options.name || '' }, options.empty || 'Nothing yet.');
    const head = h('tr', {}, columns.map(([title, , o]) => h('th', { class: o && o.num ? 'num' : null }, title)));
    const body = rows.map((row) =>
      h('tr', options.attrs ? options.attrs(row) : {}, columns.map(([, value, o]) => {
        const v = value(row);
        return h('td', { class: o && o.num ? 'num' : null }, v === null || v === undefined ? '—' : v);
      })));
    return h('div', { class: 'table-wrap' }, h('table', { 'data-table': options.name || null }, h('thead', {}, head), h('tbody', {}, body)));
  }

  /** A definition list of [label, value] pairs. */
  function facts(pairs) {
    return h('dl', { class: 'facts' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v === null || v === undefined || v === '' ? '—' : v)]));
  }

  function json(value) {
    return h('pre', {}, JSON.stringify(value, null, 2));
  }

  // ---- Messages ----

  function showError(message) {
    const box = document.getElementById('error');
    box.textContent = message;
    box.hidden = false;
  }
  function showNotice(message) {
    const box = document.getElementById('notice');
    box.textContent = message;
    box.hidden = false;
  }
  function clearMessages() {
    for (const id of ['error', 'notice']) {
      const box = document.getElementById(id);
      box.hidden = true;
      box.textContent = '';
    }
  }

  // ---- The API ----

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Calls the API with the signed-in key; a failure carries the API's JSON error. */
  async function api(method, path, body, key) {
    const headers = { Authorization: 'Bearer ' + (key || sessionStorage.getItem(KEY) || '') };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch (err) {
      throw new ApiFailure(0, 'network', 'the server did not answer: ' + err.message);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : null;
      const message = error
        ? error.message + ' (' + error.code + (error.field ? ', field ' + error.field : '') + ')'
        : 'HTTP ' + response.status;
      throw new ApiFailure(response.status, error ? error.code : 'http_' + response.status, message);
    }
    return data;
  }
  const get = (path) => api('GET', path);

  function query(params) {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') search.set(k, v);
    const text = search.toString();
    return text ? '?' + text : '';
  }

  // ---- Sign-in ----

  function role() { return sessionStorage.getItem(ROLE); }

  function renderSignIn() {
    nav.hidden = true;
    document.getElementById('signout').hidden = true;
    document.getElementById('who').textContent = '';
    const input = h('input', { id: 'key', type: 'password', autocomplete: 'off', placeholder: 'dg_… or the operator key', required: true });
    const form = h('form', { class: 'card signin', id: 'signin' },
      h('h1', {}, 'Sign in to the Dialgate console'),
      h('p', { class: 'muted' }, 'Paste a tenant API key, or the operator key for the view across tenants. The key stays in this tab (session storage) and goes only to this server.'),
      h('label', { for: 'key' }, 'API key'), input,
      h('button', { class: 'primary', type: 'submit', id: 'signin-submit' }, 'Sign in'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearMessages();
      const key = input.value.trim();
      try {
        const found = await identify(key);
        sessionStorage.setItem(KEY, key);
        sessionStorage.setItem(ROLE, found.role);
        sessionStorage.setItem(WHO, found.who);
        location.hash = '#/overview';
        route();
      } catch (err) {
        showError(err.message);
      }
    });
    setPage('signin', form);
    main.dataset.ready = 'signin';
  }

  /** Whether `key` is the operator key (it may list tenants) or a tenant's key. */
  async function identify(key) {
    try {
      const tenants = await api('GET', '/v1/tenants', undefined, key);
      return { role: 'operator', who: 'Operator · ' + tenants.tenants.length + ' tenants' };
    } catch (err) {
      if (err.status !== 401) throw err;
    }
    await api('GET', '/v1/settings/phone-verification', undefined, key);
    return { role: 'tenant', who: 'Tenant key …' + key.slice(-4) };
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
    sessionStorage.removeItem(WHO);
    location.hash = '';
    route();
  }

  // ---- Navigation ----

  const TENANT_PAGES = [
    ['overview', 'Overview'], ['log', 'Verifications'], ['review', 'Review queue'],
    ['rules', 'Plugins & rules'], ['providers', 'Providers & routing'], ['webhooks', 'Webhooks'], ['settings', 'Settings'],
  ];
  const OPERATOR_PAGES = [['overview', 'Overview'], ['tenants', 'Tenants'], ['fraud', 'Fraud blocks']];

  function renderNav(current) {
    clear(nav);
    const pages = role() === 'operator' ? OPERATOR_PAGES : TENANT_PAGES;
    for (const [id, title] of pages) {
      nav.appendChild(h('a', { href: '#/' + id, class: id === current ? 'active' : null, 'data-nav': id }, title));
    }
    nav.hidden = false;
    document.getElementById('signout').hidden = false;
    document.getElementById('who').textContent = sessionStorage.getItem(WHO) || '';
  }

  function setPage(name, ...content) {
    clear(main);
    main.dataset.page = name;
    delete main.dataset.ready;
    append(main, content);
  }

  /** The current route: `#/page/arg…?k=v`. */
  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, search] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { page: parts[0] || 'overview', args: parts.slice(1), params: new URLSearchParams(search || '') };
  }

  let generation = 0;

  async function route() {
    clearMessages();
    if (!sessionStorage.getItem(KEY)) {
      renderSignIn();
      return;
    }
    const { page, args, params } = parseHash();
    const views = role() === 'operator' ? OPERATOR_VIEWS : TENANT_VIEWS;
    const name = Object.prototype.hasOwnProperty.call(views, page) ? page : 'overview';
    renderNav(name === 'verification' ? 'log' : name === 'webhook' ? 'webhooks' : name);
    const mine = ++generation;
    setPage(name, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const content = await views[name](args, params);
      if (mine !== generation) return;
      setPage(name, content);
    } catch (err) {
      if (mine !== generation) return;
      if (err.status === 401) {
        signOut();
        showError(err.message);
        return;
      }
      setPage(name, h('h1', {}, 'Could not load this page'));
      showError(err.message);
    }
    main.dataset.ready = name;
  }

  // ---- Overview ----

  const RANGES = {
    '24h': { label: 'Last 24 hours', hours: 24, interval: 'hour' },
    '7d': { label: 'Last 7 days', hours: 24 * 7, interval: 'day' },
    '30d': { label: 'Last 30 days', hours: 24 * 30, interval: 'day' },
    '90d': { label: 'Last 90 days', hours: 24 * 90, interval: 'day' },
  };

  function rangeQuery(params) {
    const range = RANGES[params.get('range')] || RANGES['7d'];
    const to = new Date(Date.now() + 60 * 60 * 1000);
    const from = new Date(to.getTime() - range.hours * 3600 * 1000);
    return { from: from.toISOString(), to: to.toISOString(), interval: range.interval };
  }

  function rangePicker(params, extra) {
    const select = h('select', { id: 'range' }, Object.entries(RANGES).map(([id, r]) =>
      h('option', { value: id, selected: (params.get('range') || '7d') === id }, r.label)));
    select.addEventListener('change', () => {
      const next = new URLSearchParams(params);
      next.set('range', select.value);
      location.hash = '#/overview?' + next.toString();
    });
    return h('div', { class: 'row' }, h('label', {}, 'Range', select), extra || null);
  }

  function funnel(total) {
    const steps = [['started', 'Started'], ['sent', 'Sent'], ['delivered', 'Delivered'], ['verified', 'Verified'], ['failed', 'Failed']];
    const top = Math.max(1, total.started || 0, total.sent || 0);
    const cards = h('div', { class: 'cards', id: 'funnel-cards' },
      steps.map(([id, title]) => h('div', { class: 'metric', 'data-metric': id }, h('div', { class: 'label' }, title), h('div', { class: 'value' }, fmtNum(total[id] || 0)))),
      h('div', { class: 'metric', 'data-metric': 'conversion_rate' }, h('div', { class: 'label' }, 'Conversion'), h('div', { class: 'value' }, fmtPct(total.conversion_rate))),
      h('div', { class: 'metric', 'data-metric': 'fraud_blocks' }, h('div', { class: 'label' }, 'Fraud blocks'), h('div', { class: 'value' }, fmtNum(total.fraud_blocks || 0))),
      h('div', { class: 'metric', 'data-metric': 'cost' }, h('div', { class: 'label' }, 'Cost'), h('div', { class: 'value' }, fmtNum(total.cost || 0, 2))));
    const bars = h('div', { class: 'funnel' }, steps.slice(0, 4).map(([id, title]) => {
      const fill = h('div', { class: 'fill' });
      fill.style.width = Math.round(((total[id] || 0) / top) * 100) + '%';
      return h('div', { class: 'step' }, h('span', {}, title), h('div', { class: 'bar' }, fill), h('span', { class: 'num' }, fmtNum(total[id] || 0)));
    }));
    const more = facts([
      ['Delivery latency p50 / p95', fmtMs(total.delivery_latency_p50_ms) + ' / ' + fmtMs(total.delivery_latency_p95_ms)],
      ['Time to verify p50', fmtMs(total.time_to_verify_p50_ms)],
      ['Resends per verification', fmtNum(total.resends_per_verification, 2)],
      ['Estimated savings from fraud blocks', fmtNum(total.estimated_savings || 0, 2)],
    ]);
    return [cards, h('div', { class: 'grid2' }, h('div', { class: 'card' }, h('h2', {}, 'Funnel'), bars), h('div', { class: 'card' }, h('h2', {}, 'Latency and resends'), more))];
  }

  /** Conversion over time: codes started and verified (left axis), conversion rate (right). */
  function conversionChart(rows) {
    const holder = h('div', { class: 'chart', id: 'conversion-chart' });
    const xs = rows.map((r) => Math.floor(new Date(r.start).getTime() / 1000));
    const started = rows.map((r) => r.started);
    const verified = rows.map((r) => r.verified);
    const rate = rows.map((r) => (r.conversion_rate === null ? null : r.conversion_rate * 100));
    if (typeof window.uPlot !== 'function') {
      holder.appendChild(h('p', { class: 'empty' }, 'The chart library did not load.'));
      return holder;
    }
    const draw = () => {
      const width = Math.max(320, holder.clientWidth || 900);
      const chart = new window.uPlot({
        width, height: 240,
        series: [
          {},
          { label: 'Started', stroke: '#2457c5', width: 2, points: { show: rows.length < 60 } },
          { label: 'Verified', stroke: '#1b7f4b', width: 2, points: { show: rows.length < 60 } },
          { label: 'Conversion %', stroke: '#a15c00', width: 1.5, dash: [6, 4], scale: '%', value: (u, v) => (v === null ? '—' : v.toFixed(1) + '%') },
        ],
        axes: [{}, { label: 'Codes' }, { side: 1, scale: '%', label: 'Conversion %', grid: { show: false } }],
        scales: { '%': { range: [0, 100] } },
      }, [xs, started, verified, rate], holder);
      holder.dataset.points = String(xs.length);
      return chart;
    };
    // Drawn once the holder is in the page and has a width: the page may still be
    // awaiting its other reads when the first frame comes, so look again each frame
    // (for about ten seconds at most).
    const whenConnected = (frames) => {
      if (holder.isConnected) {
        draw();
      } else if (frames > 0) {
        requestAnimationFrame(() => whenConnected(frames - 1));
      }
    };
    requestAnimationFrame(() => whenConnected(600));
    return holder;
  }

  function groupTable(name, title, totals) {
    return h('div', {},
      h('h2', {}, title),
      table([
        [title.replace('By ', '').replace(/^./, (c) => c.toUpperCase()), (r) => (r.group === null ? 'unknown' : r.group)],
        ['Started', (r) => fmtNum(r.started), { num: true }],
        ['Delivered', (r) => fmtNum(r.delivered), { num: true }],
        ['Verified', (r) => fmtNum(r.verified), { num: true }],
        ['Conversion', (r) => fmtPct(r.conversion_rate), { num: true }],
        ['Latency p50', (r) => fmtMs(r.delivery_latency_p50_ms), { num: true }],
        ['Latency p95', (r) => fmtMs(r.delivery_latency_p95_ms), { num: true }],
        ['Cost', (r) => fmtNum(r.cost, 2), { num: true }],
      ], totals, { name, empty: 'No traffic in this range.' }));
  }

  function blocksTable(blocks, withTenant) {
    const columns = [
      ['Prefix', (b) => b.prefix], ['Country', (b) => b.country], ['Status', (b) => badge(b.status)],
      ['Reason', (b) => b.description || b.reason], ['Score', (b) => fmtNum(b.score), { num: true }],
      ['Blocked sends', (b) => fmtNum(b.blocked_sends), { num: true }], ['Est. savings', (b) => fmtNum(b.estimated_savings, 2), { num: true }],
      ['Until', (b) => fmtTime(b.until)],
    ];
    if (withTenant) columns.unshift(['Tenant', (b) => b.tenant_id]);
    return table(columns, blocks, { name: 'fraud-blocks', empty: 'No fraud blocks.' });
  }

  function spendCard(spend) {
    const rows = spend.budgets.map((b) => {
      const fill = h('div', { class: 'fill' + (b.spent >= b.cap ? ' over' : '') });
      fill.style.width = Math.min(100, b.cap > 0 ? (b.spent / b.cap) * 100 : 0).toFixed(1) + '%';
      return Object.assign({}, b, { meter: h('div', { class: 'meter' }, fill) });
    });
    return h('div', { class: 'card', id: 'spend' },
      h('h2', {}, 'Spend against budget'),
      table([
        ['Budget', (b) => b.budget], ['Spent', (b) => fmtNum(b.spent, 4), { num: true }], ['Cap', (b) => fmtNum(b.cap, 4), { num: true }],
        ['', (b) => b.meter], ['Remaining', (b) => fmtNum(b.remaining, 4), { num: true }], ['Resets', (b) => fmtTime(b.resets_at)],
      ], rows, { name: 'budgets', empty: 'No spend caps are set (Settings: spend_caps).' }),
      facts([
        ['Sends the SMS-pumping detector refused', fmtNum(spend.pumping_blocked_sends)],
        ['Their estimated cost, saved', fmtNum(Math.abs(spend.pumping_estimated_savings), 4)],
      ]));
  }

  async function overview(params, base, extraControls, tenantScope) {
    const range = rangeQuery(params);
    const [all, byCountry, byProvider] = await Promise.all([
      get(base + query(Object.assign({}, range, tenantScope))),
      get(base + query(Object.assign({}, range, tenantScope, { group_by: 'country' }))),
      get(base + query(Object.assign({}, range, tenantScope, { group_by: 'provider' }))),
    ]);
    const total = all.totals[0] || {};
    return [
      rangePicker(params, extraControls),
      h('p', { class: 'muted' }, 'From ', fmtTime(all.from), ' to ', fmtTime(all.to), ', per ', all.interval, '.'),
      funnel(total),
      h('div', { class: 'card' }, h('h2', {}, 'Conversion over time'), conversionChart(all.rows)),
      h('div', { class: 'grid2' }, groupTable('by-country', 'By country', byCountry.totals), groupTable('by-provider', 'By provider', byProvider.totals)),
    ];
  }

  async function tenantOverview(args, params) {
    const [body, blocks, spend] = await Promise.all([
      overview(params, '/v1/analytics/conversion', null, {}),
      get('/v1/fraud/blocks?status=all'),
      get('/v1/spend'),
    ]);
    return [h('h1', {}, 'Overview'), body,
      h('div', { class: 'card' }, h('h2', {}, 'Fraud blocks'), blocksTable(blocks.blocks, false)),
      spendCard(spend)];
  }

  async function operatorOverview(args, params) {
    const tenants = (await get('/v1/tenants')).tenants;
    const chosen = params.get('tenant') || '';
    const picker = h('select', { id: 'tenant-picker' }, h('option', { value: '' }, 'All tenants'),
      tenants.map((t) => h('option', { value: t.id, selected: t.id === chosen }, t.name + ' (' + t.id + ')')));
    picker.addEventListener('change', () => {
      const next = new URLSearchParams(params);
      if (picker.value) next.set('tenant', picker.value); else next.delete('tenant');
      location.hash = '#/overview?' + next.toString();
    });
    const [body, blocks] = await Promise.all([
      overview(params, '/v1/admin/analytics/conversion', h('label', {}, 'Tenant', picker), chosen ? { tenant_id: chosen } : {}),
      get('/v1/admin/fraud/blocks'),
    ]);
    const shown = chosen ? blocks.blocks.filter((b) => b.tenant_id === chosen) : blocks.blocks;
    return [h('h1', {}, chosen ? 'Overview of one tenant' : 'Overview across tenants'), body,
      h('div', { class: 'card' }, h('h2', {}, 'Active fraud blocks'), blocksTable(shown, true))];
  }

  // ---- Operator pages ----

  async function tenantsPage() {
    const tenants = (await get('/v1/tenants')).tenants;
    return [h('h1', {}, 'Tenants'),
      table([
        ['Name', (t) => t.name], ['Id', (t) => t.id], ['Created', (t) => fmtTime(t.created_at)],
        ['', (t) => h('a', { href: '#/overview?tenant=' + encodeURIComponent(t.id) }, 'Analytics')],
      ], tenants, { name: 'tenants', empty: 'No tenants yet.' })];
  }

  async function fraudPage() {
    const blocks = await get('/v1/admin/fraud/blocks');
    return [h('h1', {}, 'Fraud blocks across tenants'),
      facts([['Blocked sends', fmtNum(blocks.blocked_sends)], ['Estimated savings', fmtNum(Math.abs(blocks.estimated_savings), 4)]]),
      h('h2', {}, 'Active blocks'), blocksTable(blocks.blocks, true)];
  }

  // ---- The verification log and reports ----

  const STATUSES = ['Approved', 'Declined', 'In Review', 'Not Finished'];
  const CHANNELS = ['sms', 'voice', 'whatsapp', 'viber', 'telegram'];

  function logTable(entries) {
    return table([
      ['Created', (v) => fmtTime(v.created_at)],
      ['Verification', (v) => link(v.verification_id.slice(0, 13) + '…', 'verification', v.verification_id)],
      ['Phone', (v) => v.phone], ['Applicant', (v) => v.applicant_id], ['Status', (v) => badge(v.status)],
      ['Channel', (v) => v.channel], ['Provider', (v) => v.provider], ['Country', (v) => v.country],
      ['Line', (v) => v.line_type], ['Carrier', (v) => v.carrier], ['Sends', (v) => fmtNum(v.sends), { num: true }],
      ['Risk', (v) => fmtNum(v.risk_score), { num: true }],
    ], entries, { name: 'log', empty: 'No verifications match.', attrs: (v) => ({ 'data-verification': v.verification_id }) });
  }

  async function logPage(args, params) {
    const filters = {};
    for (const k of ['status', 'country', 'channel', 'provider', 'applicant_id', 'from', 'to']) filters[k] = params.get(k) || '';
    const field = (name, label, input) => { input.name = name; input.id = 'filter-' + name; return h('label', {}, label, input); };
    const form = h('form', { class: 'row', id: 'log-filters' },
      field('status', 'Status', h('select', {}, h('option', { value: '' }, 'Any'), STATUSES.map((s) => h('option', { value: s, selected: filters.status === s }, s)))),
      field('country', 'Country', h('input', { value: filters.country, placeholder: 'GB', size: 4 })),
      field('channel', 'Channel', h('select', {}, h('option', { value: '' }, 'Any'), CHANNELS.map((s) => h('option', { value: s, selected: filters.channel === s }, s)))),
      field('provider', 'Provider', h('input', { value: filters.provider, size: 12 })),
      field('applicant_id', 'Applicant', h('input', { value: filters.applicant_id, size: 14 })),
      field('from', 'From', h('input', { value: filters.from, placeholder: '2026-11-30', size: 12 })),
      field('to', 'To', h('input', { value: filters.to, size: 12 })),
      h('button', { class: 'primary', type: 'submit', id: 'log-search' }, 'Search'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(form).entries()) if (String(v).trim()) next.set(k, String(v).trim());
      location.hash = '#/log?' + next.toString();
    });
    const page = await get('/v1/verifications' + query(Object.assign({ limit: 50 }, filters)));
    const holder = h('div', { id: 'log-results' }, logTable(page.verifications));
    const more = h('button', { type: 'button', id: 'log-more', hidden: !page.next_cursor }, 'Load more');
    let cursor = page.next_cursor;
    let shown = page.verifications.slice();
    more.addEventListener('click', async () => {
      more.disabled = true;
      try {
        const next = await get('/v1/verifications' + query(Object.assign({ limit: 50, cursor }, filters)));
        shown = shown.concat(next.verifications);
        cursor = next.next_cursor;
        clear(holder);
        holder.appendChild(logTable(shown));
        more.hidden = !cursor;
      } catch (err) {
        showError(err.message);
      }
      more.disabled = false;
    });
    return [h('h1', {}, 'Verification log'), form, holder, more];
  }

  function decideForm(id, onDone) {
    const note = h('input', { type: 'text', placeholder: 'Note for the audit trail', size: 34, 'data-note': id, required: true });
    const decide = async (decision, button) => {
      clearMessages();
      button.disabled = true;
      try {
        const report = await api('POST', '/v1/verifications/' + encodeURIComponent(id) + '/review', {
          decision, note: note.value.trim() || (decision === 'approve' ? 'Approved in the console' : 'Declined in the console'), reviewer: 'console',
        });
        await onDone();
        showNotice('Verification ' + id + ' is now ' + report.phone.status + '.');
      } catch (err) {
        showError(err.message);
        button.disabled = false;
      }
    };
    const approve = h('button', { type: 'button', class: 'good', 'data-approve': id }, 'Approve');
    const decline = h('button', { type: 'button', class: 'bad', 'data-decline': id }, 'Decline');
    approve.addEventListener('click', () => decide('approve', approve));
    decline.addEventListener('click', () => decide('decline', decline));
    return h('div', { class: 'actions' }, note, approve, decline);
  }

  async function reportPage(args) {
    const id = args[0] || '';
    const path = '/v1/verifications/' + encodeURIComponent(id);
    const [report, events] = await Promise.all([get(path), get(path + '/events')]);
    const phone = report.phone || {};
    const risk = report.risk_assessment || {};
    const status = phone.status;
    return [
      h('h1', {}, 'Verification ', h('span', { id: 'report-id' }, report.verification_id)),
      h('div', { class: 'grid2' },
        h('div', { class: 'card' }, h('h2', {}, 'Summary'), facts([
          ['Status', h('span', { id: 'report-status' }, badge(status))], ['Phone', phone.full_number], ['Applicant', h('span', { id: 'report-applicant' }, report.applicant_id || '—')],
          ['Country', phone.country_name ? phone.country_name + ' (' + phone.country_code + ')' : phone.country_code],
          ['Line type', phone.carrier && phone.carrier.type], ['Carrier', phone.carrier && phone.carrier.name],
          ['Method', phone.verification_method], ['Attempts', fmtNum(phone.verification_attempts)],
          ['Verified at', fmtTime(phone.verified_at)], ['Created', fmtTime(report.created_at)], ['Updated', fmtTime(report.updated_at)],
          ['Risk', fmtNum(risk.risk_score) + ' (' + (risk.risk_level || '—') + ')'],
          ['Template', report.message && report.message.template_id], ['Locale', report.message && report.message.locale],
          ['Review', report.review ? report.review.decision + ' by ' + (report.review.reviewer || '—') + ': ' + report.review.note : null],
          ['Feedback', report.feedback ? report.feedback.outcome : null],
        ])),
        h('div', { class: 'card' },
          h('h2', {}, 'Decision'),
          status === 'In Review' ? decideForm(report.verification_id, () => route()) : h('p', { class: 'muted' }, 'Decided: ', status),
          h('h2', {}, 'Warnings'),
          table([['Risk', (w) => w.risk], ['Action', (w) => w.action], ['What', (w) => w.short_description]], phone.warnings || [], { name: 'warnings', empty: 'No warnings.' }),
          h('h2', {}, 'Risk factors'),
          table([['Factor', (f) => f.factor], ['Contribution', (f) => fmtNum(f.contribution), { num: true }], ['Details', (f) => f.details]], risk.factors || [], { name: 'factors', empty: 'No risk factors.' }))),
      h('h2', {}, 'Code messages'),
      table([
        ['Provider', (m) => m.provider], ['Channel', (m) => m.channel], ['Step', (m) => fmtNum(m.step)], ['Attempt', (m) => fmtNum(m.attempt)],
        ['Status', (m) => badge(m.status)], ['Error', (m) => m.error], ['Cost', (m) => fmtNum(m.cost, 4), { num: true }], ['Latency', (m) => fmtMs(m.latency_ms), { num: true }],
      ], report.messages || [], { name: 'messages', empty: 'No provider messages (the dev outbox sent the code).' }),
      h('h2', {}, 'Rules that fired'),
      table([
        ['Trigger', (r) => r.trigger], ['Rule', (r) => r.name], ['Source', (r) => r.source], ['Version', (r) => r.version],
        ['Actions', (r) => (r.actions || []).map((a) => a.type).join(', ')], ['Failure', (r) => (r.error ? r.error.kind || JSON.stringify(r.error) : null)],
        ['Fuel', (r) => fmtNum(r.fuel), { num: true }], ['Micros', (r) => fmtNum(r.micros), { num: true }],
      ], report.rules_fired || [], { name: 'rules-fired', empty: 'No rules ran.' }),
      h('h2', {}, 'Cases'),
      table([['Case', (c) => c.case_id], ['Type', (c) => c.case_type], ['Priority', (c) => c.priority], ['Title', (c) => c.title]], report.cases || [], { name: 'report-cases', empty: 'No cases.' }),
      h('h2', {}, 'Audit trail'),
      table([
        ['At', (e) => fmtTime(e.at)], ['Trigger', (e) => e.trigger], ['Detail', (e) => e.detail], ['Status', (e) => e.status],
        ['Rules', (e) => (e.rules || []).map((r) => r.name + (r.error ? ' (failed)' : '')).join(', ')],
      ], events.events || [], { name: 'events', empty: 'No events.' }),
      h('h2', {}, 'The report as JSON'),
      json(report),
    ];
  }

  // ---- Review queue ----

  async function reviewPage() {
    const [waiting, open, progress] = await Promise.all([
      get('/v1/verifications' + query({ status: 'In Review', limit: 100 })),
      get('/v1/cases?status=open&limit=100'),
      get('/v1/cases?status=in_progress&limit=100'),
    ]);
    const queue = waiting.verifications.map((v) => h('div', { class: 'card queue-item', 'data-review': v.verification_id },
      h('div', {},
        h('strong', {}, link(v.phone, 'verification', v.verification_id)), ' ',
        h('span', { class: 'muted' }, 'applicant '), h('span', { class: 'applicant' }, v.applicant_id || '—'),
        h('div', { class: 'muted' }, v.country || '—', ' · ', v.line_type, ' · risk ', fmtNum(v.risk_score), ' · ', fmtTime(v.created_at))),
      decideForm(v.verification_id, () => route())));
    const cases = open.cases.concat(progress.cases);
    const caseAction = (c, status, label) => {
      const button = h('button', { type: 'button', 'data-case-action': status, 'data-case': c.id }, label);
      button.addEventListener('click', async () => {
        clearMessages();
        button.disabled = true;
        try {
          await api('PATCH', '/v1/cases/' + encodeURIComponent(c.id), { status, author: 'console' });
          await route();
          showNotice('Case ' + c.id + ' is now ' + status + '.');
        } catch (err) {
          showError(err.message);
          button.disabled = false;
        }
      });
      return button;
    };
    return [
      h('h1', {}, 'Review queue'),
      h('h2', {}, 'Verifications In Review (', String(waiting.verifications.length), ')'),
      queue.length ? h('div', { id: 'review-queue' }, queue) : h('div', { class: 'empty', id: 'review-queue' }, 'Nothing waits for review.'),
      h('h2', {}, 'Open cases (', String(cases.length), ')'),
      table([
        ['Opened', (c) => fmtTime(c.created_at)], ['Title', (c) => c.title], ['Type', (c) => c.case_type], ['Priority', (c) => badge(c.priority)],
        ['Status', (c) => badge(c.status)], ['Applicant', (c) => c.applicant_id], ['Phone', (c) => c.phone], ['By', (c) => c.opened_by],
        ['Verification', (c) => (c.verification_id ? link('report', 'verification', c.verification_id) : null)],
        ['', (c) => [c.status === 'open' ? caseAction(c, 'in_progress', 'Start') : null, ' ', caseAction(c, 'resolved', 'Resolve')]],
      ], cases, { name: 'cases', empty: 'No open cases.' }),
    ];
  }

  // ---- Plugins and rules ----

  /** Runs and failures per plugin or declarative rule over the last `days` days, as the server counts them. */
  async function firings(days) {
    // A day past now too, so a server whose clock runs ahead of the browser's counts it all.
    const stats = await get('/v1/analytics/rules' + query({
      from: new Date(Date.now() - days * 86400000).toISOString(), to: new Date(Date.now() + 86400000).toISOString(),
    }));
    const counts = new Map();
    for (const rule of stats.rules || []) {
      counts.set(rule.source + '/' + rule.id, { firings: rule.runs, failures: rule.failures, last: rule.last_failure || null });
    }
    return { counts, days };
  }

  async function rulesPage() {
    const [plugins, rules, seen] = await Promise.all([get('/v1/plugins'), get('/v1/workflows/rules'), firings(30)]);
    const stat = (id, key) => fmtNum((seen.counts.get(id) || {})[key] || 0);
    const last = (id) => (seen.counts.get(id) || {}).last;
    return [
      h('h1', {}, 'Plugins and workflow rules'),
      h('p', { class: 'muted', id: 'firings-scope' }, 'Firings (a plugin\'s calls, a rule\'s matches) and failures over the last ', String(seen.days), ' days.'),
      h('h2', {}, 'Plugins'),
      table([
        ['Name', (p) => p.name], ['Kind', (p) => p.kind], ['Active version', (p) => p.active_version || 'inactive'],
        ['Triggers', (p) => (p.triggers || []).join(', ')], ['Order', (p) => fmtNum(p.order), { num: true }],
        ['Firings', (p) => stat('plugin/' + p.id, 'firings'), { num: true }], ['Failures', (p) => stat('plugin/' + p.id, 'failures'), { num: true }],
        ['Last failure', (p) => last('plugin/' + p.id)], ['Updated', (p) => fmtTime(p.updated_at)],
      ], plugins.plugins, { name: 'plugins', empty: 'No plugins installed.', attrs: (p) => ({ 'data-plugin': p.id }) }),
      h('h2', {}, 'Workflow rules'),
      table([
        ['Rule', (r) => r.rule_id], ['Trigger', (r) => r.trigger], ['Enabled', (r) => (r.enabled ? 'yes' : 'no')],
        ['Order', (r) => fmtNum(r.order), { num: true }], ['Revision', (r) => fmtNum(r.revision), { num: true }],
        ['Conditions', (r) => h('code', {}, JSON.stringify(r.conditions))], ['Actions', (r) => (r.actions || []).map((a) => a.type).join(', ')],
        ['Firings', (r) => stat('workflow/' + r.rule_id, 'firings'), { num: true }], ['Failures', (r) => stat('workflow/' + r.rule_id, 'failures'), { num: true }],
      ], rules.rules, { name: 'workflow-rules', empty: 'No workflow rules.', attrs: (r) => ({ 'data-rule': r.rule_id }) }),
    ];
  }

  // ---- Providers and routing ----

  async function providersPage() {
    const [providers, policy, stats] = await Promise.all([get('/v1/providers'), get('/v1/routing'), get('/v1/routing/stats')]);
    return [
      h('h1', {}, 'Providers and routing'),
      h('h2', {}, 'Providers'),
      table([
        ['Name', (p) => p.name], ['Plugin', (p) => p.plugin], ['Channels', (p) => (p.channels || []).join(', ')],
        ['Countries', (p) => ((p.countries || []).length ? p.countries.join(', ') : 'all')], ['Priority', (p) => fmtNum(p.priority), { num: true }],
        ['Weight', (p) => fmtNum(p.weight), { num: true }], ['Cost/message', (p) => fmtNum(p.cost_per_message, 4), { num: true }],
        ['Enabled', (p) => (p.enabled ? 'yes' : 'no')],
      ], providers.providers, { name: 'providers', empty: 'No providers: codes go through the host\'s own sender.' }),
      h('div', { class: 'card' }, h('h2', {}, 'Routing policy'), facts([
        ['Strategy', policy.strategy], ['Breaker opens after', fmtNum(policy.failure_threshold) + ' consecutive failures'],
        ['Breaker probes after', fmtNum(policy.open_seconds) + ' s'], ['Statistics window', fmtNum(policy.window_seconds) + ' s'],
        ['Attempt timeout', fmtNum(policy.attempt_timeout_ms) + ' ms'],
      ])),
      h('h2', {}, 'Routing statistics'),
      table([
        ['Provider', (c) => c.provider], ['Country', (c) => c.country], ['Attempts', (c) => fmtNum(c.attempts), { num: true }],
        ['Accepted', (c) => fmtNum(c.accepted), { num: true }], ['Errors', (c) => fmtNum(c.errors), { num: true }],
        ['Timeouts', (c) => fmtNum(c.timeouts), { num: true }], ['Error rate', (c) => fmtPct(c.error_rate), { num: true }],
        ['Mean latency', (c) => fmtMs(c.mean_latency_ms), { num: true }], ['Delivery rate', (c) => fmtPct(c.delivery_rate), { num: true }],
        ['Score', (c) => fmtNum(c.score, 3), { num: true }], ['Breaker', (c) => badge(c.breaker, 'breaker')],
        ['Trips', (c) => fmtNum(c.breaker_trips), { num: true }],
      ], stats.stats, { name: 'routing-stats', empty: 'No attempts through providers in the window.' }),
    ];
  }

  // ---- Webhooks ----

  async function webhooksPage() {
    const hooks = (await get('/v1/webhooks')).webhooks;
    return [h('h1', {}, 'Webhooks'),
      table([
        ['URL', (w) => link(w.url, 'webhook', w.id)], ['Events', (w) => (w.event_types || []).join(', ')],
        ['Enabled', (w) => (w.enabled ? 'yes' : 'no')], ['Description', (w) => w.description], ['Created', (w) => fmtTime(w.created_at)],
      ], hooks, { name: 'webhooks', empty: 'No webhook subscriptions.' })];
  }

  async function webhookPage(args) {
    const id = args[0] || '';
    const [hook, deliveries] = await Promise.all([
      get('/v1/webhooks/' + encodeURIComponent(id)),
      get('/v1/webhooks/' + encodeURIComponent(id) + '/deliveries?limit=100'),
    ]);
    return [h('h1', {}, 'Webhook ', hook.id),
      h('div', { class: 'card' }, facts([['URL', hook.url], ['Events', (hook.event_types || []).join(', ')], ['Enabled', hook.enabled ? 'yes' : 'no'], ['Description', hook.description]])),
      h('h2', {}, 'Delivery log'),
      table([
        ['Created', (d) => fmtTime(d.created_at)], ['Event', (d) => d.event_type], ['Status', (d) => badge(d.status)],
        ['Attempts', (d) => fmtNum((d.attempts || []).length), { num: true }],
        ['Last attempt', (d) => { const a = (d.attempts || []).slice(-1)[0]; return a ? (a.status_code ? 'HTTP ' + a.status_code : a.error) : null; }],
        ['Last error', (d) => d.last_error], ['Next attempt', (d) => fmtTime(d.next_attempt_at)],
      ], deliveries.deliveries, { name: 'deliveries', empty: 'No deliveries yet.' })];
  }

  // ---- Settings ----

  async function settingsPage() {
    const [settings, keys, templates] = await Promise.all([get('/v1/settings/phone-verification'), get('/v1/keys'), get('/v1/templates')]);
    const editor = h('textarea', { id: 'settings-json', rows: 24, spellcheck: 'false' });
    editor.value = JSON.stringify(settings, null, 2);
    const save = h('button', { class: 'primary', type: 'button', id: 'settings-save' }, 'Save settings');
    save.addEventListener('click', async () => {
      clearMessages();
      let patch;
      try {
        patch = JSON.parse(editor.value);
      } catch (err) {
        showError('The settings are not valid JSON: ' + err.message);
        return;
      }
      save.disabled = true;
      try {
        const answer = await api('PUT', '/v1/settings/phone-verification', patch);
        const notices = (answer.notices || []).map((n) => (typeof n === 'string' ? n : n.message || JSON.stringify(n)));
        showNotice('Settings saved.' + (notices.length ? ' ' + notices.join(' ') : ''));
      } catch (err) {
        showError(err.message);
      }
      save.disabled = false;
    });
    return [h('h1', {}, 'Settings'),
      h('div', { class: 'grid2' },
        h('div', { class: 'card' }, h('h2', {}, 'At a glance'), facts([
          ['Code length', fmtNum(settings.code_length)], ['Code expiry', fmtNum(settings.otp_expiry_minutes) + ' min'],
          ['Attempts per code', fmtNum(settings.max_otp_attempts)], ['Resends per 24 h', fmtNum(settings.max_resends_per_24h)],
          ['Require a code', settings.require_otp ? 'yes' : 'no'], ['Block VoIP', settings.block_voip ? 'yes' : 'no'],
          ['SMS-pumping defence', settings.sms_pumping ? settings.sms_pumping.mode : null],
          ['Daily spend cap', settings.spend_caps ? fmtNum(settings.spend_caps.daily) : null],
          ['Monthly spend cap', settings.spend_caps ? fmtNum(settings.spend_caps.monthly) : null],
        ])),
        h('div', { class: 'card' }, h('h2', {}, 'API keys'),
          table([['Name', (k) => k.name], ['Id', (k) => k.id], ['Prefix', (k) => k.prefix], ['Created', (k) => fmtTime(k.created_at)]], keys.keys, { name: 'keys' }),
          h('h2', {}, 'Message templates'),
          table([['Name', (t) => t.name], ['Id', (t) => t.id], ['Locales', (t) => (t.variants || []).map((v) => v.locale + '/' + v.channel).join(', ')]],
            templates.templates, { name: 'templates', empty: 'No templates: the built-in texts are used.' }))),
      h('div', { class: 'card' }, h('h2', {}, 'Edit (PUT merges the fields given)'), editor, h('div', { class: 'row' }, save))];
  }

  const TENANT_VIEWS = {
    overview: tenantOverview, log: logPage, verification: reportPage, review: reviewPage,
    rules: rulesPage, providers: providersPage, webhooks: webhooksPage, webhook: webhookPage, settings: settingsPage,
  };
  const OPERATOR_VIEWS = { overview: operatorOverview, tenants: tenantsPage, fraud: fraudPage };

  document.getElementById('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  route();
})();
