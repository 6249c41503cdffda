// Field tools: the commissioning methods shared with the command line (M-Bus scan, OPC-UA
// browse, reading a Modbus register range), each a small form of JSON parameters with its
// result shown as a table when it is a list of records, else as JSON.

import {call, METHOD_NOT_FOUND} from './rpc.js';
import {h, can} from './ui.js';

const TOOLS = [
  {method: 'mbus.scan', title: 'M-Bus scan', role: 'operator',
    help: 'Finds the meters on an M-Bus connector\'s bus (the connector pauses while the scan owns the bus).',
    params: {connector: '', mode: 'primary', max_time: '60s'}},
  {method: 'opcua.browse', title: 'OPC-UA browse', role: 'operator',
    help: 'Lists the children of a node on an OPC-UA server.',
    params: {endpoint: 'opc.tcp://127.0.0.1:4840', node: 'i=85'}},
  {method: 'modbus.read', title: 'Modbus read', role: 'operator',
    help: 'Reads one range of registers from a Modbus device: "tcp" (host:port), "rtu" (a serial port) or "rtu_over_tcp".',
    params: {tcp: '127.0.0.1:502', unit: 1, table: 'holding', address: 0, count: 10}},
];

/** A list of flat records as a table; anything else as pretty JSON. */
export function resultView(res) {
  const rows = Array.isArray(res) ? res : res && typeof res === 'object'
    ? Object.values(res).find((v) => Array.isArray(v) && v.length && typeof v[0] === 'object') : null;
  if (Array.isArray(rows) && rows.length && rows.every((r) => r && typeof r === 'object' && !Array.isArray(r))) {
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    const t = h('table', {class: 'grid'});
    t.append(h('thead', null, h('tr', null, ...cols.map((c) => h('th', {scope: 'col'}, c)))));
    const tb = h('tbody');
    for (const r of rows) {
      tb.append(h('tr', null, ...cols.map((c) => h('td', {'data-label': c, class: 'wrap'},
        r[c] === undefined ? '' : typeof r[c] === 'object' ? JSON.stringify(r[c]) : String(r[c])))));
    }
    t.append(tb);
    return h('div', null, h('p', {class: 'muted'}, `${rows.length} result${rows.length === 1 ? '' : 's'}`), t);
  }
  return h('pre', {class: 'json'}, JSON.stringify(res, null, 2));
}

function tool(t, connectors) {
  const id = t.method.replace('.', '-');
  const proto = t.method.split('.')[0];
  const params = Object.assign({}, t.params);
  const mine = connectors.filter((c) => c.protocol === proto);
  if ('connector' in params && mine.length) params.connector = mine[0].name;
  const text = h('textarea', {id: id + '-params', rows: 5, spellcheck: 'false', 'aria-label': 'Parameters for ' + t.title});
  text.value = JSON.stringify(params, null, 2);
  const run = h('button', {type: 'button', class: 'primary', 'aria-label': 'Run ' + t.title}, 'Run');
  const out = h('div', {class: 'tool-result', 'aria-live': 'polite', 'data-field': 'result'});
  run.addEventListener('click', async () => {
    let p;
    try {
      p = JSON.parse(text.value);
    } catch (e) {
      out.replaceChildren(h('p', {class: 'bad', role: 'alert'}, 'Parameters are not valid JSON: ' + e.message));
      return;
    }
    run.disabled = true;
    out.replaceChildren(h('p', {class: 'muted'}, 'running…'));
    try {
      out.replaceChildren(resultView(await call(t.method, p)));
    } catch (e) {
      const msg = e.code === METHOD_NOT_FOUND ? `this gateway has no ${t.method}` : e.message;
      out.replaceChildren(h('p', {class: 'bad', role: 'alert'}, t.method + ': ' + msg));
    } finally {
      run.disabled = false;
    }
  });
  return h('section', {class: 'card wide', 'aria-labelledby': id + '-h', 'data-tool': t.method},
    h('h2', {id: id + '-h'}, t.title), h('p', {class: 'muted'}, t.help,
      'connector' in params && !mine.length ? ` (no ${proto} connector is configured)` : ''),
    h('label', {for: id + '-params'}, 'Parameters (JSON)'), text, h('div', {class: 'toolbar'}, run), out);
}

export function render(section) {
  section.append(h('h1', null, 'Field tools'));
  const cards = h('div', {class: 'cards'});
  section.append(cards);
  let stopped = false;
  (async () => {
    let connectors = [];
    try { connectors = await call('connectors.list'); } catch (e) { /* forms still work */ }
    if (stopped) return;
    for (const t of TOOLS) if (can(t.role)) cards.append(tool(t, connectors));
    if (!cards.childNodes.length) cards.append(h('p', {class: 'muted', 'data-tool': 'none'}, 'The field tools need an operator key.'));
  })();
  return () => { stopped = true; };
}
