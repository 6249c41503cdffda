// Device: every channel with its live value, unit, quality, age, source timestamp and a trend of
// the last minutes (kept in the tab), "read now", enable/disable, and for operators a write of
// each writable channel in engineering units, its range shown, after a confirmation, with the
// device's answer. Channels come from the configuration (names, units, writability, ranges)
// and from the readings themselves (devices whose channels are learnt at run time).

import {call, Live} from './rpc.js';
import {h, setText, fmtValue, fmtAge, fmtTime, can, banner, confirmDialog, facts, trend} from './ui.js';
import {ChannelStore, TREND_SPAN_MS} from './live.js';

const STATUS_MS = 2000;
const AGE_MS = 1000;

/** The configured channels of `device.status` (with `channels: true`), by name. */
function channelMeta(status) {
  const out = new Map();
  for (const ch of (status && status.channels) || []) if (ch && ch.name) out.set(ch.name, ch);
  return out;
}

/** The range of a writable channel as text (`0 – 100 °C`, `≥ 0`, `any`). */
export function rangeText(m) {
  const u = m.unit ? ' ' + m.unit : '';
  const lo = typeof m.min === 'number' ? m.min : null;
  const hi = typeof m.max === 'number' ? m.max : null;
  if (m.type === 'bool') return 'true or false';
  if (m.type === 'text' || m.type === 'string') return 'text';
  if (lo !== null && hi !== null) return `${lo} – ${hi}${u}`;
  if (lo !== null) return `≥ ${lo}${u}`;
  if (hi !== null) return `≤ ${hi}${u}`;
  return 'any value' + u;
}

/** What the user typed as the JSON value to write, as the channel's type wants it. */
export function parseInput(text, m) {
  const t = text.trim();
  const low = t.toLowerCase();
  if (m.type === 'text' || m.type === 'string') return text;
  if (['true', 'on'].includes(low)) return true;
  if (['false', 'off'].includes(low)) return false;
  if (m.type === 'bool') return t === '1' ? true : t === '0' ? false : t;
  const n = Number(t.replace(',', '.'));
  return t !== '' && isFinite(n) ? n : t;
}

