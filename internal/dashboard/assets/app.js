// dialtrap dashboard. Plain JS, no framework, no build step: it reads the REST API of the
// node that served it and draws with the DOM and SVG. Data from the API is only ever put in
// the page as text (textContent, attributes), never as HTML: probes carry attacker text.
'use strict';

(function () {
  const TOKEN_KEY = 'dialtrap.api-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const FEED_ROWS = 50;
  const REFRESH_MS = 30000;

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let feedAbort = null;
  let refreshTimer = null;

  class AuthError extends Error {}
  class NotAvailable extends Error {}

  // --- API access: every call carries the token; a 401 asks for it. ---
  async function api(path, signal) {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    const r = await fetch(path, { headers, signal, cache: 'no-store' });
    if (r.status === 401) {
      askToken(token ? 'The token was refused.' : '');
      throw new AuthError('401');
    }
    return r;
  }

  async function getJSON(path) {
    const r = await api(path);
    if (r.status === 404) throw new NotAvailable(path);
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  }

  function askToken(msg) {
    document.body.dataset.auth = 'needed';
    $('token-form').hidden = false;
    $('token-error').textContent = msg || '';
    setStatus('token needed', 'down');
    if (document.activeElement !== $('token')) $('token').focus();
  }

  function setStatus(text, cls) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status ' + (cls || '');
  }

  // --- helpers ---
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  const fmt = new Intl.NumberFormat();
  const num = (s) => fmt.format(Number(s) || 0);
  function windowSince() { return $('window').value; }
  function windowStep() { return $('window').selectedOptions[0].dataset.step; }

  function notAvailable(target, err) {
    target.replaceChildren(el('p', err instanceof NotAvailable ? 'Not available on this node.' : 'Could not load: ' + err.message, 'na'));
  }

  // --- tables ---
  function table(target, cols, rows) {
    const t = el('table');
    const hr = el('tr');
    for (const c of cols) hr.appendChild(el('th', c.title));
    t.appendChild(el('thead')).appendChild(hr);
    const tb = t.appendChild(el('tbody'));
    for (const row of rows) {
      const tr = el('tr');
      for (const c of cols) tr.appendChild(el('td', c.value(row), c.cls));
      tb.appendChild(tr);
    }
    if (!rows.length) {
      const tr = el('tr');
      const td = el('td', 'Nothing in this window.', 'na');
      td.colSpan = cols.length;
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    target.replaceChildren(t);
  }

  const count = { title: 'Probes', value: (r) => num(r.seen_count), cls: 'num' };

  async function loadTop(name, path, listKey, totalKey, cols) {
    const target = $(name);
    try {
      const d = await getJSON(path + '?limit=10&since=' + encodeURIComponent(windowSince()));
      $(name + '-total').textContent = d[totalKey] !== undefined ? '(' + num(d[totalKey]) + ' distinct)' : '';
      table(target, cols, d[listKey] || []);
      return d;
    } catch (e) {
      if (!(e instanceof AuthError)) notAvailable(target, e);
      return null;
    }
  }

  // --- the map ---
  let mapSVG = null;
  async function loadMap() {
    const r = await fetch('/dashboard/world.svg');
    const doc = new DOMParser().parseFromString(await r.text(), 'image/svg+xml');
    mapSVG = document.importNode(doc.documentElement, true);
    $('map').replaceChildren(mapSVG);
  }

  function colourMap(countries) {
    if (!mapSVG) return;
    for (const p of mapSVG.querySelectorAll('path[data-count]')) {
      p.removeAttribute('data-count');
      p.removeAttribute('class');
      const t = p.querySelector('title');
      if (t && t.dataset.name) t.textContent = t.dataset.name;
    }
    let max = 0;
    let unknown = 0;
    for (const c of countries) {
      if (c.country === 'ZZ') unknown += Number(c.seen_count) || 0;
      else max = Math.max(max, Number(c.seen_count) || 0);
    }
    for (const c of countries) {
      const n = Number(c.seen_count) || 0;
      const p = c.country !== 'ZZ' && /^[A-Z]{2}$/.test(c.country) ? mapSVG.getElementById(c.country) : null;
      if (!p || n <= 0) continue;
      // Log scale: one country with thousands must not wash out the ones with a few.
      const b = Math.max(1, Math.ceil(5 * Math.log1p(n) / Math.log1p(max)));
      p.setAttribute('class', 'b' + b + (b === 5 ? ' hot' : ''));
      p.setAttribute('data-count', String(n));
      const t = p.querySelector('title');
      if (t) {
        if (!t.dataset.name) t.dataset.name = t.textContent;
        t.textContent = t.dataset.name + ': ' + num(n) + ' probes';
      }
    }
    $('map-unknown').textContent = unknown ? ' · ' + num(unknown) + ' from private or unknown addresses' : '';
  }

  async function loadCountries() {
    const d = await loadTop('countries', '/stats/countries', 'countries', 'countries_total',
      [{ title: 'Country', value: (r) => r.country === 'ZZ' ? 'ZZ (private/unknown)' : r.country }, count]);
    if (d) {
      colourMap(d.countries || []);
      const n = Number(d.countries_total) || 0;
      $('map-total').textContent = '(' + num(n) + (n === 1 ? ' origin)' : ' origins)'); // ZZ (private, unknown) is one
    } else if (document.body.dataset.auth === 'needed') {
      $('map-total').textContent = '(waiting for the token)';
    } else {
      $('map-total').textContent = '(country data not available)';
    }
  }

  // --- the timeline ---
  async function loadTimeline() {
    const target = $('timeline');
    const step = windowStep();
    $('timeline-step').textContent = { '1m': 'minute', '5m': '5 minutes', '15m': '15 minutes', '1h': 'hour', '1d': 'day' }[step] || step;
    let d;
    try {
      d = await getJSON('/stats/timeline?step=' + step + '&since=' + encodeURIComponent(windowSince()));
    } catch (e) {
      if (!(e instanceof AuthError)) notAvailable(target, e);
      return;
    }
    const pts = d.timeline || [];
    const W = 1000, H = 180, L = 40, B = 20, T = 8;
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'Probes over time' });
    let max = 0, total = 0;
    for (const p of pts) { const n = Number(p.seen_count) || 0; max = Math.max(max, n); total += n; }
    const top = Math.max(1, max);
    const bw = (W - L) / Math.max(1, pts.length);
    pts.forEach((p, i) => {
      const n = Number(p.seen_count) || 0;
      const h = (H - B - T) * n / top;
      const r = svg('rect', { class: 'bar', x: (L + i * bw + bw * 0.1).toFixed(1), y: (H - B - h).toFixed(1), width: Math.max(0.5, bw * 0.8).toFixed(1), height: h.toFixed(1) });
      r.appendChild(svg('title', {})).textContent = p.time + ' UTC: ' + num(n);
      s.appendChild(r);
    });
    s.appendChild(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }));
    s.appendChild(svg('text', { x: 2, y: T + 10 })).textContent = num(max);
    s.appendChild(svg('text', { x: 2, y: H - B })).textContent = '0';
    if (pts.length) {
      const label = (p) => p.time.slice(5, 16);
      s.appendChild(svg('text', { x: L, y: H - 4 })).textContent = label(pts[0]);
      s.appendChild(svg('text', { x: W, y: H - 4, 'text-anchor': 'end' })).textContent = label(pts[pts.length - 1]) + ' UTC';
    }
    target.replaceChildren(s);
    $('timeline-total').textContent = '(' + num(total) + ' in the window)';
  }

  // --- everything at once ---
  async function refresh() {
    clearTimeout(refreshTimer);
    await Promise.all([
      loadCountries(),
      loadTimeline(),
      loadTop('numbers', '/stats/numbers', 'called_numbers', 'called_numbers_total',
        [{ title: 'Number', value: (r) => r.called_number, cls: 'mono' }, count]),
      loadTop('prefixes', '/stats/prefixes', 'prefixes', 'prefixes_total',
        [{ title: 'Prefix', value: (r) => r.prefix, cls: 'mono' }, count]),
      loadTop('tools', '/stats/tools', 'tools', 'tools_total',
        [{ title: 'Tool', value: (r) => r.tool }, count,
          { title: 'UA spoofed', value: (r) => num(r.ua_spoofed_count), cls: 'num' }]),
    ]);
    refreshTimer = setTimeout(refresh, REFRESH_MS);
  }

  // --- the live feed: fetch + ReadableStream (EventSource cannot send the token) ---
  function addProbe(ev) {
    const tb = $('feed').tBodies[0];
    const tr = el('tr', null, 'new');
    const time = (ev.event_timestamp || '').slice(11, 19);
    const cells = [
      [time, 'mono'], [ev.source_ip, 'mono'], [ev.source_country || ''], [ev.sip_method || '(none)'],
      [ev.called_number, 'mono'], [ev.sip_user_agent, 'ua'], [ev.tool || ''],
    ];
    for (const [v, cls] of cells) tr.appendChild(el('td', v, cls));
    tr.title = ev.event_timestamp + ' UTC, ' + ev.transport_type;
    tr.dataset.uuid = ev.event_uuid || '';
    tb.insertBefore(tr, tb.firstChild);
    while (tb.rows.length > FEED_ROWS) tb.deleteRow(tb.rows.length - 1);
  }

  async function followFeed() {
    if (feedAbort) feedAbort.abort();
    const ctl = new AbortController();
    feedAbort = ctl;
    let delay = 1000;
    while (!ctl.signal.aborted) {
      try {
        const r = await api('/events/live', ctl.signal);
        if (r.status === 404) { $('feed-state').textContent = '(not available on this node)'; return; }
        if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
        $('feed-state').textContent = '(connected)';
        document.body.dataset.feed = 'connected';
        setStatus('live', 'live');
        delay = 1000;
        await readEvents(r.body, ctl.signal);
      } catch (e) {
        if (e instanceof AuthError || ctl.signal.aborted) return;
      }
      document.body.dataset.feed = 'reconnecting';
      $('feed-state').textContent = '(reconnecting…)';
      setStatus('reconnecting', 'down');
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  // readEvents parses text/event-stream (WHATWG HTML, server-sent events): lines end with
  // CR, LF or CRLF; a blank line dispatches; ":" starts a comment.
  async function readEvents(body, signal) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let type = '', data = [];
    signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      if (pending.length > 10 * FEED_ROWS) pending = pending.slice(-FEED_ROWS); // a hidden tab draws no frames
      let m;
      while ((m = /\r\n|\r|\n/.exec(buf)) !== null) {
        if (m[0] === '\r' && m.index === buf.length - 1) break; // a CR that may be half a CRLF
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) dispatch(type || 'message', data.join('\n'));
          type = ''; data = [];
          continue;
        }
        if (line[0] === ':') continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
      }
    }
  }

  // Probes are drawn once a frame, at most FEED_ROWS of them: a flood of thousands a second
  // costs the page a few rows, not thousands of DOM inserts.
  let pending = [];
  function flushProbes() {
    const batch = pending.slice(-FEED_ROWS);
    pending = [];
    for (const ev of batch) addProbe(ev);
  }

  function dispatch(type, data) {
    if (type === 'probe') {
      try {
        if (!pending.length) requestAnimationFrame(flushProbes);
        pending.push(JSON.parse(data));
      } catch (e) { /* a malformed message is skipped */ }
    } else if (type === 'dropped') {
      try { $('feed-state').textContent = '(connected; ' + num(JSON.parse(data).dropped) + ' skipped: this browser fell behind)'; } catch (e) { /* ignore */ }
    }
  }

  // --- lookup ---
  function dl(pairs) {
    const d = el('dl');
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      d.appendChild(el('dt', k));
      d.appendChild(el('dd', v));
    }
    return d;
  }

  async function lookup(q) {
    const out = $('lookup-result');
    q = q.trim();
    // An operator copies numbers as people write them: "+44 909 879-0123" is +449098790123.
    if (!q.includes(':') && !/^\d{1,3}(\.\d{1,3}){3}$/.test(q)) q = q.replace(/[\s\-().\/]/g, '');
    let path, kind;
    if (/^\+?[0-9]+$/.test(q)) { path = '/numbers/' + encodeURIComponent(q); kind = 'number'; }
    else if (/^[0-9a-fA-F.:]+$/.test(q) && (q.includes('.') || q.includes(':'))) { path = '/ip-addresses/' + encodeURIComponent(q); kind = 'ip'; }
    else { out.dataset.found = ''; out.replaceChildren(el('p', 'Type an IP address or a phone number (digits, optionally a leading +).', 'bad')); return; }
    out.replaceChildren(el('p', 'Looking up…', 'muted'));
    let r, d;
    try {
      r = await api(path);
      d = await r.json();
    } catch (e) {
      if (!(e instanceof AuthError)) out.replaceChildren(el('p', 'Lookup failed: ' + e.message, 'bad'));
      return;
    }
    if (r.status === 404 && d.message) {
      out.dataset.found = 'false';
      out.replaceChildren(el('p', kind === 'ip' ? `Not found: ${q} never probed this node or its peers.` : `Not found: nobody dialled ${q} here.`, 'verdict good'));
      return;
    }
    if (!r.ok) {
      out.dataset.found = '';
      out.replaceChildren(el('p', d.error ? d.error + (d.detail ? ': ' + d.detail : '') : 'HTTP ' + r.status, 'bad'));
      return;
    }
    out.dataset.found = 'true';
    const key = kind === 'ip' ? d.bad_actor_found : d.phone_number_found;
    const parts = [el('p', kind === 'ip' ? `Known bad actor: ${key}` : `Known target of fraud: ${key}`, 'verdict bad')];
    parts.push(dl([
      ['Probes', num(d.seen_count)],
      ['First seen', d.seen_first && d.seen_first + ' UTC'],
      ['Last seen', d.seen_last && d.seen_last + ' UTC'],
      ['Seen here', d.seen_locally === undefined ? '' : (d.seen_locally ? 'yes' : 'no (peers only)')],
      ['Seen by peers', d.seen_by_peers],
      ['Match', d.match],
    ]));
    const ni = d.number_info;
    if (ni) {
      parts.push(el('p', 'What the number is', 'muted'));
      parts.push(dl([
        ['Dialled', ni.dialled], ['Dial-out prefix', ni.prefix || 'none'], ['Target', ni.target],
        ['Valid E.164', ni.e164 === undefined ? '' : (ni.e164 ? 'yes' : 'no')], ['Country', ni.country], ['Type', ni.type],
        ['Target probed', ni.target_seen_count !== undefined ? num(ni.target_seen_count) + (Number(ni.target_seen_count) === 1 ? ' time' : ' times') + (ni.fresh ? ' (new in the last 24 h)' : '') : ''],
      ]));
    }
    if (Array.isArray(d.matched_numbers) && d.matched_numbers.length) {
      parts.push(el('p', 'Also dialled as: ' + d.matched_numbers.map((m) => m.called_number).join(', '), 'muted'));
    }
    out.replaceChildren(...parts);
  }

  // --- start ---
  function start() {
    $('token-form').hidden = true;
    delete document.body.dataset.auth;
    refresh();
    followFeed();
  }

  document.addEventListener('DOMContentLoaded', async () => {
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      token = $('token').value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      start();
    });
    $('lookup-form').addEventListener('submit', (e) => {
      e.preventDefault();
      lookup($('lookup-input').value);
    });
    $('window').addEventListener('change', refresh);
    $('refresh').addEventListener('click', refresh);
    fetch('/health-check').then((r) => r.json()).then((d) => { $('version').textContent = 'v' + d.version; }).catch(() => {});
    try { await loadMap(); } catch (e) { $('map').replaceChildren(el('p', 'The map could not be loaded.', 'na')); }
    start();
  });
})();
