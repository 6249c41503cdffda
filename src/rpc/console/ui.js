// Small DOM helpers shared by the pages: element building (text only, never HTML from data),
// formatting of values, ages and times, the confirmation dialog, the session (who is logged
// in, what their role allows) and a trend drawn as an inline SVG.

/** Builds an element: `h('td', {class: 'x', 'data-field': 'value'}, 'text', child)`. */
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'hidden') e.hidden = true;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Sets `text` on `el` only when it changed (no layout work for equal values). */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A reading's value for display. */
export function fmtValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a >= 1e6 || a < 1e-3) ? v.toExponential(3) : String(Number(v.toFixed(3)));
  }
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Milliseconds as a short age: `3 s`, `5 min`, `2 h`, `4 d`. */
export function fmtAge(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return '—';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return s + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  if (s < 172800) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
}

/** A timestamp (ms since the epoch) as local date and time. */
export function fmtTime(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Seconds as `3 d 4 h`, `5 h 2 min`, `40 s`. */
export function fmtUptime(s) {
  if (s === null || s === undefined) return '—';
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}

/** Bytes as kB/MB/GB. */
export function fmtBytes(b) {
  if (b === null || b === undefined) return '—';
  const u = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + ' ' + u[i];
}

/** Asks `question` in the page's dialog; resolves to true on Confirm. */
export function confirmDialog(question, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = question;
  const ok = document.getElementById('confirm-ok');
  ok.textContent = okLabel || 'Confirm';
  ok.setAttribute('aria-label', okLabel || 'Confirm');
  return new Promise((resolve) => {
    dlg.returnValue = '';
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), {once: true});
    dlg.showModal();
    ok.focus();
  });
}

/** The logged-in user: name and role (viewer, operator, admin). */
export const session = {name: '', role: 'viewer'};
const RANK = {viewer: 0, operator: 1, admin: 2};
/** True when the session's role is at least `role`. */
export function can(role) { return (RANK[session.role] ?? 0) >= RANK[role]; }

/** A message at the top of the page (`''` hides it). */
export function banner(text, isError) {
  const b = document.getElementById('banner');
  b.textContent = text || '';
  b.hidden = !text;
  b.classList.toggle('error', !!isError);
}

const SVG = 'http://www.w3.org/2000/svg';

/** A trend line of `points` ([ts, number]) over at most the last `span` ms, in an SVG of w×h. */
export function trend(svg, points, now, span, w = 120, h = 28) {
  if (!svg) {
    svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.setAttribute('class', 'trend');
    svg.setAttribute('aria-hidden', 'true');
    svg.append(document.createElementNS(SVG, 'polyline'));
  }
  const line = svg.firstChild;
  if (points.length < 2) {
    line.setAttribute('points', '');
    return svg;
  }
  let lo = Infinity, hi = -Infinity;
  for (const p of points) { if (p[1] < lo) lo = p[1]; if (p[1] > hi) hi = p[1]; }
  if (hi === lo) { hi += 1; lo -= 1; }
  // The window grows with the history, up to `span`: a page open for seconds shows seconds.
  const t0 = Math.max(now - span, points[0][0]);
  const width = Math.max(now - t0, 1000);
  let s = '';
  for (const p of points) {
    const x = Math.max(0, ((p[0] - t0) / width) * w);
    const y = h - 2 - ((p[1] - lo) / (hi - lo)) * (h - 4);
    s += x.toFixed(1) + ',' + y.toFixed(1) + ' ';
  }
  line.setAttribute('points', s);
  return svg;
}

/** `[label, value]` pairs as a definition list. */
export function facts(pairs) {
  const dl = h('dl', {class: 'facts'});
  for (const [k, v] of pairs) dl.append(h('dt', null, k), h('dd', null, v));
  return dl;
}
