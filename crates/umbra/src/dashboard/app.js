// The Umbra dashboard: polls the admin API every two seconds and redraws.
//
// Everything the API returns is data, never markup: profile names are learned
// from access logs and may hold anything, so text goes in through text nodes and
// attributes through setAttribute; nothing here parses a string as HTML.
// Links (traces) are used only when they parse as http(s) URLs.
'use strict';

(() => {
  const POLL_MS = 2000;
  // Less than the poll period, so a hung proxy shows as disconnected before the next poll.
  const TIMEOUT_MS = 1500;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ROLES = [
    ['production', 'live'],
    ['shadow', 'shadow'],
    ['canary', 'canary'],
  ];
  const RESOLVED_SHOWN = 8;

  let polls = 0;
  let lastOk = null;
  let downSince = null;

  // ---- DOM helpers: the only way anything reaches the page ----

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      // Event handlers never come from here; a typo must not become one.
      if (/^on/i.test(k)) throw new Error('event attribute ' + k);
      el.setAttribute(k, String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function fill(id, ...children) {
    const section = document.getElementById(id);
    const body = section && section.querySelector('.body');
    if (!body) return;
    const next = h('div', { class: 'body' }, ...children);
    body.replaceWith(next);
  }

  function note(text) {
    return h('p', { class: 'note' }, text);
  }

  // Only http(s) URLs become links: a `javascript:` trace URL stays text.
  function safeUrl(u) {
    if (typeof u !== 'string' || u === '') return null;
    try {
      const url = new URL(u, window.location.href);
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  // ---- Formatting ----

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function fmtTime(ms) {
    if (!isNum(ms)) return '–';
    const d = new Date(ms);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  function fmtDuration(secs) {
    if (!isNum(secs) || secs < 0) return '–';
    const t = Math.floor(secs);
    if (t < 60) return t + 's';
    if (t < 3600) return Math.floor(t / 60) + 'm ' + pad2(t % 60) + 's';
    if (t < 86400) return Math.floor(t / 3600) + 'h ' + pad2(Math.floor((t % 3600) / 60)) + 'm';
    return Math.floor(t / 86400) + 'd ' + pad2(Math.floor((t % 86400) / 3600)) + 'h';
  }

  function fmtCount(n) {
    if (!isNum(n)) return '–';
    if (Math.abs(n) < 10000) return String(Math.round(n));
    if (Math.abs(n) < 1e6) return (n / 1e3).toFixed(1) + 'k';
    if (Math.abs(n) < 1e9) return (n / 1e6).toFixed(2) + 'M';
    return (n / 1e9).toFixed(2) + 'G';
  }

  function fmtMs(v) {
    if (!isNum(v)) return '–';
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    if (v >= 100) return v.toFixed(0) + ' ms';
    if (v >= 10) return v.toFixed(1) + ' ms';
    return v.toFixed(2) + ' ms';
  }

  function fmtPct(r) {
    if (!isNum(r)) return '–';
    const p = r * 100;
    if (p === 0) return '0%';
    if (Math.abs(p) < 0.01) return '<0.01%';
    return p.toFixed(Math.abs(p) < 1 ? 2 : 1) + '%';
  }

  function fmtBytes(b) {
    if (!isNum(b)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) {
      b /= 1024;
      i += 1;
    }
    return (i === 0 ? String(b) : b.toFixed(1)) + ' ' + units[i];
  }

  function fmtNumber(v) {
    if (!isNum(v)) return String(v);
    if (Number.isInteger(v)) return fmtCount(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
  }

  // A value of `metric` as the analysis keeps it (latency in µs, rates as fractions).
  function fmtMetric(metric, v) {
    if (!isNum(v)) return '–';
    switch (metric) {
      case 'p50':
      case 'p90':
      case 'p99':
        return fmtMs(v / 1000);
      case 'error_rate':
      case 'client_error_rate':
        return fmtPct(v);
      case 'throughput':
        return v.toFixed(1) + ' req/s';
      case 'cpu':
        return v.toFixed(2) + ' cores';
      case 'memory':
        return fmtBytes(v);
      default:
        return fmtNumber(v);
    }
  }

  const METRIC_LABELS = {
    p50: 'p50 latency',
    p90: 'p90 latency',
    p99: 'p99 latency',
    error_rate: 'error rate',
    client_error_rate: '4xx rate',
    throughput: 'throughput',
    cpu: 'CPU',
    memory: 'memory',
  };

  function metricLabel(m) {
    return METRIC_LABELS[m] || String(m);
  }

  function fmtChange(verdict) {
    const c = verdict && verdict.change;
    if (!isNum(c)) return '–';
    const sign = c > 0 ? '+' : '';
    const t = verdict.threshold;
    // `rise_by` thresholds are differences (points of a rate), the others ratios.
    if (t && typeof t === 'object' && 'rise_by' in t) return sign + (c * 100).toFixed(2) + ' pt';
    return sign + (c * 100).toFixed(1) + '%';
  }

  function fmtP(p) {
    if (!isNum(p)) return '–';
    return p < 0.001 ? p.toExponential(1) : p.toFixed(3);
  }

  function humanKey(k) {
    return String(k).replace(/_/g, ' ');
  }

  // ---- Fetching ----

  async function get(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const r = await fetch(path, { signal: ctl.signal, cache: 'no-store' });
      let body = null;
      try {
        body = await r.json();
      } catch (_) {
        body = null;
      }
      return { status: r.status, body };
    } catch (e) {
      return { status: 0, body: null, error: e && e.name === 'AbortError' ? 'timed out' : 'not answering' };
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- Derived data ----

  function seriesOf(stats) {
    return stats && Array.isArray(stats.series) ? stats.series : [];
  }

  // Profile id -> human name, from the proxy's series (names come with the profile file).
  function profileNames(stats) {
    const names = new Map();
    for (const s of seriesOf(stats)) {
      if (typeof s.profile === 'string' && typeof s.profile_name === 'string' && s.profile_name !== '') {
        names.set(s.profile, s.profile_name);
      }
    }
    return names;
  }

  function profileLabel(names, id) {
    const name = names.get(id);
    return name
      ? [h('span', { class: 'name', title: name }, name), ' ', h('span', { class: 'id' }, id)]
      : [h('span', { class: 'name id', title: id }, id)];
  }

  function alertList(alertsRes) {
    return alertsRes && alertsRes.status === 200 && alertsRes.body && Array.isArray(alertsRes.body.alerts)
      ? alertsRes.body.alerts
      : [];
  }

  // ---- Header ----

  function fact(label, value, cls, title) {
    return h('div', { class: cls, title }, h('dt', null, label), h('dd', null, value));
  }

  function renderFacts(stats, analysisRes, alerts) {
    let liveReq = 0;
    let liveErr = 0;
    for (const s of seriesOf(stats)) {
      if (s.role === 'production') {
        liveReq += isNum(s.requests) ? s.requests : 0;
        liveErr += isNum(s.errors) ? s.errors : 0;
      }
    }
    const shadows = Array.isArray(stats.shadows) ? stats.shadows : [];
    const sum = (k) => shadows.reduce((a, x) => a + (isNum(x[k]) ? x[k] : 0), 0);
    const dropped = sum('queue_full');
    const lost = isNum(stats.measurements_lost) ? stats.measurements_lost : 0;
    const firing = alerts.filter((a) => a.state === 'firing').length;
    const conns = stats.connections || {};
    const facts = [
      fact('uptime', fmtDuration(stats.uptime_secs)),
      fact('live requests', fmtCount(liveReq)),
      fact('live errors', liveReq > 0 ? fmtPct(liveErr / liveReq) : '–', liveErr > 0 ? 'warn' : null),
      fact('copies sent', fmtCount(sum('sent'))),
      fact('copies dropped', fmtCount(dropped), dropped > 0 ? 'warn' : null, 'shadow queue full: the copy was dropped, the live request was not touched'),
      fact('copies failed', fmtCount(sum('failed') + sum('timeout')), null, 'shadow answered with an error or timed out'),
      fact('measurements lost', fmtCount(lost), lost > 0 ? 'warn' : null),
      fact('open connections', fmtCount(conns.open)),
    ];
    if (analysisRes.status === 200) {
      facts.push(fact('firing', String(firing), firing > 0 ? 'bad' : null));
    }
    document.getElementById('facts').replaceChildren(...facts);
    document.title = firing > 0 ? 'Umbra · ' + firing + ' firing' : 'Umbra';
  }

  function setStatus(state, text) {
    const el = document.getElementById('status');
    el.className = 'status ' + state;
    el.textContent = text;
    document.body.dataset.state = state;
    document.getElementById('main').classList.toggle('stale', state === 'disconnected');
  }

  // ---- Alerts ----

  function traceLinks(alert, template, ids) {
    return ids.slice(0, 3).map((id) => {
      const tid = String(id);
      let url = null;
      const links = alert.links;
      if (Array.isArray(links)) {
        const l = links.find((x) => x && x.trace_id === tid);
        url = l ? safeUrl(l.url) : null;
      } else if (links && typeof links === 'object') {
        url = safeUrl(links[tid]);
      }
      const t = typeof alert.trace_url_template === 'string' ? alert.trace_url_template : template;
      if (!url && typeof t === 'string' && t.includes('{trace_id}')) {
        url = safeUrl(t.split('{trace_id}').join(encodeURIComponent(tid)));
      }
      const short = tid.length > 12 ? tid.slice(0, 12) + '…' : tid;
      return url
        ? h('a', { class: 'mono', href: url, title: tid, target: '_blank', rel: 'noopener noreferrer' }, short)
        : h('span', { class: 'mono', title: tid }, short);
    });
  }

  function renderAlerts(alertsRes, analysisRes, names) {
    if (alertsRes.status === 404) {
      const why = alertsRes.body && typeof alertsRes.body.error === 'string' ? alertsRes.body.error : 'the analysis is off';
      fill('alerts', note('No alerts: ' + why + '.'));
      return;
    }
    if (alertsRes.status !== 200) {
      fill('alerts', note('Alerts unavailable (' + (alertsRes.error || 'HTTP ' + alertsRes.status) + ').'));
      return;
    }
    const all = alertList(alertsRes);
    const template = alertsRes.body && typeof alertsRes.body.trace_url_template === 'string'
      ? alertsRes.body.trace_url_template
      : null;
    const firing = all.filter((a) => a.state === 'firing');
    const resolved = all.filter((a) => a.state !== 'firing');
    if (all.length === 0) {
      const a = analysisRes.body || {};
      const window = isNum(a.window_ms) ? ' Windows of ' + fmtDuration(a.window_ms / 1000) + ', ' : ' ';
      const base = isNum(a.baselines) ? a.baselines + ' baselines learned.' : '';
      fill('alerts', note('No alerts.' + window + base));
      return;
    }
    const shown = firing.concat(resolved.slice(0, RESOLVED_SHOWN));
    const rows = shown.map((a) => {
      const v = a.verdict || {};
      const ids = Array.isArray(v.trace_ids) ? v.trace_ids : [];
      const against = v.basis === 'production' ? 'vs production' : v.basis === 'history' ? 'vs its baseline' : '';
      const agreeing = isNum(v.agreeing) && isNum(v.of) ? v.agreeing + '/' + v.of + ' windows' : '';
      const since = a.state === 'firing'
        ? fmtTime(a.started_ms) + ' (' + fmtDuration((Date.now() - a.started_ms) / 1000) + ')'
        : fmtTime(a.started_ms) + '–' + fmtTime(a.resolved_ms);
      return h('tr', { class: a.state === 'firing' ? 'firing' : 'resolved', 'data-fingerprint': a.fingerprint, 'data-state': a.state, 'data-profile': a.profile },
        h('td', null, h('span', { class: 'badge ' + (a.state === 'firing' ? 'firing' : 'resolved') }, a.state)),
        h('td', { class: 'name' }, profileLabel(names, a.profile)),
        h('td', { class: 'what' }, String(a.role) + ' ' + metricLabel(a.metric), h('div', { class: 'muted' }, [against, agreeing].filter(Boolean).join(', '))),
        h('td', { class: 'num' }, fmtMetric(a.metric, v.observed), h('div', { class: 'muted' }, 'was ' + fmtMetric(a.metric, v.baseline))),
        h('td', { class: 'num' }, fmtChange(v)),
        h('td', { class: 'num' }, fmtP(v.p_value)),
        h('td', { class: 'since' }, since),
        h('td', { class: 'traces' }, ids.length ? traceLinks(a, template, ids) : h('span', { class: 'muted' }, '–')),
      );
    });
    const more = resolved.length - Math.min(resolved.length, RESOLVED_SHOWN);
    fill('alerts',
      h('table', { class: 'alerts' },
        h('thead', null, h('tr', null, ['', 'profile', 'regression', 'observed', 'change', 'p', 'since', 'traces'].map((t, i) => h('th', { class: i >= 3 && i <= 5 ? 'num' : null }, t)))),
        h('tbody', null, rows)),
      more > 0 ? note(more + ' older resolved alerts not shown (umbra alerts lists them all).') : null);
  }

  // ---- Charts ----

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Axis labels are round numbers: "50 ms", not "50.0 ms".
  function tick(text) {
    return /^0(\.0+)?( ms|%)$/.test(text) ? '0' : text.replace(/\.0+(?=( ms| s|%))/, '');
  }

  // An SVG line chart over [x0, x1]: `series` are {cls, label, points: [[x, y|null]]}.
  // A null y is a gap (a window with no requests), not a zero.
  function lineChart(opts) {
    const { width, height, x0, x1, series, fmtY, minMax } = opts;
    const L = 46, R = 6, T = 6, B = 16;
    const w = width - L - R, hgt = height - T - B;
    let maxY = 0;
    for (const se of series) for (const [, y] of se.points) if (isNum(y) && y > maxY) maxY = y;
    const top = niceMax(Math.max(maxY, minMax || 0));
    const span = x1 > x0 ? x1 - x0 : 1;
    const px = (x) => L + ((x - x0) / span) * w;
    const py = (y) => T + hgt - (Math.min(y, top) / top) * hgt;
    const svg = s('svg', { class: 'chart', viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': opts.label });
    const grid = s('g', { class: 'grid' });
    for (const f of [0, 0.5, 1]) {
      const y = py(top * f);
      grid.appendChild(s('line', { x1: L, x2: L + w, y1: y.toFixed(1), y2: y.toFixed(1) }));
      svg.appendChild(s('text', { class: 'ytick', x: L - 4, y: (y + 3).toFixed(1) }, tick(fmtY(top * f))));
    }
    svg.insertBefore(grid, svg.firstChild);
    const xt = [[x0, 'first'], [x0 + span / 2, ''], [x1, 'last']];
    for (const [x, cls] of xt) {
      svg.appendChild(s('text', { class: 'xtick ' + cls, x: px(x).toFixed(1), y: height - 3 }, fmtTime(x)));
    }
    for (const se of series) {
      let d = '';
      let pen = false;
      let n = 0;
      for (const [x, y] of se.points) {
        if (!isNum(y)) {
          pen = false;
          continue;
        }
        d += (pen ? 'L' : 'M') + px(x).toFixed(1) + ' ' + py(y).toFixed(1);
        pen = true;
        n += 1;
      }
      // A lone point would draw nothing: a short tick makes it visible.
      if (n === 1) d += 'h0.01';
      svg.appendChild(s('path', { class: se.cls, d: d || 'M0 0', 'data-series': se.label, 'data-points': n }, s('title', null, se.label)));
    }
    // Hover targets: one per window, titled with every series' value there.
    const xs = [...new Set(series.flatMap((se) => se.points.map((p) => p[0])))].sort((a, b) => a - b);
    xs.forEach((x, i) => {
      const left = i > 0 ? (px(xs[i - 1]) + px(x)) / 2 : L;
      const right = i < xs.length - 1 ? (px(x) + px(xs[i + 1])) / 2 : L + w;
      const lines = [fmtTime(x)];
      for (const se of series) {
        const p = se.points.find((q) => q[0] === x);
        if (p && isNum(p[1])) lines.push(se.label + ': ' + fmtY(p[1]));
      }
      svg.appendChild(s('rect', { class: 'hover', x: left.toFixed(1), y: T, width: Math.max(0, right - left).toFixed(1), height: hgt }, s('title', null, lines.join('\n'))));
    });
    return svg;
  }

  // ---- Profiles ----

  function lastWithRequests(windows) {
    for (let i = windows.length - 1; i >= 0; i -= 1) if (windows[i] && windows[i].requests > 0) return windows[i];
    return null;
  }

  function renderProfiles(stats, analysisRes, alerts, names) {
    const analysisOn = analysisRes.status === 200 && analysisRes.body && typeof analysisRes.body.profiles === 'object';
    const byProfile = analysisOn ? analysisRes.body.profiles || {} : {};
    const liveRequests = new Map();
    const cumulative = new Map();
    for (const s of seriesOf(stats)) {
      if (typeof s.profile !== 'string') continue;
      if (s.role === 'production') liveRequests.set(s.profile, (liveRequests.get(s.profile) || 0) + (s.requests || 0));
      const key = s.profile + '\u0000' + s.role;
      if (!cumulative.has(key)) cumulative.set(key, s);
    }
    const ids = new Set([...Object.keys(byProfile), ...liveRequests.keys()]);
    for (const s of seriesOf(stats)) if (typeof s.profile === 'string') ids.add(s.profile);
    if (ids.size === 0) {
      fill('profiles', note('No traffic measured yet.'));
      return;
    }
    const firing = new Map();
    for (const a of alerts) {
      if (a.state !== 'firing') continue;
      const set = firing.get(a.profile) || new Set();
      set.add(a.role + ' ' + a.metric);
      firing.set(a.profile, set);
    }
    const order = [...ids].sort((a, b) =>
      (firing.has(b) - firing.has(a)) || ((liveRequests.get(b) || 0) - (liveRequests.get(a) || 0)) || (a < b ? -1 : a > b ? 1 : 0));

    let x0 = Infinity;
    let x1 = -Infinity;
    for (const roles of Object.values(byProfile)) {
      for (const ws of Object.values(roles || {})) {
        if (!Array.isArray(ws)) continue;
        for (const w of ws) {
          if (isNum(w.start_ms)) x0 = Math.min(x0, w.start_ms);
          if (isNum(w.end_ms)) x1 = Math.max(x1, w.end_ms);
        }
      }
    }

    const cards = order.map((id) => {
      const roles = byProfile[id] || {};
      const fire = firing.get(id) || new Set();
      const rows = [];
      const lat = [];
      const err = [];
      for (const [role, label] of ROLES) {
        const ws = Array.isArray(roles[role]) ? roles[role] : [];
        const cum = cumulative.get(id + '\u0000' + role);
        if (ws.length === 0 && !cum) continue;
        const last = lastWithRequests(ws);
        const cell = (metric, text) => h('td', { class: 'num' + (fire.has(role + ' ' + metric) ? ' worse' : '') }, text);
        if (last) {
          rows.push(h('tr', { 'data-role': role },
            h('td', { class: 'role ' + label }, label),
            cell('p50', fmtMs(last.p50_ms)), cell('p99', fmtMs(last.p99_ms)), cell('error_rate', fmtPct(last.error_rate)),
            cell('throughput', isNum(last.throughput) ? last.throughput.toFixed(1) : '–')));
        } else if (cum) {
          const l = cum.latency_ms || {};
          rows.push(h('tr', { 'data-role': role, title: 'since the proxy started: no window yet' },
            h('td', { class: 'role ' + label }, label),
            cell('p50', fmtMs(l.p50)), cell('p99', fmtMs(l.p99)), cell('error_rate', fmtPct(cum.error_rate)), h('td', { class: 'num muted' }, 'total')));
        }
        const mid = (w) => (w.start_ms + w.end_ms) / 2;
        const pts = (f) => ws.filter((w) => isNum(w.start_ms) && isNum(w.end_ms)).map((w) => [mid(w), w.requests > 0 ? f(w) : null]);
        if (ws.length) {
          lat.push({ cls: label + ' p50', label: label + ' p50', points: pts((w) => w.p50_ms) });
          lat.push({ cls: label + ' p99', label: label + ' p99', points: pts((w) => w.p99_ms) });
          err.push({ cls: label + ' err', label: label + ' errors', points: pts((w) => w.error_rate) });
        }
      }
      const windowed = lat.length > 0 && x1 > x0;
      const latest = h('table', null,
        h('thead', null, h('tr', null, ['', 'p50', 'p99', 'errors', 'req/s'].map((t, i) => h('th', { class: i ? 'num' : null }, t)))),
        h('tbody', null, rows));
      return h('article', { class: 'card' + (fire.size ? ' firing' : ''), 'data-profile': id },
        h('h3', null, profileLabel(names, id), fire.size ? h('span', { class: 'badge firing' }, 'firing') : null),
        latest,
        windowed
          ? [
              h('p', { class: 'chart-title' }, 'latency per window'),
              lineChart({ width: 400, height: 110, x0, x1, series: lat, fmtY: fmtMs, label: 'latency of ' + (names.get(id) || id) }),
              h('p', { class: 'chart-title' }, 'error rate per window'),
              lineChart({ width: 400, height: 54, x0, x1, series: err, fmtY: fmtPct, minMax: 0.01, label: 'error rate of ' + (names.get(id) || id) }),
            ]
          : note(analysisOn ? 'No closed window yet.' : 'Charts need the analysis ([analysis] enabled).'));
    });
    fill('profiles', h('div', { class: 'cards' }, cards));
  }

  // ---- Production servers ----

  function renderServers(stats) {
    const servers = Array.isArray(stats.production) ? stats.production : [];
    if (servers.length === 0) {
      fill('servers', note('No production server configured.'));
      return;
    }
    const total = servers.reduce((a, x) => a + (isNum(x.weight) ? x.weight : 0), 0);
    const resources = Array.isArray(stats.resources) ? stats.resources : [];
    const items = servers.map((sv) => {
      const weight = isNum(sv.weight) ? sv.weight : 0;
      const share = total > 0 ? weight / total : 0;
      const health = sv.ejected ? 'ejected' : sv.healthy ? (weight === 0 ? 'drained' : 'up') : 'down';
      const up = health === 'up' || health === 'drained';
      const bar = h('span', null);
      bar.style.width = (share * 100).toFixed(1) + '%';
      const res = resources.find((r) => r && r.role === 'production' && r.upstream === sv.name);
      const detail = [
        fmtCount(sv.in_flight) + ' in flight',
        'EWMA ' + fmtMs(sv.latency_ewma_ms),
        fmtCount(sv.requests) + ' requests',
        isNum(sv.failures) && sv.failures > 0 ? fmtCount(sv.failures) + ' failures' : null,
        res && isNum(res.cpu_cores) ? res.cpu_cores.toFixed(2) + ' cores' : null,
        res && isNum(res.memory_bytes) ? fmtBytes(res.memory_bytes) : null,
      ].filter(Boolean).join(' · ');
      return h('li', { class: up ? 'up' : 'down', 'data-server': sv.name, 'data-weight': weight },
        h('div', { class: 'row' },
          h('span', { class: 'name mono', title: sv.url }, sv.name),
          h('span', null, h('span', { class: 'health ' + (up ? 'up' : 'down') }, health), ' ',
            h('span', { class: 'weight', title: 'weight (share of traffic)' }, 'weight ' + weight + ' · ' + (share * 100).toFixed(0) + '%'))),
        h('div', { class: 'bar', role: 'presentation' }, bar),
        h('div', { class: 'detail' }, detail));
    });
    fill('servers', h('ul', { class: 'servers' }, items));
  }

  // ---- Shadows ----

  function renderShadows(stats) {
    const shadows = Array.isArray(stats.shadows) ? stats.shadows : [];
    if (shadows.length === 0) {
      fill('shadows', note('No shadow configured.'));
      return;
    }
    const mirror = stats.mirror || {};
    const mismatches = (Array.isArray(stats.shadow_comparisons) ? stats.shadow_comparisons : [])
      .reduce((a, c) => [a[0] + (c.compared || 0), a[1] + (c.status_mismatches || 0)], [0, 0]);
    const blocks = shadows.map((sh) => h('div', { 'data-shadow': sh.name },
      h('div', { class: 'mono' }, sh.name),
      h('dl', { class: 'kv two' },
        ['sent', 'failed', 'timeout', 'queue_full', 'mask_dropped', 'queue_depth', 'in_flight'].map((k) =>
          [h('dt', null, humanKey(k)), h('dd', null, fmtCount(sh[k]))]))));
    fill('shadows', blocks,
      h('dl', { class: 'kv two' },
        h('dt', null, 'sampled'), h('dd', null, fmtCount(mirror.sampled)),
        h('dt', null, 'rate limited'), h('dd', null, fmtCount(mirror.rate_limited)),
        h('dt', null, 'body too large'), h('dd', null, fmtCount(mirror.body_too_large)),
        h('dt', null, 'status mismatches'), h('dd', null, fmtCount(mismatches[1]) + ' of ' + fmtCount(mismatches[0]))));
  }

  // ---- Canary and replicas: shown when their APIs answer ----

  function kvOf(obj, skip) {
    const out = [];
    const add = (k, v) => {
      let text;
      if (typeof v === 'number' && /_ms$/.test(k) && v > 1e12) {
        // Epoch milliseconds: a time of day, under the key without its unit.
        text = fmtTime(v);
        k = k.slice(0, -3);
      } else if (typeof v === 'number') text = fmtNumber(v);
      else if (typeof v === 'string' || typeof v === 'boolean') text = String(v);
      else if (Array.isArray(v) && v.every((x) => typeof x !== 'object')) text = v.slice(0, 8).join(', ') + (v.length > 8 ? ' …' : '');
      else return;
      out.push(h('dt', null, humanKey(k)), h('dd', null, text));
    };
    for (const [k, v] of Object.entries(obj || {})) {
      if (skip.includes(k)) continue;
      // One level of nesting (`{"forecast": {...}}`), shown flat.
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        for (const [k2, v2] of Object.entries(v)) if (!skip.includes(k2)) add(k2, v2);
      } else {
        add(k, v);
      }
    }
    return out.length ? h('dl', { class: 'kv' }, out) : null;
  }

  function unavailable(res) {
    return res.error || 'HTTP ' + res.status;
  }

  function renderCanary(res) {
    if (res.status === 404) {
      fill('canary', note('No canary configured.'));
      return;
    }
    if (res.status !== 200 || !res.body || typeof res.body !== 'object') {
      fill('canary', note('Canary state unavailable (' + unavailable(res) + ').'));
      return;
    }
    const b = res.body;
    const key = 'stage' in b ? 'stage' : 'state';
    const stage = b[key];
    const shown = stage !== undefined && stage !== null && typeof stage !== 'object';
    // Per profile, the stage's judgement so far (canary against production).
    const profiles = Array.isArray(b.profiles) ? b.profiles.filter((p) => p && typeof p === 'object') : [];
    const judged = profiles.length
      ? h('ul', { class: 'judged' }, profiles.map((p) => {
        const metrics = (Array.isArray(p.metrics) ? p.metrics : [])
          .filter((m) => m && m.result !== 'no_data')
          .map((m) => m.metric + ' ' + m.result + (isNum(m.change) ? ' (' + (m.change >= 0 ? '+' : '') + (m.change * 100).toFixed(1) + '%)' : ''));
        return h('li', { 'data-profile': String(p.profile), 'data-result': String(p.result) },
          h('span', { class: 'mono' }, String(p.profile)), ' ', String(p.result),
          h('span', { class: 'muted' }, ' · ' + fmtCount(p.canary_requests) + ' canary / ' + fmtCount(p.production_requests) +
            ' production' + (metrics.length ? ' · ' + metrics.join(', ') : '')));
      }))
      : null;
    const last = Array.isArray(b.history) && b.history[0] && typeof b.history[0].reason === 'string'
      ? h('p', { class: 'muted', 'data-last-decision': '' }, 'last decision: ' + b.history[0].reason)
      : null;
    fill('canary',
      shown ? h('div', { class: 'big', 'data-stage': String(stage) }, String(stage)) : null,
      kvOf(b, shown ? [key, 'phase', 'stage_started_ms'] : ['phase']),
      judged,
      last);
  }

  function renderCapacity(res) {
    if (res.status === 404) {
      fill('capacity', note('No forecast yet.'));
      return;
    }
    if (res.status !== 200 || !res.body || typeof res.body !== 'object') {
      fill('capacity', note('Forecast unavailable (' + unavailable(res) + ').'));
      return;
    }
    const b = res.body;
    const f = b.forecast && typeof b.forecast === 'object' ? b.forecast : b;
    const replicas = [b.recommended_replicas, b.replicas, f.replicas].find(isNum);
    const current = [b.current_replicas, f.current_replicas].find(isNum);
    fill('capacity',
      isNum(replicas)
        ? h('div', null, h('span', { class: 'big', 'data-replicas': replicas }, String(replicas)), ' recommended replicas',
            isNum(current) ? h('span', { class: 'muted' }, ' (now ' + current + ')') : null)
        : null,
      kvOf(b, ['recommended_replicas', 'replicas', 'current_replicas', 'path']));
  }

  // ---- The loop ----

  async function poll() {
    const [stats, analysis, alerts, canary, capacity] = await Promise.all(
      ['/api/stats', '/api/analysis', '/api/alerts', '/api/canary', '/api/capacity'].map(get));
    polls += 1;
    document.body.dataset.polls = String(polls);
    if (stats.status !== 200 || !stats.body) {
      if (downSince === null) downSince = Date.now();
      setStatus('disconnected', 'disconnected since ' + fmtTime(downSince) + ' (' + unavailable(stats) + ')' +
        (lastOk ? ', showing data from ' + fmtTime(lastOk) : ''));
      document.title = 'Umbra · disconnected';
    } else {
      downSince = null;
      lastOk = Date.now();
      try {
        const names = profileNames(stats.body);
        const list = alertList(alerts);
        renderFacts(stats.body, analysis, list);
        renderAlerts(alerts, analysis, names);
        renderProfiles(stats.body, analysis, list, names);
        renderServers(stats.body);
        renderShadows(stats.body);
        renderCanary(canary);
        renderCapacity(capacity);
        setStatus('live', 'live · ' + fmtTime(lastOk));
      } catch (e) {
        // Keep polling: the next answer may render; say what broke meanwhile.
        setStatus('error', 'cannot show the answer: ' + (e && e.message ? e.message : String(e)));
      }
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();
