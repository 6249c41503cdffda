// Devices: every connector and its devices with their health (online, degraded, offline,
// stopped), last good poll, errors, last error and bad channels; filters by name and health;
// enable, disable and restart for operators. Built for a thousand devices: rows are made once
// and then only their changed cells are rewritten (every two seconds), filtering only hides
// rows, and one listener on the table serves every button.

import {call} from './rpc.js';
import {h, setText, fmtAge, can, banner, confirmDialog} from './ui.js';

const REFRESH_MS = 2000;
const HEALTHS = ['online', 'degraded', 'offline', 'stopped'];

function connectorHead(c, operator) {
  const tr = h('tr', {class: 'conn', 'data-connector': c.name},
    h('th', {colspan: 7, scope: 'rowgroup'},
      h('span', {class: 'cname'}, c.name), ' ',
      h('span', {class: 'muted', 'data-field': 'protocol'}, c.protocol), ' ',
      h('span', {class: 'pill', 'data-field': 'health'}),
      operator ? h('span', {class: 'actions'},
        h('button', {type: 'button', 'data-action': 'toggle-connector', 'data-connector': c.name}),
        h('button', {type: 'button', 'data-action': 'restart-connector', 'data-connector': c.name,
          'aria-label': 'Restart connector ' + c.name}, 'Restart')) : null));
  return tr;
}

function updateConnector(tr, c, operator) {
  const pill = tr.querySelector('[data-field=health]');
  setText(pill, c.health);
  pill.className = 'pill ' + c.health;
  tr.dataset.health = c.health;
  if (operator) {
    const b = tr.querySelector('[data-action=toggle-connector]');
    const label = (c.enabled ? 'Disable connector ' : 'Enable connector ') + c.name;
    if (b.getAttribute('aria-label') !== label) {
      b.setAttribute('aria-label', label);
      b.textContent = c.enabled ? 'Disable' : 'Enable';
      b.dataset.enabled = c.enabled ? '1' : '0';
    }
  }
}

function deviceRow(d, operator) {
  const link = h('a', {href: '#/device/' + encodeURIComponent(d.device)}, d.device);
  return h('tr', {'data-device': d.device, 'data-connector': d.connector},
    h('td', {'data-label': 'Device', class: 'name'}, link),
    h('td', {'data-label': 'Health'}, h('span', {class: 'pill', 'data-field': 'health'})),
    h('td', {'data-label': 'Last good poll', 'data-field': 'last_ok'}),
    h('td', {'data-label': 'Errors', 'data-field': 'errors'}),
    h('td', {'data-label': 'Bad channels', 'data-field': 'bad_channels'}),
    h('td', {'data-label': 'Last error', 'data-field': 'last_error', class: 'wrap'}),
    h('td', {'data-label': '', class: 'actions'}, operator
      ? h('button', {type: 'button', 'data-action': 'toggle-device', 'data-device': d.device, 'data-connector': d.connector})
      : null));
}

function updateDevice(tr, d, now, operator) {
  if (tr.dataset.health !== d.health) tr.dataset.health = d.health;
  const c = tr.cells;
  const pill = c[1].firstChild;
  setText(pill, d.health);
  if (pill.className !== 'pill ' + d.health) pill.className = 'pill ' + d.health;
  setText(c[2], d.last_ok ? fmtAge(now - d.last_ok) + ' ago' : 'never');
  setText(c[3], String(d.errors ?? 0));
  setText(c[4], String(d.bad_channels ?? 0));
  setText(c[5], d.last_error || '—');
  if (operator) {
    const b = c[6].firstChild;
    const label = (d.enabled ? 'Disable ' : 'Enable ') + d.device;
    if (b.getAttribute('aria-label') !== label) {
      b.setAttribute('aria-label', label);
      b.textContent = d.enabled ? 'Disable' : 'Enable';
      b.dataset.enabled = d.enabled ? '1' : '0';
    }
  }
}