export function render(section, device) {
  const operator = can('operator');
  const id = device;
  const head = h('div', {class: 'devhead'});
  const liveState = h('p', {class: 'muted', 'data-field': 'live', 'aria-live': 'polite'});
  const readBtn = operator ? h('button', {type: 'button', 'aria-label': 'Read ' + id}, 'Read now') : null;
  const toggleBtn = operator ? h('button', {type: 'button', 'data-field': 'toggle'}) : null;
  const readState = h('span', {class: 'muted', role: 'status'});
  const table = h('table', {class: 'grid channels', 'data-device': id});
  table.append(h('thead', null, h('tr', null,
    ...['Channel', 'Value', 'Unit', 'Quality', 'Age', 'Source time', 'Trend', operator ? 'Write' : null]
      .filter((x) => x !== null).map((x) => h('th', {scope: 'col'}, x)))));
  const tbody = h('tbody');
  table.append(tbody);
  section.append(h('p', {class: 'crumbs'}, h('a', {href: '#/devices'}, 'Devices'), ' / ', id),
    h('h1', null, id), head, h('div', {class: 'toolbar'}, readBtn, toggleBtn, readState), liveState, table);

  let meta = new Map();
  const rows = new Map(); // channel -> {tr, value, quality, age, ts, trend}
  const visible = new Set();
  let stopped = false;
  let statusTimer = 0;
  let enabled = true;
  const io = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const ch = e.target.dataset.channel;
      if (e.isIntersecting) { visible.add(ch); drawRow(ch, Date.now()); } else visible.delete(ch);
    }
  });

  function row(ch) {
    let r = rows.get(ch);
    if (r) return r;
    const m = meta.get(ch) || {};
    const cells = {
      value: h('td', {'data-label': 'Value', 'data-field': 'value', class: 'value'}, '—'),
      unit: h('td', {'data-label': 'Unit', 'data-field': 'unit'}, m.unit || ''),
      quality: h('td', {'data-label': 'Quality', 'data-field': 'quality'}, '—'),
      age: h('td', {'data-label': 'Age', 'data-field': 'age'}, '—'),
      ts: h('td', {'data-label': 'Source time', 'data-field': 'ts'}, '—'),
      trend: h('td', {'data-label': 'Trend', 'data-field': 'trend'}),
    };
    const tr = h('tr', {'data-device': id, 'data-channel': ch},
      h('td', {'data-label': 'Channel', class: 'name'}, ch),
      cells.value, cells.unit, cells.quality, cells.age, cells.ts, cells.trend);
    if (operator) {
      const wcell = h('td', {'data-label': 'Write', class: 'write'});
      if (m.writable) {
        const name = id + '/' + ch;
        wcell.append(h('div', {class: 'wbox'},
          h('input', {type: 'text', inputmode: m.type === 'text' ? 'text' : 'decimal', 'aria-label': 'Value for ' + name,
            'data-channel': ch, 'aria-describedby': 'range-' + rows.size}),
          h('button', {type: 'button', 'data-action': 'write', 'data-channel': ch, 'aria-label': 'Write ' + name}, 'Write'),
          h('span', {class: 'range muted', id: 'range-' + rows.size, 'data-field': 'range'}, rangeText(m)),
          h('span', {class: 'result', 'data-field': 'result', role: 'status'})));
      }
      tr.append(wcell);
    }
    r = {tr, ...cells, svg: null};
    rows.set(ch, r);
    tbody.append(tr);
    io.observe(tr);
    return r;
  }

  function drawRow(ch, now) {
    const r = rows.get(ch);
    const rd = store.latest.get(ch);
    if (!r || !rd) return;
    setText(r.age, fmtAge(now - rd.ts));
    const pts = store.history.get(ch) || [];
    r.svg = trend(r.svg, pts, now, TREND_SPAN_MS);
    if (!r.svg.parentNode) r.trend.append(r.svg);
  }

  const store = new ChannelStore((dirty) => {
    const now = Date.now();
    for (const ch of dirty) {
      const rd = store.latest.get(ch);
      const r = row(ch);
      setText(r.value, fmtValue(rd.value));
      if (rd.unit && !r.unit.textContent) setText(r.unit, rd.unit);
      setText(r.quality, rd.quality + (rd.reason ? ': ' + rd.reason : ''));
      r.tr.dataset.quality = rd.quality;
      setText(r.ts, fmtTime(rd.ts));
      if (visible.has(ch)) drawRow(ch, now);
    }
  });

  let live = null;

  function showStatus(d) {
    enabled = d.enabled;
    head.replaceChildren(facts([['Connector', d.connector],
      ['Health', h('span', {class: 'pill ' + d.health, 'data-field': 'health'}, d.health)],
      ['Last good poll', d.last_ok ? fmtAge(Date.now() - d.last_ok) + ' ago' : 'never'],
      ['Errors', d.errors], ['Bad channels', d.bad_channels], ['Last error', d.last_error || '—']]));
    head.dataset.health = d.health;
    if (toggleBtn) {
      toggleBtn.textContent = enabled ? 'Disable' : 'Enable';
      toggleBtn.setAttribute('aria-label', (enabled ? 'Disable ' : 'Enable ') + id);
    }
  }

  async function status(withChannels) {
    try {
      const d = await call('device.status', withChannels ? {device: id, channels: true} : {device: id});
      if (stopped || !d) return;
      if (withChannels) {
        meta = channelMeta(d);
        for (const ch of meta.keys()) row(ch);
      }
      showStatus(d);
    } catch (e) {
      if (!stopped) banner(id + ': ' + e.message, true);
    }
  }

  async function start() {
    // The configured channels first, so that rows made by live readings carry their settings.
    await status(true);
    if (stopped) return;
    live = new Live({device: id}, (b) => {
      if (b && b.device === id) store.add(b.readings || []);
    }, (s) => setText(liveState, s));
    const loop = async () => {
      if (!document.hidden) await status(false);
      if (!stopped) statusTimer = setTimeout(loop, STATUS_MS);
    };
    statusTimer = setTimeout(loop, STATUS_MS);
  }

  if (readBtn) readBtn.addEventListener('click', async () => {
    readBtn.disabled = true;
    setText(readState, 'reading…');
    try {
      const res = await call('device.read', {device: id});
      store.add(res.readings || []);
      setText(readState, 'read at ' + fmtTime(Date.now()));
    } catch (e) {
      setText(readState, 'read failed: ' + e.message);
    } finally {
      readBtn.disabled = false;
    }
  });

  if (toggleBtn) {
    toggleBtn.addEventListener('click', async () => {
      const verb = enabled ? 'Disable' : 'Enable';
      if (!(await confirmDialog(verb + ' device ' + id + '?', 'Confirm'))) return;
      try {
        await call(enabled ? 'device.disable' : 'device.enable', {device: id});
      } catch (e) {
        banner(verb + ' ' + id + ': ' + e.message, true);
      }
      status();
    });
  }

  async function write(ch) {
    const r = rows.get(ch);
    const m = meta.get(ch) || {};
    const input = r.tr.querySelector('input');
    const result = r.tr.querySelector('[data-field=result]');
    const value = parseInput(input.value, m);
    if (input.value.trim() === '') { input.focus(); return; }
    const shown = fmtValue(value) + (m.unit ? ' ' + m.unit : '');
    if (!(await confirmDialog(`Write ${shown} to ${id}/${ch}?`, 'Confirm'))) return;
    setText(result, 'writing…');
    result.className = 'result';
    try {
      const res = await call('device.write', {device: id, channel: ch, value});
      setText(result, 'written: ' + fmtValue(res.value));
      result.classList.add('ok');
    } catch (e) {
      setText(result, 'refused: ' + e.message);
      result.classList.add('bad');
    }
  }

  table.addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action=write]');
    if (b) write(b.dataset.channel);
  });
  table.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && ev.target.matches('input[data-channel]')) {
      ev.preventDefault();
      write(ev.target.dataset.channel);
    }
  });

  const ageTimer = setInterval(() => {
    if (document.hidden) return;
    const now = Date.now();
    for (const ch of visible) drawRow(ch, now);
  }, AGE_MS);

  start();
  return () => {
    stopped = true;
    if (live) live.close();
    store.stop();
    io.disconnect();
    clearTimeout(statusTimer);
    clearInterval(ageTimer);
  };
}
