#!/usr/bin/env python3
"""Drives the web console in a real browser (Debian's chromium and chromedriver, Selenium) for
tests/console.rs, one phase per run:

    console_browser.py PHASE URL SHOTS_DIR [KEY=VALUE ...]

Phases (their keys):
  operator  key=            log in, every device with its health, a live value changes, write
                            boiler/setpoint=42 through the confirmation, see it on the page;
                            screenshots of every page at desktop and 360 px width, which must
                            not scroll sideways
  viewer    key=            no write, enable/disable or apply control anywhere; a forced
                            device.write from the page is refused
  config    key= typo= good= new_device=
                            a configuration with a typo shows its error at its path and is not
                            applied; a good one is applied and the devices page lists new_device
  uplink    key=            the overview shows the uplink up, prints `ok uplink up`, waits for a
                            line on standard input (the test stops the cloud broker), then
                            must show it down within 15 s

Phases of examples/bench_console.rs (figures as `FIG name value` lines):
  hold      key= device=    open the device's page, print `ok ready` once values show, keep
                            the page open until standard input closes
  devices   key= count=     the devices page with `count` devices: time until every row shows,
                            time of one filter keystroke, longest main-thread task in 10 s

Prints `ok <what>` per check passed and `FAIL <what>: <why>` per failure (then exits 1).
Browser console errors (a Content-Security-Policy violation, a script error) are failures.
"""
import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

PHASE, URL, SHOTS = sys.argv[1:4]
ARGS = dict(a.split("=", 1) for a in sys.argv[4:])
os.makedirs(SHOTS, exist_ok=True)
FAILED = []


def ok(what):
    print(f"ok {what}", flush=True)


def fail(what, why):
    FAILED.append(what)
    print(f"FAIL {what}: {why}", flush=True)


def driver(width=1280, height=900):
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", f"--window-size={width},{height}",
              f"--user-data-dir={tempfile.mkdtemp(prefix='osgate-chromium-')}"):
        o.add_argument(a)
    o.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=o)
    d.set_page_load_timeout(20)
    if width < 500:
        # A headless window is at least 500 px wide: emulate the phone's screen instead (which
        # also makes the page's viewport meta tag count, as on a phone).
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
    return d


def wait(fn, t=10.0, step=0.1):
    """The first truthy result of fn() within t seconds, else None."""
    end = time.time() + t
    while True:
        try:
            r = fn()
            if r:
                return r
        except (WebDriverException, IndexError, AttributeError, KeyError):
            pass
        if time.time() > end:
            return None
        time.sleep(step)