export function render(section) {
  const operator = can('operator');
  const filterName = h('input', {type: 'search', id: 'filter-name', 'aria-label': 'Filter devices by name', placeholder: 'Filter by name'});
  const filterHealth = h('select', {id: 'filter-health', 'aria-label': 'Filter devices by health'},
    h('option', {value: ''}, 'Any health'), ...HEALTHS.map((x) => h('option', {value: x}, x)));
  const summary = h('p', {class: 'muted', 'aria-live': 'polite', 'data-field': 'summary'});
  const table = h('table', {class: 'grid devices'});
  table.append(h('thead', null, h('tr', null,
    ...['Device', 'Health', 'Last good poll', 'Errors', 'Bad channels', 'Last error', ''].map((x) => h('th', {scope: 'col'}, x)))));
  section.append(h('h1', null, 'Devices'),
    h('div', {class: 'toolbar'}, filterName, filterHealth), summary, table);

  const groups = new Map(); // connector -> {tbody, head, rows: Map(device -> tr)}
  let data = [];
  let stopped = false;
  let timer = 0;

  function applyFilter() {
    const q = filterName.value.trim().toLowerCase();
    const want = filterHealth.value;
    let shown = 0, total = 0;
    for (const g of groups.values()) {
      let any = false;
      for (const [name, tr] of g.rows) {
        total++;
        const show = (!q || name.toLowerCase().includes(q)) && (!want || tr.dataset.health === want);
        if (tr.hidden === show) tr.hidden = !show;
        if (show) { any = true; shown++; }
      }
      const showHead = any || (!q && !want);
      if (g.head.hidden === showHead) g.head.hidden = !showHead;
    }
    setText(summary, shown === total ? `${total} devices` : `${shown} of ${total} devices`);
  }

  function paint() {
    const now = Date.now();
    const seen = new Set();
    for (const c of data) {
      seen.add(c.name);
      let g = groups.get(c.name);
      if (!g) {
        const head = connectorHead(c, operator);
        const tbody = h('tbody', {'data-connector': c.name}, head);
        g = {tbody, head, rows: new Map()};
        groups.set(c.name, g);
        table.append(tbody);
      }
      updateConnector(g.head, c, operator);
      const present = new Set();
      const frag = document.createDocumentFragment();
      for (const d of c.devices || []) {
        present.add(d.device);
        let tr = g.rows.get(d.device);
        if (!tr) {
          tr = deviceRow(d, operator);
          g.rows.set(d.device, tr);
          frag.append(tr);
        }
        updateDevice(tr, d, now, operator);
      }
      if (frag.childNodes.length) g.tbody.append(frag);
      for (const [name, tr] of g.rows) if (!present.has(name)) { tr.remove(); g.rows.delete(name); }
    }
    for (const [name, g] of groups) if (!seen.has(name)) { g.tbody.remove(); groups.delete(name); }
    applyFilter();
  }

  async function refresh() {
    try {
      data = await call('connectors.list');
    } catch (e) {
      banner('Devices: ' + e.message, true);
      return;
    }
    if (stopped) return;
    paint();
  }

  async function act(btn) {
    const act = btn.dataset.action;
    const connector = btn.dataset.connector;
    const enabled = btn.dataset.enabled === '1';
    let method, params, question;
    if (act === 'toggle-device') {
      method = enabled ? 'device.disable' : 'device.enable';
      params = {device: btn.dataset.device, connector};
      question = (enabled ? 'Disable' : 'Enable') + ' device ' + btn.dataset.device + '?';
    } else if (act === 'toggle-connector') {
      method = enabled ? 'connector.disable' : 'connector.enable';
      params = {connector};
      question = (enabled ? 'Disable' : 'Enable') + ' connector ' + connector + ' and all its devices?';
    } else if (act === 'restart-connector') {
      method = 'connector.restart';
      params = {connector};
      question = 'Restart connector ' + connector + '?';
    } else {
      return;
    }
    if (!(await confirmDialog(question, 'Confirm'))) return;
    btn.disabled = true;
    try {
      await call(method, params);
      banner('');
    } catch (e) {
      banner(method + ': ' + e.message, true);
    } finally {
      btn.disabled = false;
    }
    refresh();
  }

  table.addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    if (btn) act(btn);
  });
  filterName.addEventListener('input', applyFilter);
  filterHealth.addEventListener('change', applyFilter);

  const loop = async () => {
    if (!document.hidden) await refresh();
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}
