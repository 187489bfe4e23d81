#include "tollgate/admin/status_page.hpp"

namespace tollgate::admin {

namespace {

// The whole page: inline CSS and JS, no external asset (the CSP below forbids
// any), so it works on an air-gapped admin port. Everything it shows comes
// from same-origin `/metrics` and `/debug/keys` polls. Keys come from clients:
// the script only ever puts them into the DOM with textContent.
//
// Rates are counter deltas between polls: the big numbers and the headline
// use the last ~10 s so they do not flicker, the bars show each poll
// interval, the latency estimate uses the last ~30 s of histogram buckets.
// `?interval=MS` (500..60000) changes the poll period.
constexpr std::string_view page = R"tgpage(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:">
<link rel="icon" href="data:,">
<title>tollgate status</title>
<style>
:root {
  --bg: #f3f5f8; --card: #ffffff; --fg: #18202b; --muted: #5d6878; --line: #dfe3e9;
  --allowed: #23965a; --limited: #e08600; --rejected: #cf3b31; --slots: #3569c7;
  --ok-bg: #e4f5eb; --warn-bg: #fff1db; --bad-bg: #fde6e4; --drain-bg: #e5edfb; --down-bg: #eceef1;
  --mono: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #11151b; --card: #1a2029; --fg: #e7eaef; --muted: #9ba6b5; --line: #2b333f;
    --ok-bg: #15301f; --warn-bg: #3a2a0e; --bad-bg: #3d1715; --drain-bg: #172540; --down-bg: #23272e;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 14px 20px 24px; }
header { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; margin-bottom: 10px; }
header h1 { font-size: 20px; margin: 0; letter-spacing: .2px; }
header .meta { color: var(--muted); font-size: 13px; }
header .links { margin-left: auto; font-size: 13px; }
header .links a { color: var(--muted); margin-left: 12px; }
.state { display: flex; align-items: center; gap: 18px; padding: 14px 20px; border-radius: 10px;
  border-left: 8px solid var(--muted); background: var(--down-bg); margin-bottom: 14px; }
.state .headline { font-size: 30px; font-weight: 700; white-space: nowrap; }
.state .detail { color: var(--fg); opacity: .85; font-size: 15px; }
.state[data-state="healthy"] { border-color: var(--allowed); background: var(--ok-bg); }
.state[data-state="limiting"] { border-color: var(--limited); background: var(--warn-bg); }
.state[data-state="saturated"] { border-color: var(--rejected); background: var(--bad-bg); }
.state[data-state="draining"] { border-color: var(--slots); background: var(--drain-bg); }
.state[data-state="unreachable"] { border-color: var(--muted); background: var(--down-bg); }
.grid { display: grid; gap: 14px; margin-bottom: 14px; }
.g3 { grid-template-columns: repeat(3, 1fr); }
.g4 { grid-template-columns: repeat(4, 1fr); }
.g21 { grid-template-columns: 2fr 1fr; }
.g2 { grid-template-columns: 1fr 1fr; }
@media (max-width: 900px) { .g3, .g4, .g21, .g2 { grid-template-columns: 1fr; } }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; min-width: 0; }
.card h2 { font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .6px;
  color: var(--muted); margin: 0 0 6px; }
.big { font-size: 34px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.15; }
.big small { font-size: 15px; font-weight: 500; color: var(--muted); margin-left: 4px; }
.mid { font-size: 24px; font-weight: 700; font-variant-numeric: tabular-nums; }
.sub { color: var(--muted); font-size: 13px; font-variant-numeric: tabular-nums; min-height: 18px; }
.rate { border-top: 4px solid var(--line); }
.rate.allowed { border-top-color: var(--allowed); } .rate.allowed .big { color: var(--allowed); }
.rate.limited { border-top-color: var(--limited); } .rate.limited .big { color: var(--limited); }
.rate.rejected { border-top-color: var(--rejected); } .rate.rejected .big { color: var(--rejected); }
.legend { display: flex; gap: 14px; font-size: 12px; color: var(--muted); margin: -2px 0 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
canvas { display: block; width: 100%; height: 170px; }
.gauge { height: 18px; border-radius: 9px; background: var(--bg); border: 1px solid var(--line); overflow: hidden; margin: 8px 0 6px; }
.gauge > div { height: 100%; width: 0; background: var(--slots); }
.gauge.hot > div { background: var(--rejected); }
.kv { display: grid; grid-template-columns: 1fr auto; gap: 4px 12px; margin-top: 10px; font-size: 14px; }
.kv span:nth-child(2n) { font-weight: 600; font-variant-numeric: tabular-nums; text-align: right; }
table { width: 100%; border-collapse: collapse; font-size: 14px; table-layout: fixed; }
th { text-align: left; font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line); padding: 4px 6px; }
td { padding: 5px 6px; border-bottom: 1px solid var(--line); vertical-align: middle; }
td.key { font-family: var(--mono); font-size: 13px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th.type, td.type { width: 56px; color: var(--muted); }
th.num { width: 90px; } th.share { width: 30%; }
td.empty { color: var(--muted); font-style: italic; text-align: center; padding: 14px 6px; }
.share > div { height: 8px; border-radius: 4px; background: var(--limited); min-width: 2px; }
.share.slots > div { background: var(--slots); }
.stale .grid { opacity: .55; }
footer { color: var(--muted); font-size: 12px; margin-top: 6px; }
</style>
</head>
<body>
<main id="main">
<header>
  <h1>tollgate</h1>
  <span class="meta"><span id="version" data-testid="version">version ?</span> · admin <span id="origin"></span> · <span id="updated" data-testid="updated">connecting…</span></span>
  <span class="links"><a href="/metrics">/metrics</a><a href="/debug/keys?top=10">/debug/keys</a><a href="/healthz">/healthz</a><a href="/readyz">/readyz</a></span>
</header>

<section class="state" id="state-box" data-testid="state-box" data-state="unreachable">
  <div class="headline" id="state" data-testid="state">Connecting…</div>
  <div class="detail" id="state-detail" data-testid="state-detail">Waiting for the first poll of /metrics and /debug/keys.</div>
</section>

<div class="grid g3">
  <div class="card rate allowed"><h2>Allowed</h2>
    <div class="big"><span id="rate-allowed" data-testid="rate-allowed">0</span><small>req/s</small></div>
    <div class="sub"><span id="total-allowed" data-testid="total-allowed">0</span> since start · <span id="allowed-note"></span></div></div>
  <div class="card rate limited"><h2>Limited (429)</h2>
    <div class="big"><span id="rate-limited" data-testid="rate-limited">0</span><small>req/s</small></div>
    <div class="sub"><span id="total-limited" data-testid="total-limited">0</span> since start · <span id="limited-note"></span></div></div>
  <div class="card rate rejected"><h2>Rejected (4xx/503)</h2>
    <div class="big"><span id="rate-rejected" data-testid="rate-rejected">0</span><small>req/s</small></div>
    <div class="sub"><span id="total-rejected" data-testid="total-rejected">0</span> since start · <span id="rejected-note"></span></div></div>
</div>

<div class="grid g21">
  <div class="card"><h2>Requests per second</h2>
    <div class="legend"><span><i style="background:var(--allowed)"></i>allowed</span><span><i style="background:var(--limited)"></i>limited</span><span><i style="background:var(--rejected)"></i>rejected</span><span id="chart-span"></span></div>
    <canvas id="chart" data-testid="chart" aria-label="requests per second, allowed, limited and rejected"></canvas></div>
  <div class="card"><h2>Completion slots</h2>
    <div class="big"><span id="slots-inflight" data-testid="slots-inflight">0</span><small>/ <span id="slots-capacity" data-testid="slots-capacity">0</span> in flight</small></div>
    <div class="gauge" id="slots-gauge"><div id="slots-bar" data-testid="slots-bar"></div></div>
    <div class="sub" id="slots-note"></div>
    <div class="kv">
      <span>Active keys (holding a slot)</span><span id="active-keys" data-testid="active-keys">0</span>
      <span>Rate-limit keys held</span><span id="ratelimit-keys" data-testid="ratelimit-keys">0</span>
      <span>Bucket evictions (LRU)</span><span id="evictions" data-testid="evictions">0</span>
      <span>Connections client / upstream</span><span><span id="conn-client" data-testid="conn-client">0</span> / <span id="conn-upstream" data-testid="conn-upstream">0</span></span>
    </div></div>
</div>

<div class="grid g2">
  <div class="card"><h2>Top limited keys <span id="limited-window"></span></h2>
    <table><thead><tr><th>Key</th><th class="type">Type</th><th class="share"></th><th class="num">Refused</th></tr></thead>
    <tbody id="limited-keys" data-testid="limited-keys"><tr><td class="empty" colspan="4">No refusals.</td></tr></tbody></table></div>
  <div class="card"><h2>Top keys in flight</h2>
    <table><thead><tr><th>Key</th><th class="type">Type</th><th class="share"></th><th class="num">In flight</th></tr></thead>
    <tbody id="inflight-keys" data-testid="inflight-keys"><tr><td class="empty" colspan="4">Nothing in flight.</td></tr></tbody></table></div>
</div>
<div class="grid g3">
  <div class="card"><h2>Upstream latency p99</h2>
    <div class="mid" id="upstream-p99" data-testid="upstream-p99">–</div>
    <div class="sub" id="upstream-p99-note" data-testid="upstream-p99-note">no upstream requests yet</div></div>
  <div class="card"><h2>Upstream errors</h2>
    <div class="mid"><span id="upstream-errors" data-testid="upstream-errors">0</span> <small class="sub">since start</small></div>
    <div class="sub" id="upstream-errors-note" data-testid="upstream-errors-note">none</div></div>
  <div class="card"><h2>Responses by class</h2>
    <div class="mid" id="responses" data-testid="responses">0</div>
    <div class="sub" id="responses-note" data-testid="responses-note">since start</div></div>
</div>

<footer>Rates are computed in the browser from counter deltas between polls (big numbers and headline: last 10 s; bars: each poll). Keys are shown in display form: <code>tok:</code> + 12 hex of the token hash, <code>org:</code> id, <code>ip:</code> address.</footer>
</main>
<script>
(() => {
  'use strict';
  const params = new URLSearchParams(location.search);
  const interval = Math.min(60000, Math.max(500, parseInt(params.get('interval'), 10) || 2000));
  const BARS = 60;
  const SMOOTH_MS = 10000;
  const LATENCY_MS = 30000;
  const $ = (id) => document.getElementById(id);
  const DECISIONS = ['allowed', 'limited', 'rejected'];

  let snaps = [];     // recent metric snapshots, oldest first
  const bars = [];    // per-poll rates for the chart
  let polls = 0;

  $('origin').textContent = location.host;
  $('chart-span').textContent = '· last ' + fmtSpan(BARS * interval) + ', one bar per ' + fmtSpan(interval);

  // ---- Prometheus text format (0.0.4) ----
  function parseValue(s) {
    if (s === '+Inf' || s === 'Inf') return Infinity;
    if (s === '-Inf') return -Infinity;
    return Number(s);
  }
  function parseProm(text) {
    const out = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line[0] === '#') continue;
      let i = 0;
      while (i < line.length && line[i] !== '{' && line[i] !== ' ' && line[i] !== '\t') i++;
      const name = line.slice(0, i);
      const labels = {};
      if (line[i] === '{') {
        i++;
        while (i < line.length && line[i] !== '}') {
          const eq = line.indexOf('=', i);
          if (eq < 0) break;
          const lname = line.slice(i, eq).trim();
          i = eq + 1;
          if (line[i] !== '"') break;
          i++;
          let v = '';
          while (i < line.length && line[i] !== '"') {
            if (line[i] === '\\' && i + 1 < line.length) {
              v += line[i + 1] === 'n' ? '\n' : line[i + 1];
              i += 2;
            } else {
              v += line[i++];
            }
          }
          i++;
          labels[lname] = v;
          while (i < line.length && (line[i] === ',' || line[i] === ' ')) i++;
        }
        i++;
      }
      const fields = line.slice(i).trim().split(/\s+/);
      if (name === '' || fields[0] === '') continue;
      const value = parseValue(fields[0]);
      if (Number.isNaN(value)) continue;
      out.push({ name, labels, value });
    }
    return out;
  }

  function add(obj, k, v) { obj[k] = (obj[k] || 0) + v; }

  function snapshot(samples, t) {
    const s = { t, req: { allowed: 0, limited: 0, rejected: 0 }, reason: {}, limitedByType: {},
      hist: new Map(), errors: {}, conn: {}, resp: {}, g: {}, version: null };
    for (const m of samples) {
      const l = m.labels;
      switch (m.name) {
        case 'tollgate_requests_total':
          if (l.decision in s.req) s.req[l.decision] += m.value;
          add(s.reason, l.decision + '/' + (l.reason || '?'), m.value);
          if (l.decision === 'limited') add(s.limitedByType, l.key_type || '?', m.value);
          break;
        case 'tollgate_upstream_duration_seconds_bucket':
          s.hist.set(parseValue(l.le), (s.hist.get(parseValue(l.le)) || 0) + m.value);
          break;
        case 'tollgate_upstream_errors_total': add(s.errors, l.kind || '?', m.value); break;
        case 'tollgate_connections': add(s.conn, l.side || '?', m.value); break;
        case 'tollgate_responses_total': add(s.resp, l.class || '?', m.value); break;
        case 'tollgate_build_info': s.version = l.version || null; break;
        default: if (Object.keys(l).length === 0) s.g[m.name] = m.value;
      }
    }
    return s;
  }

  // Counter delta; a smaller value means the process restarted.
  function d(cur, old) { return cur >= old ? cur - old : cur; }
  function sum(obj) { let n = 0; for (const k in obj) n += obj[k]; return n; }
  function g(s, name) { const v = s.g[name]; return Number.isFinite(v) ? v : 0; }

  function baseFor(cur, ms) {
    for (const s of snaps) if (s !== cur && cur.t - s.t <= ms + interval / 2) return s;
    return null;
  }
  function rates(cur, base) {
    const r = { allowed: 0, limited: 0, rejected: 0, reason: {}, limitedByType: {}, errors: {} };
    if (!base || cur.t <= base.t) return r;
    const dt = (cur.t - base.t) / 1000;
    for (const k of DECISIONS) r[k] = d(cur.req[k], base.req[k]) / dt;
    for (const k in cur.reason) r.reason[k] = d(cur.reason[k], base.reason[k] || 0) / dt;
    for (const k in cur.limitedByType) r.limitedByType[k] = d(cur.limitedByType[k], base.limitedByType[k] || 0) / dt;
    for (const k in cur.errors) r.errors[k] = d(cur.errors[k], base.errors[k] || 0) / dt;
    return r;
  }

  // histogram_quantile over the bucket deltas between two snapshots, with
  // linear interpolation inside a bucket (as Prometheus does).
  function quantile(q, cur, base) {
    const les = [...cur.hist.keys()].sort((a, b) => a - b);
    if (les.length === 0) return null;
    const counts = les.map((le) => base ? d(cur.hist.get(le), base.hist.get(le) || 0) : cur.hist.get(le));
    const total = counts[counts.length - 1];
    if (!(total > 0)) return null;
    const rank = q * total;
    for (let i = 0; i < les.length; i++) {
      if (counts[i] >= rank) {
        if (les[i] === Infinity) return { v: les[i - 1] || 0, over: true, n: total };
        if (i === 0) return { v: les[0], under: true, n: total };
        const lo = les[i - 1], clo = counts[i - 1], inb = counts[i] - clo;
        return { v: inb > 0 ? lo + (les[i] - lo) * (rank - clo) / inb : les[i], n: total };
      }
    }
    return null;
  }

  // ---- formatting ----
  function fmtRate(x) {
    if (!Number.isFinite(x) || x <= 0) return '0';
    if (x < 0.1) return x.toFixed(2);
    if (x < 10) return x.toFixed(1);
    return Math.round(x).toLocaleString('en-US');
  }
  function fmtInt(x) { return Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '0'; }
  function fmtSecs(s) {
    if (s < 0.001) return (s * 1000).toFixed(2) + ' ms';
    if (s < 0.01) return (s * 1000).toFixed(1) + ' ms';
    if (s < 1) return Math.round(s * 1000) + ' ms';
    return s.toFixed(2) + ' s';
  }
  function fmtSpan(ms) {
    if (ms < 1000) return ms + ' ms';
    if (ms < 120000) return Math.round(ms / 1000) + ' s';
    return Math.round(ms / 60000) + ' min';
  }
  function fmtQ(q) {
    if (!q) return '–';
    if (q.under) return '≤ ' + fmtSecs(q.v);
    if (q.over) return '> ' + fmtSecs(q.v);
    return fmtSecs(q.v);
  }
  const LABELS = { ok: 'forwarded', dry_run: 'dry run (not refused)' };
  function breakdown(obj, prefix, unit) {
    const parts = [];
    for (const k of Object.keys(obj).sort()) {
      if (!(obj[k] > 0) || !k.startsWith(prefix)) continue;
      const name = k.slice(prefix.length);
      parts.push((LABELS[name] || name) + ' ' + (unit ? fmtRate(obj[k]) + unit : fmtInt(obj[k])));
    }
    return parts.join(' · ');
  }
  function setText(id, text) { const e = $(id); if (e.textContent !== text) e.textContent = text; }

  // ---- rendering ----
  function setState(state, headline, detail) {
    $('state-box').dataset.state = state;
    setText('state', headline);
    setText('state-detail', detail);
  }

  function renderKeys(tbodyId, rows, field, emptyText, cls) {
    const tbody = $(tbodyId);
    const frag = document.createDocumentFragment();
    const max = rows.reduce((m, r) => Math.max(m, Number(r[field]) || 0), 0);
    for (const r of rows) {
      const tr = document.createElement('tr');
      tr.dataset.testid = tbodyId === 'limited-keys' ? 'limited-key' : 'inflight-key';
      const key = document.createElement('td');
      key.className = 'key';
      key.textContent = String(r.key);
      key.title = String(r.key);
      const type = document.createElement('td');
      type.className = 'type';
      type.textContent = String(r.key_type || '');
      const share = document.createElement('td');
      share.className = 'share' + (cls ? ' ' + cls : '');
      const bar = document.createElement('div');
      const n = Number(r[field]) || 0;
      bar.style.width = (max > 0 ? Math.max(1, Math.round(100 * n / max)) : 0) + '%';
      share.appendChild(bar);
      const num = document.createElement('td');
      num.className = 'num';
      num.textContent = fmtInt(n);
      tr.append(key, type, share, num);
      frag.appendChild(tr);
    }
    if (rows.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.className = 'empty';
      td.colSpan = 4;
      td.textContent = emptyText;
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
  }

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  // A round tick step (1, 2 or 5 times a power of ten) giving at most 4 ticks.
  function tickStep(peak) {
    const raw = Math.max(peak, 1) / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5]) if (m * p >= raw) return m * p;
    return 10 * p;
  }
  function fmtTick(v) { return Number.isInteger(v) ? v.toLocaleString('en-US') : String(Math.round(v * 100) / 100); }