def css(d, sel):
    return d.find_elements(By.CSS_SELECTOR, sel)


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def console_errors(d, allowed=()):
    """SEVERE browser log entries not matching any of `allowed`."""
    return [e["message"] for e in d.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def login(d, key):
    d.get(URL)
    inp = wait(lambda: css(d, "input[type=password]")[0])
    if not inp:
        return False
    inp.send_keys(key)
    inp.send_keys(Keys.ENTER)
    return bool(wait(lambda: css(d, "#nav a") and css(d, "#nav a")[0].is_displayed()))


def go(d, page, ready, t=10.0):
    d.execute_script("location.hash = arguments[0]", page)
    return wait(lambda: css(d, ready), t)


def value_of(d, dev, ch):
    el = css(d, f"[data-device='{dev}'][data-channel='{ch}'] [data-field='value']")
    return el[0].text.strip() if el else None


def fits(d, what):
    sw = d.execute_script("return document.documentElement.scrollWidth")
    if sw <= 360:
        ok(f"{what} fits 360 px (scrollWidth {sw})")
    else:
        fail(f"{what} fits 360 px", f"scrollWidth {sw}")


def confirm(d):
    btn = wait(lambda: css(d, "dialog[open] #confirm-ok")[0])
    if not btn:
        return False
    btn.click()
    return True


def devices_listed(d, want_online, want_present):
    rows = wait(lambda: (lambda r: r if want_present <= set(r) and all(r.get(x) == "online" for x in want_online) else None)(
        {e.get_attribute("data-device"): e.get_attribute("data-health") for e in css(d, "[data-device][data-health]")}), 15)
    got = {e.get_attribute("data-device"): e.get_attribute("data-health") for e in css(d, "[data-device][data-health]")}
    if rows:
        ok("devices with health " + ",".join(f"{k}={got[k]}" for k in sorted(got)))
    else:
        fail("devices with health", f"got {got}")


def phase_operator(key):
    d = driver()
    try:
        if not login(d, key):
            return fail("login", "no navigation after entering the key")
        ok("login")
        # The landing page is the devices list.
        go(d, "#/devices", "[data-device][data-health]")
        devices_listed(d, {"boiler", "pump"}, {"boiler", "pump", "mq-7"})
        if css(d, "[aria-label='Disable boiler']") and css(d, "[aria-label='Restart connector plant']"):
            ok("operator sees enable/disable/restart controls")
        else:
            fail("operator controls", "no 'Disable boiler' / 'Restart connector plant'")
        shot(d, "devices-desktop")
        res = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        foreign = [r for r in res if not r.startswith(URL.rstrip("/"))]
        ok(f"{len(res)} resources, all from the gateway") if not foreign else fail("own origin", foreign)
        # the device page, through its link
        link = wait(lambda: d.find_element(By.XPATH, "//a[normalize-space(.)='boiler']"))
        link.click()
        if not wait(lambda: value_of(d, "boiler", "temperature") not in (None, "—")):
            return fail("live value", "no temperature value on boiler's page")
        v1 = value_of(d, "boiler", "temperature")
        v2 = wait(lambda: (lambda v: v if v and v != v1 else None)(value_of(d, "boiler", "temperature")), 8)
        ok(f"live value {v1} -> {v2}") if v2 else fail("live value", f"temperature stayed {v1!r}")
        rng = css(d, "[data-device='boiler'][data-channel='setpoint'] [data-field='range']")
        ok(f"range shown: {rng[0].text}") if rng and "100" in rng[0].text else fail("range", "no 0 – 100 range")
        inp = css(d, "[aria-label='Value for boiler/setpoint']")
        btn = css(d, "[aria-label='Write boiler/setpoint']")
        if not inp or not btn:
            fail("write controls", "no 'Value for boiler/setpoint' / 'Write boiler/setpoint'")
        else:
            inp[0].clear()
            inp[0].send_keys("42")
            btn[0].click()
            confirm(d) or fail("confirmation", "no dialog with a Confirm button")
            res = wait(lambda: (lambda t: t if t.startswith("written") else None)(
                css(d, "[data-device='boiler'][data-channel='setpoint'] [data-field='result']")[0].text), 10)
            ok(f"write answered: {res}") if res else fail("write answer", "no 'written' result")
            got = wait(lambda: (lambda v: v if v == "42" else None)(value_of(d, "boiler", "setpoint")), 10)
            ok("written value 42 shown live") if got else fail("written value", f"setpoint shows {value_of(d, 'boiler', 'setpoint')!r}")
        wait(lambda: css(d, "svg.trend polyline[points*=' ']"), 5) and ok("trend drawn")
        shot(d, "device-desktop")
        go(d, "#/config", "#config-text")
        wait(lambda: css(d, "#config-text")[0].get_attribute("value").startswith("{"))
        shot(d, "config-desktop")
        go(d, "#/tools", "[data-tool]")
        shot(d, "tools-desktop")
        # A field tool runs its method and shows the answer (here: nothing listens on port 1).
        params = css(d, "[aria-label='Parameters for Modbus read']")
        if params:
            d.execute_script("arguments[0].value = arguments[1]", params[0],
                             json.dumps({"tcp": "127.0.0.1:1", "address": 0, "count": 2, "timeout": "1s"}))
            css(d, "[aria-label='Run Modbus read']")[0].click()
            res = wait(lambda: (lambda t: t if "modbus.read:" in t else None)(
                css(d, "[data-tool='modbus.read'] [data-field=result]")[0].text), 15)
            ok(f"field tool answered: {res}") if res else fail("field tool", "no answer from modbus.read shown")
        else:
            fail("field tools", "no Modbus read form for an operator")
        errs = console_errors(d)
        ok("no browser console errors") if not errs else fail("browser console", errs[:3])
    finally:
        d.quit()
    # phone width
    d = driver(360, 780)
    try:
        if not login(d, key):
            return fail("phone login", "no navigation at 360 px")
        for page, ready, name in (("#/overview", ".card", "overview"),
                                  ("#/devices", "[data-device][data-health]", "devices"),
                                  ("#/device/boiler", "[data-channel] [data-field=value]", "device"),
                                  ("#/config", "#config-text", "config"),
                                  ("#/tools", "[data-tool]", "tools")):
            if not go(d, page, ready):
                fail(f"{name} page at 360 px", "did not show")
                continue
            time.sleep(0.6)  # let the first refresh fill the page before measuring it
            fits(d, f"{name} page")
            shot(d, f"{name}-phone")
    finally:
        d.quit()


def phase_viewer(key):
    d = driver()
    try:
        if not login(d, key):
            return fail("viewer login", "no navigation")
        go(d, "#/devices", "[data-device][data-health]")
        wait(lambda: css(d, "[data-device='boiler'][data-health]"))
        ctl = [e.get_attribute("aria-label") for e in css(d, "[aria-label^='Disable '], [aria-label^='Enable '], [aria-label^='Restart ']")]
        ok("viewer: no enable/disable/restart on devices") if not ctl else fail("viewer devices controls", ctl)
        go(d, "#/device/boiler", "[data-channel] [data-field=value]")
        wait(lambda: css(d, "[data-field=health]"))
        ctl = [e.get_attribute("aria-label") for e in css(d, "[aria-label^='Write '], [aria-label^='Value for '], [aria-label^='Disable '], [aria-label^='Enable ']")]
        ok("viewer: no write or disable on the device") if not ctl else fail("viewer device controls", ctl)
        go(d, "#/config", "#config-text")
        ctl = [e.get_attribute("aria-label") for e in css(d, "[aria-label='Apply configuration'], [aria-label='Roll back configuration']")]
        ok("viewer: no apply or roll back") if not ctl else fail("viewer config controls", ctl)
        forced = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/', {method: 'POST', headers: {'Content-Type': 'application/json',
                'Authorization': 'Bearer ' + sessionStorage.getItem('osgate.key')},
              body: JSON.stringify({jsonrpc: '2.0', id: 1, method: 'device.write',
                params: {device: 'boiler', channel: 'setpoint', value: 7}})})
              .then(async r => done({status: r.status, body: await r.text()}), e => done({status: 0, body: String(e)}));""")
        refused = forced["status"] in (401, 403) or '"error"' in forced["body"]
        ok(f"viewer's forced write refused ({forced['status']})") if refused else fail("forced write", forced)
        errs = console_errors(d, allowed=("status of 403", "status of 401"))
        ok("no browser console errors") if not errs else fail("browser console", errs[:3])
    finally:
        d.quit()


def phase_config(key, typo, good, new_device):
    d = driver()
    try:
        if not login(d, key):
            return fail("admin login", "no navigation")
        go(d, "#/config", "#config-text")
        text = css(d, "#config-text")[0]
        wait(lambda: text.get_attribute("value").startswith("{"))
        d.execute_script("arguments[0].value = arguments[1]", text, open(typo).read())
        css(d, "[aria-label='Apply configuration']")[0].click()
        errs = wait(lambda: css(d, "ul.errors li[data-path]"))
        if errs:
            paths = [e.get_attribute("data-path") + ": " + e.text for e in errs]
            ok(f"typo shown at its path: {paths}")
            ARGS.get("typo_path", "") in " ".join(paths) or fail("error path", f"{paths} lacks {ARGS.get('typo_path')}")
        else:
            fail("typo", "no error listed with its path")
        dialogs = css(d, "dialog[open]")
        ok("nothing applied (no confirmation offered)") if not dialogs else fail("typo", "a confirmation was offered")
        shot(d, "config-error-desktop")
        d.execute_script("arguments[0].value = arguments[1]", text, open(good).read())
        css(d, "[aria-label='Apply configuration']")[0].click()
        if not confirm(d):
            return fail("apply", "no confirmation for a good configuration")
        verdict = wait(lambda: (lambda e: e if e.get_attribute("data-ok") == "true" and "Applied" in e.text else None)(
            css(d, "[data-field=verdict]")[0]), 20)
        ok("good configuration applied") if verdict else fail("apply", css(d, "#config-result")[0].text)
        shot(d, "config-applied-desktop")
        go(d, "#/devices", "[data-device][data-health]")
        row = wait(lambda: css(d, f"[data-device='{new_device}'][data-health]"), 15)
        ok(f"new device {new_device} listed") if row else fail("new device", f"{new_device} not on the devices page")
    finally:
        d.quit()


def phase_uplink(key):
    d = driver()
    try:
        if not login(d, key):
            return fail("login", "no navigation")
        go(d, "#/overview", ".card")

        def state():
            el = css(d, "[data-field=uplink]")
            return (el[0].get_attribute("data-state"), el[0].text) if el else (None, "no uplink shown")

        if not wait(lambda: state()[0] == "up", 15):
            return fail("uplink up", state())
        ok("uplink up")
        shot(d, "overview-desktop")
        sys.stdin.readline()
        t0 = time.time()
        if wait(lambda: state()[0] == "down", 15):
            ok(f"uplink shown down {time.time() - t0:.1f} s after the cloud broker stopped: {state()[1]}")
        else:
            fail("uplink down", state())
        shot(d, "overview-uplink-down-desktop")
    finally:
        d.quit()


def phase_hold(key, device):
    d = driver()
    try:
        if not login(d, key):
            return fail("login", "no navigation")
        go(d, "#/device/" + device, "[data-channel] [data-field=value]")
        if not wait(lambda: [e for e in css(d, "[data-field=value]") if e.text not in ("", "—")], 20):
            return fail("hold", "no live value on the page")
        ok("ready")
        sys.stdin.read()
        print(f"FIG rows {len(css(d, '[data-channel]'))}", flush=True)
    finally:
        d.quit()


def phase_devices(key, count):
    d = driver()
    try:
        if not login(d, key):
            return fail("login", "no navigation")
        d.execute_script("""window.__long = 0; new PerformanceObserver(l => { for (const e of l.getEntries())
            window.__long = Math.max(window.__long, e.duration); }).observe({type: 'longtask', buffered: true});""")
        t0 = time.time()
        go(d, "#/devices", "[data-device][data-health]")
        if not wait(lambda: len(css(d, "[data-device][data-health]")) >= count, 30, 0.05):
            return fail("devices", f"{len(css(d, '[data-device][data-health]'))} rows, not {count}")
        print(f"FIG render_ms {(time.time() - t0) * 1000:.0f}", flush=True)
        filt = d.execute_script("""const i = document.getElementById('filter-name'); const t = performance.now();
            i.value = 'dev-99'; i.dispatchEvent(new Event('input')); document.body.offsetHeight;
            const ms = performance.now() - t; i.value = ''; i.dispatchEvent(new Event('input')); return ms;""")
        print(f"FIG filter_ms {filt:.1f}", flush=True)
        d.execute_script("window.__long = 0")
        time.sleep(10)
        print(f"FIG longest_task_ms {d.execute_script('return window.__long'):.0f}", flush=True)
    finally:
        d.quit()


try:
    if PHASE == "operator":
        phase_operator(ARGS["key"])
    elif PHASE == "viewer":
        phase_viewer(ARGS["key"])
    elif PHASE == "config":
        phase_config(ARGS["key"], ARGS["typo"], ARGS["good"], ARGS["new_device"])
    elif PHASE == "uplink":
        phase_uplink(ARGS["key"])
    elif PHASE == "hold":
        phase_hold(ARGS["key"], ARGS["device"])
    elif PHASE == "devices":
        phase_devices(ARGS["key"], int(ARGS["count"]))
    else:
        fail("phase", f"unknown phase {PHASE!r}")
except Exception as e:  # a driver failure is a test failure with its cause
    fail("driver", f"{type(e).__name__}: {e}")
print(json.dumps({"failed": FAILED}), flush=True)
sys.exit(1 if FAILED else 0)
