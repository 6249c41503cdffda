// The console's shell: login (the key asked once, kept for the tab), who is logged in and with
// which role, the navigation, and the router that shows one page at a time (`#/overview`,
// `#/devices`, `#/device/<name>`, `#/config`, `#/tools`). Each page module exports
// `render(section, arg)` and returns a function that stops its timers and subscriptions.

import * as rpc from './rpc.js';
import {session, banner, setText} from './ui.js';
import * as overview from './overview.js';
import * as devices from './devices.js';
import * as device from './device.js';
import * as config from './config.js';
import * as tools from './tools.js';

const PAGES = {overview, devices, device, config, tools};
const TITLES = {overview: 'Overview', devices: 'Devices', device: 'Device', config: 'Configuration', tools: 'Field tools'};

const $ = (id) => document.getElementById(id);
let stopPage = null;
let loggedIn = false;

/** Asks the gateway who the key belongs to. A gateway without roles lets every key do all. */
async function whoami() {
  try {
    const me = await rpc.call('session.whoami');
    session.name = me.name || 'key';
    session.role = me.role || 'viewer';
  } catch (e) {
    if (e.code !== rpc.METHOD_NOT_FOUND) throw e;
    await rpc.call('gateway.status');
    session.name = 'key';
    session.role = 'admin';
  }
}

function showLogin(message) {
  loggedIn = false;
  if (stopPage) { stopPage(); stopPage = null; }
  $('page').replaceChildren();
  $('nav').hidden = true;
  $('who').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  banner('');
  setText($('login-error'), message || '');
  $('key').value = '';
  $('key').focus();
  document.title = 'Log in · osgate console';
}

async function start() {
  try {
    await whoami();
  } catch (e) {
    rpc.clearKey();
    showLogin(e.code === 401 ? 'This key was refused.' : 'Cannot log in: ' + e.message);
    return;
  }
  loggedIn = true;
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = false;
  const who = $('who');
  who.hidden = false;
  who.textContent = session.name + ' · ' + session.role;
  document.body.dataset.role = session.role;
  route();
}

function route() {
  if (!loggedIn) return;
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  // The devices are what most visits come for: the landing page.
  let name = parts[0] || 'devices';
  if (!PAGES[name]) name = 'devices';
  const arg = parts.length > 1 ? decodeURIComponent(parts.slice(1).join('/')) : undefined;
  if (stopPage) { stopPage(); stopPage = null; }
  banner('');
  for (const a of document.querySelectorAll('#nav a')) {
    const here = a.dataset.page === name || (name === 'device' && a.dataset.page === 'devices');
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const section = $('page');
  section.replaceChildren();
  section.dataset.page = name;
  document.title = (arg ? arg + ' · ' : '') + TITLES[name] + ' · osgate console';
  stopPage = PAGES[name].render(section, arg) || null;
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const k = $('key').value.trim();
  if (!k) return;
  rpc.setKey(k);
  setText($('login-error'), '');
  start();
});

$('logout').addEventListener('click', () => {
  rpc.clearKey();
  showLogin('');
});

rpc.whenUnauthorized(() => {
  rpc.clearKey();
  showLogin('The gateway no longer accepts this key; log in again.');
});

window.addEventListener('hashchange', route);

if (rpc.key()) start(); else showLogin('');