  function drawChart() {
    const c = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (w === 0 || h === 0) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 44, right = 6, top = 6, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    let peak = 0;
    for (const b of bars) peak = Math.max(peak, b.allowed + b.limited + b.rejected);
    const step = tickStep(peak);
    const ticks = Math.max(1, Math.ceil(Math.max(peak, 1) / step));
    const ymax = step * ticks;
    const muted = cssVar('--muted'), line = cssVar('--line');
    ctx.font = '11px system-ui, "DejaVu Sans", sans-serif';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let i = 0; i <= ticks; i++) {
      const v = step * i;
      const y = top + ph - ph * i / ticks;
      ctx.strokeStyle = line;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(left + pw, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillStyle = muted;
      ctx.fillText(fmtTick(v), left - 6, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    ctx.fillText('−' + fmtSpan(BARS * interval), left + 16, top + ph + 5);
    ctx.fillText('−' + fmtSpan(BARS * interval / 2), left + pw / 2, top + ph + 5);
    ctx.textAlign = 'right';
    ctx.fillText('now', left + pw, top + ph + 5);
    const slot = pw / BARS;
    const bw = Math.max(1, slot - Math.min(3, slot * 0.2));
    const colors = { allowed: cssVar('--allowed'), limited: cssVar('--limited'), rejected: cssVar('--rejected') };
    bars.forEach((b, i) => {
      const x = left + (BARS - bars.length + i) * slot + (slot - bw) / 2;
      let y = top + ph;
      for (const k of DECISIONS) {
        const hh = ph * b[k] / ymax;
        if (hh <= 0) continue;
        ctx.fillStyle = colors[k];
        ctx.fillRect(x, y - hh, bw, hh);
        y -= hh;
      }
    });
  }

  function render(cur, dk) {
    const prev = snaps.length > 1 ? snaps[snaps.length - 2] : null;
    const smooth = rates(cur, baseFor(cur, SMOOTH_MS));
    if (prev) {
      const r = rates(cur, prev);
      bars.push({ allowed: r.allowed, limited: r.limited, rejected: r.rejected });
      if (bars.length > BARS) bars.shift();
    }

    if (cur.version) setText('version', 'version ' + cur.version);
    for (const k of DECISIONS) {
      setText('rate-' + k, fmtRate(smooth[k]));
      setText('total-' + k, fmtInt(cur.req[k]));
    }
    const allRate = smooth.allowed + smooth.limited + smooth.rejected;
    setText('allowed-note', breakdown(smooth.reason, 'allowed/', '/s') || 'last 10 s');
    const byType = breakdown(smooth.limitedByType, '', '/s');
    setText('limited-note', (breakdown(smooth.reason, 'limited/', '/s') + (byType ? ' · by key: ' + byType : '')) || 'last 10 s');
    setText('rejected-note', breakdown(smooth.reason, 'rejected/', '/s') || 'last 10 s');

    const inflight = g(cur, 'tollgate_inflight_slots');
    const cap = g(cur, 'tollgate_concurrency_capacity');
    setText('slots-inflight', fmtInt(inflight));
    setText('slots-capacity', cap > 0 ? fmtInt(cap) : 'off');
    const fill = cap > 0 ? Math.min(100, 100 * inflight / cap) : 0;
    $('slots-bar').style.width = fill.toFixed(1) + '%';
    $('slots-gauge').classList.toggle('hot', cap > 0 && fill >= 90);
    setText('slots-note', cap > 0 ? fill.toFixed(0) + '% of capacity in use' : 'concurrency.capacity is 0: no slot limit');
    setText('active-keys', fmtInt(g(cur, 'tollgate_active_keys')));
    setText('ratelimit-keys', fmtInt(g(cur, 'tollgate_ratelimit_keys')));
    setText('evictions', fmtInt(g(cur, 'tollgate_ratelimit_evictions_total')));
    setText('conn-client', fmtInt(cur.conn.client || 0));
    setText('conn-upstream', fmtInt(cur.conn.upstream || 0));

    const lbase = baseFor(cur, LATENCY_MS);
    const recent = lbase ? quantile(0.99, cur, lbase) : null;
    if (recent) {
      setText('upstream-p99', fmtQ(recent));
      setText('upstream-p99-note', 'p50 ' + fmtQ(quantile(0.5, cur, lbase)) + ' · ' + fmtInt(recent.n) + ' requests in the last ' + fmtSpan(Math.round(cur.t - lbase.t)));
    } else {
      const life = quantile(0.99, cur, null);
      setText('upstream-p99', '–');
      setText('upstream-p99-note', life ? 'no upstream response completed in the last ' + fmtSpan(LATENCY_MS) + ' (since start: p99 ' + fmtQ(life) + ')' : 'no upstream requests yet');
    }
    setText('upstream-errors', fmtInt(sum(cur.errors)));
    const errRate = sum(smooth.errors);
    setText('upstream-errors-note', (errRate > 0 ? fmtRate(errRate) + '/s now · ' : '') + (breakdown(cur.errors, '', '') || 'none'));
    const resp = sum(cur.resp);
    setText('responses', fmtInt(resp));
    setText('responses-note', breakdown(cur.resp, '', '') || 'since start');

    const draining = dk.draining === true || g(cur, 'tollgate_draining') > 0;
    const concRate = smooth.reason['limited/concurrency'] || 0;
    const notes = [];
    if (g(cur, 'tollgate_store_fallback') > 0) notes.push('Redis unreachable: local buckets decide.');
    if (smooth.rejected > 0) notes.push('Rejecting ' + fmtRate(smooth.rejected) + ' req/s (' + breakdown(smooth.reason, 'rejected/', '/s') + ').');
    if (errRate > 0) notes.push('Upstream errors ' + fmtRate(errRate) + '/s.');
    const tail = notes.length ? ' ' + notes.join(' ') : '';
    if (draining) {
      setState('draining', 'Draining', 'Shutting down: no new connections, ' + fmtInt(inflight) + ' exchanges in flight finishing; /readyz answers 503.' + tail);
    } else if (cap > 0 && (inflight >= cap || concRate > 0)) {
      setState('saturated', 'Slots saturated', fmtInt(inflight) + ' of ' + fmtInt(cap) + ' completion slots in use' +
        (concRate > 0 ? '; refusing ' + fmtRate(concRate) + ' req/s for lack of a slot.' : '.') + tail);
    } else if (smooth.limited > 0) {
      const pct = allRate > 0 ? Math.round(100 * smooth.limited / allRate) : 0;
      setState('limiting', 'Limiting ' + fmtRate(smooth.limited) + ' req/s', pct + '% of requests refused over the last 10 s (' +
        breakdown(smooth.limitedByType, '', '/s') + '); see the top limited keys below.' + tail);
    } else {
      setState('healthy', 'Healthy', (smooth.allowed > 0 ? 'Forwarding ' + fmtRate(smooth.allowed) + ' req/s, no refusals in the last 10 s.' : 'No traffic in the last 10 s; nothing refused.') + tail);
    }

    const limited = Array.isArray(dk.limited) ? dk.limited : [];
    const inflightKeys = Array.isArray(dk.in_flight) ? dk.in_flight : [];
    const win = Number(dk.window_seconds) > 0 ? Number(dk.window_seconds) * 1000 : 0;
    setText('limited-window', win ? '(last ' + fmtSpan(win) + ')' : '');
    renderKeys('limited-keys', limited, 'refused', 'No key refused' + (win ? ' in the last ' + fmtSpan(win) : '') + '.', '');
    renderKeys('inflight-keys', inflightKeys, 'in_flight', 'Nothing in flight.', 'slots');

    drawChart();
  }

  async function fetchText(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), Math.max(2000, interval));
    try {
      const res = await fetch(path, { cache: 'no-store', signal: ctl.signal });
      if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
      return await res.text();
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    try {
      const [metricsText, keysText] = await Promise.all([fetchText('/metrics'), fetchText('/debug/keys?top=10')]);
      const now = performance.now();
      const cur = snapshot(parseProm(metricsText), now);
      const dk = JSON.parse(keysText) || {};
      const last = snaps[snaps.length - 1];
      if (last && DECISIONS.some((k) => cur.req[k] < last.req[k])) snaps = [];  // restarted
      snaps.push(cur);
      while (snaps.length > 2 && now - snaps[0].t > LATENCY_MS + 2 * interval) snaps.shift();
      render(cur, dk);
      polls++;
      document.body.dataset.polls = String(polls);
      $('main').classList.remove('stale');
      setText('updated', 'updated ' + new Date().toLocaleTimeString('en-GB') + ' · every ' + fmtSpan(interval));
    } catch (e) {
      $('main').classList.add('stale');
      setState('unreachable', 'Unreachable', 'Cannot read /metrics or /debug/keys (' + (e && e.message ? e.message : String(e)) +
        '). Showing the last values; retrying every ' + fmtSpan(interval) + '.');
      document.body.dataset.errors = String((Number(document.body.dataset.errors) || 0) + 1);
    } finally {
      setTimeout(poll, interval);
    }
  }

  window.addEventListener('resize', drawChart);
  drawChart();
  poll();
})();
</script>
</body>
</html>
)tgpage";

}  // namespace

std::string_view status_page_html() {
    return page;
}

}  // namespace tollgate::admin
