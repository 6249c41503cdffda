// Overview: the gateway (id, version, commit, uptime), where its configuration came from, the
// uplink (the local broker's bridges to the cloud), each sink's health and counters, and the
// process figures (CPU, memory from GET /metrics). Refreshed every two seconds.

import {call, key} from './rpc.js';
import {h, facts, fmtAge, fmtTime, fmtUptime, fmtBytes, banner} from './ui.js';

const REFRESH_MS = 2000;

/** The bridges of `uplink`, whatever its exact shape: [{name, up, state}]. */
export function bridges(uplink) {
  if (!uplink) return [];
  const list = Array.isArray(uplink) ? uplink
    : Array.isArray(uplink.bridges) ? uplink.bridges
    : Object.entries(uplink).filter(([, v]) => v && typeof v === 'object')
      .map(([name, v]) => Object.assign({name}, v));
  return list.map((b) => {
    const state = b.state ?? (b.connected === undefined ? undefined : (b.connected ? 'connected' : 'disconnected'));
    const up = b.connected ?? (state === 'connected' || state === 'up' || state === 1 || state === '1');
    return {name: b.name || b.bridge || b.connection || '?', up: !!up, state: String(state ?? (up ? 'connected' : 'down'))};
  });
}

function uplinkView(st) {
  const sec = h('section', {class: 'card', 'aria-labelledby': 'uplink-h'}, h('h2', {id: 'uplink-h'}, 'Uplink'));
  if (st.uplink === undefined) {
    sec.append(h('p', {class: 'muted'}, 'This gateway does not report its uplink.'));
    return sec;
  }
  const list = bridges(st.uplink);
  const up = list.length > 0 && list.every((b) => b.up);
  sec.append(h('p', {'data-field': 'uplink', 'data-state': list.length ? (up ? 'up' : 'down') : 'none', class: 'big ' + (list.length ? (up ? 'ok' : 'bad') : 'muted')},
    list.length ? (up ? 'Connected to the cloud' : 'Not reaching the cloud') : 'No bridge configured on the local broker'));
  if (list.length) {
    const ul = h('ul', {class: 'plain'});
    for (const b of list) {
      ul.append(h('li', {'data-bridge': b.name, 'data-state': b.up ? 'up' : 'down'},
        h('span', {class: 'dot ' + (b.up ? 'ok' : 'bad'), 'aria-hidden': 'true'}), b.name + ': ' + b.state));
    }
    sec.append(ul);
  }
  if (st.uplink && st.uplink.error) sec.append(h('p', {class: 'error'}, String(st.uplink.error)));
  return sec;
}

function sinksView(sinks) {
  const sec = h('section', {class: 'card wide', 'aria-labelledby': 'sinks-h'}, h('h2', {id: 'sinks-h'}, 'Sinks'));
  const t = h('table', {class: 'grid'});
  t.append(h('thead', null, h('tr', null, ...['Sink', 'Type', 'Health', 'Backlog', 'Received', 'Published', 'Dropped', 'Errors', 'Last error'].map((x) => h('th', {scope: 'col'}, x)))));
  const tb = h('tbody');
  for (const s of sinks || []) {
    const c = s.counters || {};
    tb.append(h('tr', {'data-sink': s.name, 'data-health': s.health},
      h('td', {'data-label': 'Sink'}, s.name),
      h('td', {'data-label': 'Type'}, s.type ?? ''),
      h('td', {'data-label': 'Health'}, h('span', {class: 'pill ' + s.health}, s.health)),
      h('td', {'data-label': 'Backlog'}, c.buffered ?? 0),
      h('td', {'data-label': 'Received'}, c.received ?? 0),
      h('td', {'data-label': 'Published'}, c.published ?? 0),
      h('td', {'data-label': 'Dropped'}, c.dropped ?? 0),
      h('td', {'data-label': 'Errors'}, c.errors ?? 0),
      h('td', {'data-label': 'Last error', class: 'wrap'}, s.last_error || '—')));
  }
  t.append(tb);
  sec.append(t);
  return sec;
}

/** The process figures of the Prometheus text: {cpu, rss, start}. */
function parseMetrics(text) {
  const get = (name) => {
    const m = text.match(new RegExp('^' + name + ' ([0-9.eE+-]+)$', 'm'));
    return m ? Number(m[1]) : null;
  };
  return {cpu: get('process_cpu_seconds_total'), rss: get('process_resident_memory_bytes')};
}

export function render(section) {
  section.append(h('h1', null, 'Overview'));
  const body = h('div', {class: 'cards'});
  section.append(body);
  let prevCpu = null;
  let timer = 0;
  let stopped = false;

  async function refresh() {
    let st;
    try {
      st = await call('gateway.status');
    } catch (e) {
      banner('Status: ' + e.message, true);
      return;
    }
    let proc = null;
    try {
      const r = await fetch('/metrics', {headers: {Authorization: 'Bearer ' + key()}, cache: 'no-store'});
      if (r.ok) proc = parseMetrics(await r.text());
    } catch (e) { /* the figures are optional */ }
    if (stopped) return;
    banner('');
    const cfg = st.config || {};
    const devs = (st.connectors || []).flatMap((c) => c.devices || []);
    const count = (hl) => devs.filter((d) => d.health === hl).length;
    let cpu = '—';
    if (proc && proc.cpu !== null) {
      const now = performance.now();
      if (prevCpu) cpu = (((proc.cpu - prevCpu.cpu) / ((now - prevCpu.at) / 1000)) * 100).toFixed(1) + ' % of a core';
      prevCpu = {cpu: proc.cpu, at: now};
    }
    body.replaceChildren(
      h('section', {class: 'card', 'aria-labelledby': 'gw-h'}, h('h2', {id: 'gw-h'}, 'Gateway'),
        facts([['Gateway', st.gateway], ['Version', st.version], ['Commit', st.commit],
          ['Up for', fmtUptime(st.uptime_s)], ['Started', fmtTime(st.started)]])),
      uplinkView(st),
      h('section', {class: 'card', 'aria-labelledby': 'dev-h'}, h('h2', {id: 'dev-h'}, h('a', {href: '#/devices'}, 'Devices')),
        facts([['Connectors', (st.connectors || []).length], ['Devices', devs.length], ['Online', count('online')],
          ['Degraded', count('degraded')], ['Offline', count('offline')], ['Stopped', count('stopped')]])),
      h('section', {class: 'card', 'aria-labelledby': 'cfg-h'}, h('h2', {id: 'cfg-h'}, h('a', {href: '#/config'}, 'Configuration')),
        facts([['Source', cfg.source ?? '—'], ['Applied', fmtTime(cfg.loaded)], ['Age', fmtAge(cfg.age_ms)],
          ['Last error', cfg.last_error || 'none']])),
      h('section', {class: 'card', 'aria-labelledby': 'proc-h'}, h('h2', {id: 'proc-h'}, 'Process'),
        facts([['CPU', cpu], ['Memory (RSS)', proc ? fmtBytes(proc.rss) : '—']])),
      sinksView(st.sinks));
  }

  const loop = async () => {
    if (!document.hidden) await refresh();
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}
