// Configuration: the configuration in force (secrets masked as `gateway.config` gives it), an
// editor to change or paste one, a check that lists every problem at its path (as `osgate check`
// prints them) and what would change (connectors started, stopped, restarted, kept), apply
// (admins, after the check passed and a confirmation) and roll back to the previous one.

import {call, METHOD_NOT_FOUND} from './rpc.js';
import {h, can, confirmDialog} from './ui.js';

/** The editor's text as JSON, or an error naming the line and column. */
export function parseConfig(text) {
  try {
    return {config: JSON.parse(text)};
  } catch (e) {
    const m = /position (\d+)/.exec(e.message);
    let where = '';
    if (m) {
      const upto = text.slice(0, Number(m[1]));
      const line = upto.split('\n').length;
      const col = Number(m[1]) - upto.lastIndexOf('\n');
      where = ` (line ${line}, column ${col})`;
    }
    return {error: 'not valid JSON' + where + ': ' + e.message};
  }
}

function changeList(title, names, kind) {
  const ul = h('ul', {class: 'plain', 'data-change': kind});
  for (const n of names || []) ul.append(h('li', null, typeof n === 'string' ? n : JSON.stringify(n)));
  return h('div', {class: 'change'}, h('h3', null, `${title} (${(names || []).length})`), ul);
}

export function render(section) {
  const admin = can('admin');
  const editor = h('textarea', {id: 'config-text', 'aria-label': 'Configuration text', spellcheck: 'false', rows: 18,
    autocomplete: 'off', autocapitalize: 'off'});
  const checkBtn = h('button', {type: 'button', 'aria-label': 'Check configuration'}, 'Check');
  const applyBtn = admin ? h('button', {type: 'button', class: 'primary', 'aria-label': 'Apply configuration'}, 'Apply') : null;
  const rollbackBtn = admin ? h('button', {type: 'button', 'aria-label': 'Roll back configuration'}, 'Roll back') : null;
  const resetBtn = h('button', {type: 'button', 'aria-label': 'Discard edits'}, 'Discard edits');
  const result = h('div', {id: 'config-result', 'aria-live': 'polite'});
  section.append(h('h1', null, 'Configuration'),
    h('p', {class: 'muted'}, 'The configuration in force, secrets masked (***). Edit or paste one, check it, '
      + (admin ? 'then apply it.' : 'and see what would change (applying needs an admin key).')),
    h('label', {for: 'config-text'}, 'Configuration (JSON)'), editor,
    h('div', {class: 'toolbar'}, checkBtn, applyBtn, rollbackBtn, resetBtn), result);

  let stopped = false;

  async function load() {
    try {
      const cfg = await call('gateway.config');
      if (!stopped) editor.value = JSON.stringify(cfg, null, 2);
    } catch (e) {
      // Reading the whole configuration is for admins; others may still paste and check one.
      if (!stopped) editor.placeholder = 'The configuration in force cannot be shown (' + e.message + '). Paste one to check it.';
    }
  }

  /** Shows a check or apply answer; returns true when it has no errors. */
  function show(res, what) {
    const errors = res.errors || [];
    const parts = [];
    if (errors.length) {
      const ul = h('ul', {class: 'errors', 'data-field': 'errors'});
      for (const e of errors) {
        let msg = e.message || '';
        if (e.path && msg.startsWith(e.path)) msg = msg.slice(e.path.length).replace(/^[:\s]+/, '');
        ul.append(h('li', {'data-path': e.path || ''}, h('code', {class: 'path'}, e.path || '(whole file)'), ' ', msg));
      }
      parts.push(h('p', {class: 'bad', role: 'alert', 'data-field': 'verdict', 'data-ok': 'false'},
        `${errors.length} problem${errors.length > 1 ? 's' : ''}: nothing was ${what === 'apply' ? 'applied' : 'changed'}`), ul);
    } else {
      const applied = res.applied === true;
      parts.push(h('p', {class: 'ok', role: 'status', 'data-field': 'verdict', 'data-ok': 'true'},
        what === 'apply' ? (applied ? 'Applied.' : 'Not applied.') : what === 'rollback' ? 'Rolled back.' : 'The configuration is valid.'));
    }
    const c = res.changes;
    if (c) {
      parts.push(h('div', {class: 'changes', 'data-field': 'changes'},
        changeList('Started', c.started, 'started'), changeList('Stopped', c.stopped, 'stopped'),
        changeList('Restarted', c.restarted, 'restarted'), changeList('Kept', c.kept, 'kept')));
    }
    result.replaceChildren(...parts);
    result.scrollIntoView({block: 'nearest'});
    return errors.length === 0;
  }

  function fail(method, e) {
    const text = e.code === METHOD_NOT_FOUND ? `this gateway has no ${method}` : e.message;
    result.replaceChildren(h('p', {class: 'bad', role: 'alert', 'data-field': 'verdict', 'data-ok': 'false'}, method + ': ' + text));
  }

  async function check() {
    const p = parseConfig(editor.value);
    if (p.error) {
      result.replaceChildren(h('p', {class: 'bad', role: 'alert', 'data-field': 'verdict', 'data-ok': 'false'}, p.error));
      return null;
    }
    try {
      const res = await call('config.check', {config: p.config});
      return show(res, 'check') ? {config: p.config, res} : null;
    } catch (e) {
      fail('config.check', e);
      return null;
    }
  }

  function summary(c) {
    if (!c) return '';
    const n = (x) => (x || []).length;
    return ` Connectors started: ${n(c.started)}, stopped: ${n(c.stopped)}, restarted: ${n(c.restarted)}, kept: ${n(c.kept)}.`;
  }

  checkBtn.addEventListener('click', check);
  resetBtn.addEventListener('click', () => { result.replaceChildren(); load(); });
  if (applyBtn) {
    applyBtn.addEventListener('click', async () => {
      const ok = await check();
      if (!ok) return;
      if (!(await confirmDialog('Apply this configuration?' + summary(ok.res.changes), 'Apply'))) return;
      try {
        const res = await call('config.apply', {config: ok.config});
        if (show(res, 'apply') && res.applied !== false) load();
      } catch (e) {
        fail('config.apply', e);
      }
    });
  }
  if (rollbackBtn) {
    rollbackBtn.addEventListener('click', async () => {
      if (!(await confirmDialog('Go back to the previous configuration?', 'Roll back'))) return;
      try {
        const res = await call('config.rollback');
        show(res || {}, 'rollback');
        load();
      } catch (e) {
        fail('config.rollback', e);
      }
    });
  }
  load();
  return () => { stopped = true; };
}
