#!/usr/bin/env python3
"""The console in a real browser: Debian's headless Chromium driven by selenium (through
chromium-driver), against a running doppel node that tests/console.rs started and filled.

Usage: browser.py SCENARIO PARAMS_JSON

Scenarios: fleet, twin, rules, viewer, cluster. Each signs in, works the pages as a user would, asserts
what the page must show, and writes screenshots to PARAMS.shots. The device is the AWS IoT
Device SDK's MQTT client (awscrt) over plain TCP with the thing's token. Prints one JSON line
of figures and exits 0, or raises (exit 1) with what went wrong.
"""

import json
import sys
import time

import requests
from awscrt import io, mqtt
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

P = json.loads(sys.argv[2])
URL = P["url"]
FIGURES = {}


def until(what, check, timeout=10.0):
    """Polls `check` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (StaleElementReferenceException, NoAlertPresentException):
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what} (last: {last!r})")


class Browser:
    def __init__(self):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", "--lang=en-US", "--enable-precise-memory-info"]:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
        self.d = webdriver.Chrome(options=options, service=service)

    def css(self, selector):
        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector, timeout=10.0):
        return until(selector, lambda: (self.css(selector) or [None])[0], timeout)

    def text(self, selector):
        found = self.css(selector)
        return found[0].text if found else None

    def shot(self, name):
        self.d.save_screenshot(f"{P['shots']}/{name}.png")

    def go(self, hash_):
        self.d.get(f"{URL}/#/{hash_}")

    def signin(self, key):
        self.d.get(URL + "/")
        field = self.one("#key")
        field.clear()
        field.send_keys(key)
        self.one("#signin button").click()
        self.one("#whoami")

    def script_errors(self):
        """Errors the page's scripts raised (network 4xx answers the page expects are not)."""
        return [entry["message"] for entry in self.d.get_log("browser")
                if entry["level"] == "SEVERE" and entry.get("source") != "network"]

    def quit(self):
        errors = self.script_errors()
        self.d.quit()
        assert not errors, f"the page's scripts failed: {errors}"


def api(method, path, key=None, **kw):
    headers = {"Authorization": f"Bearer {key or P['admin']}"}
    headers.update(kw.pop("headers", {}))
    return requests.request(method, URL + path, headers=headers, timeout=10, **kw)


def metric(name):
    """The sum of a metric's samples in /metrics."""
    total = 0.0
    for line in api("GET", "/metrics").text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Device:
    """A device on the node's MQTT endpoint: the AWS IoT Device SDK's MQTT client."""

    def __init__(self, thing, token, addr=None):
        host, port = (addr or P["mqtt"]).rsplit(":", 1)
        elg = io.EventLoopGroup(1)
        bootstrap = io.ClientBootstrap(elg, io.DefaultHostResolver(elg))
        self.thing = thing
        self.received = []
        self.conn = mqtt.Connection(client=mqtt.Client(bootstrap, None), host_name=host, port=int(port),
                                    client_id=thing, clean_session=True, keep_alive_secs=30,
                                    username=thing, password=token)
        self.conn.connect().result(10)

    def subscribe(self, topic):
        def on(topic, payload, **_):
            self.received.append((topic, json.loads(payload)))
        future, _ = self.conn.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, on)
        future.result(10)

    def telemetry(self, sample):
        """A telemetry sample (the node merges it into reported and keeps its history)."""
        future, _ = self.conn.publish(f"things/{self.thing}/telemetry", json.dumps(sample), mqtt.QoS.AT_LEAST_ONCE)
        future.result(10)

    def close(self):
        self.conn.disconnect().result(10)


# -- scenarios ----------------------------------------------------------------------------------

def fleet(b):
    # A wrong key is refused on the sign-in form.
    b.d.get(URL + "/")
    b.one("#key").send_keys("dk_nope_nope")
    b.one("#signin button").click()
    assert "not valid" in b.one("#signin-error").text
    b.shot("signin")

    start = time.monotonic()
    b.signin(P["admin"])
    b.one("#fleet-list .vrow[data-thing]")
    FIGURES["first_rows_s"] = round(time.monotonic() - start, 3)
    count = P["count"]
    until("the fleet counts", lambda: b.one("#count-things").get_attribute("data-value") == str(count + P["extra"]))
    rendered = len(b.css("#fleet-list .vrow[data-thing]"))
    assert 0 < rendered <= 80, f"the list renders only the rows on screen, not {rendered}"
    assert b.css("#fleet-list .vrow[data-thing]")[0].get_attribute("data-thing") == P["first"]
    # The rows on screen show their live reported values (from the subscription's snapshot).
    until("live values of the first rows", lambda: "temp=" in b.text(f'#fleet-list .vrow[data-thing="{P["first"]}"] .live'))
    FIGURES["page_load_ms"] = b.d.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return Math.round(n.loadEventEnd - n.startTime);")
    b.shot("fleet")

    # Page through every thing by scrolling; the page holds one subscription all along, for
    # the rows on screen only.
    most_subs, most_watched, most_node_subs, scrolls, pauses = 0, 0, 0, 0, 0
    box = b.one("#fleet-list")
    scrolling = time.monotonic()
    while True:
        b.d.execute_script("arguments[0].scrollTop += arguments[0].clientHeight * 4;", box)
        scrolls += 1
        live = b.one("#live")
        most_subs = max(most_subs, int(live.get_attribute("data-subscriptions")))
        most_watched = max(most_watched, int(live.get_attribute("data-things")))
        if scrolls % 10 == 0:
            # Pause as a reader would: the rows on screen get their subscription.
            until("the rows on screen watched", lambda: b.one("#live").get_attribute("data-subscriptions") == "1"
                  and int(b.one("#live").get_attribute("data-things")) > 0)
            most_watched = max(most_watched, int(b.one("#live").get_attribute("data-things")))
            most_node_subs = max(most_node_subs, metric("doppel_ws_subscriptions"))
            pauses += 1
        loaded = int(box.get_attribute("data-loaded"))
        at_end = b.d.execute_script(
            "return arguments[0].scrollTop + arguments[0].clientHeight >= arguments[0].scrollHeight - 2;", box)
        if loaded == count + P["extra"] and box.get_attribute("data-more") == "false" and at_end:
            break
        assert scrolls < 2000, f"still scrolling after {scrolls} steps ({loaded} loaded)"
    FIGURES["scroll_to_end_s"] = round(time.monotonic() - scrolling, 1)
    last = P["last"]
    b.one(f'#fleet-list .vrow[data-thing="{last}"]')
    until("the last row's live value", lambda: "temp=" in b.text(f'#fleet-list .vrow[data-thing="{last}"] .live'))
    # One subscription for the rows on screen: the node holds exactly it once scrolling stops.
    until("one subscription on the node", lambda: metric("doppel_ws_subscriptions") == 1)
    watched = int(b.one("#live").get_attribute("data-things"))
    rendered = len(b.css("#fleet-list .vrow[data-thing]"))
    assert most_subs <= 1, f"the page held {most_subs} subscriptions at once"
    assert most_node_subs == 1, f"the node held {most_node_subs} subscriptions for the page"
    assert b.one("#live").get_attribute("data-subscriptions") == "1"
    assert 0 < watched <= rendered, f"{watched} things watched for {rendered} rows"
    assert most_watched <= 80, f"at most the rows on screen are watched, not {most_watched}"
    FIGURES.update(scrolls=scrolls, pauses=pauses, subscriptions_max=most_subs, things_watched_max=most_watched,
                   node_subscriptions_max=most_node_subs,
                   js_heap_mb=round(b.d.execute_script("return performance.memory.usedJSHeapSize") / 1e6, 1),
                   dom_nodes=b.d.execute_script("return document.getElementsByTagName('*').length"))
    # A change to a thing on screen shows up in its row.
    device = Device(last, P["last_token"])
    until("the row shows the device connected", lambda: "connected" == b.text(f'#fleet-list .vrow[data-thing="{last}"] .conn'))
    device.telemetry({"temp": 99})
    until("the row's new value", lambda: "temp=99" in b.text(f'#fleet-list .vrow[data-thing="{last}"] .live'))
    b.shot("fleet-end")

    # A reload (the key stays with the tab): time to the first rows and to the counts.
    start = time.monotonic()
    b.d.refresh()
    b.one("#fleet-list .vrow[data-thing]")
    FIGURES["reload_to_rows_ms"] = round((time.monotonic() - start) * 1000)
    until("the counts after reload", lambda: b.css("#count-things"))
    FIGURES["reload_to_counts_ms"] = round((time.monotonic() - start) * 1000)

    # Server-side search: name prefix, type, connected.
    prefix = b.one("#filter-prefix")
    prefix.send_keys(P["prefix"])
    until("the prefix search", lambda: b.one("#fleet-list").get_attribute("data-loaded") == str(P["prefix_count"])
          and b.one("#fleet-list").get_attribute("data-loading") == "false")
    assert all(r.get_attribute("data-thing").startswith(P["prefix"]) for r in b.css("#fleet-list .vrow[data-thing]"))
    b.shot("fleet-search")
    prefix.send_keys(Keys.CONTROL, "a")
    prefix.send_keys(Keys.DELETE)
    b.d.execute_script("arguments[0].value = 'true'; arguments[0].dispatchEvent(new Event('change'));",
                       b.one("#filter-connected"))
    until("only the connected device", lambda: [r.get_attribute("data-thing") for r in b.css("#fleet-list .vrow[data-thing]")] == [last])
    device.close()


def twin(b):
    thing = P["thing"]
    device = Device(thing, P["token"])
    device.subscribe(f"$aws/things/{thing}/shadow/update/delta")
    b.signin(P["admin"])
    b.go(f"things/{thing}")
    until("the reported state", lambda: '"temp"' in b.text("#reported"))
    until("a telemetry chart", lambda: int(b.one("#chart-temp").get_attribute("data-points")) > 0)
    points = int(b.one("#chart-temp").get_attribute("data-points"))

    # A device publishes; the page shows it within a second. Three tries, so that one stall
    # of a loaded machine does not decide; a page that polls instead of streaming fails all.
    latencies = []
    for attempt in range(3):
        value = 40 + attempt
        start = time.monotonic()
        device.telemetry({"temp": value, "humidity": 50})
        try:
            until(f"temp {value} on the page", lambda: f'"temp": {value}' in b.text("#reported"), timeout=1.0)
            latencies.append(round(time.monotonic() - start, 3))
            break
        except AssertionError:
            latencies.append(None)
    FIGURES["report_to_page_s"] = latencies
    assert latencies[-1] is not None, f"the page did not show a report within a second: {latencies}"
    until("the live point on the chart", lambda: int(b.one("#chart-temp").get_attribute("data-points")) > points)
    b.shot("twin")

    # Editing desired sends the device a delta.
    b.one("#edit-desired").click()
    editor = b.one("#desired-editor")
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys('{"color": "blue", "rate": 5}')
    b.one("#save-desired").click()
    delta = until("the delta on the device", lambda: next((m for t, m in device.received if "color" in m.get("state", {})), None))
    assert delta["state"] == {"color": "blue", "rate": 5}, delta
    until("the delta on the page", lambda: '"color": "blue"' in b.text("#delta"))
    assert api("GET", f"/v1/things/{thing}/shadow").json()["state"]["desired"] == {"color": "blue", "rate": 5}

    # A stale edit: someone changes desired while the page edits it.
    b.one("#edit-desired").click()
    editor = b.one("#desired-editor")
    r = api("PATCH", f"/v1/things/{thing}/shadow", json={"state": {"desired": {"color": "green"}}})
    assert r.status_code == 200, r.text
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys('{"color": "red", "rate": 5}')
    b.one("#save-desired").click()
    b.one("#conflict")
    assert '"green"' in b.text("#conflict-theirs") and '"red"' in b.text("#conflict-mine")
    b.shot("twin-conflict")
    desired = api("GET", f"/v1/things/{thing}/shadow").json()["state"]["desired"]
    assert desired["color"] == "green", f"the stale edit changed nothing: {desired}"
    b.one("#conflict-overwrite").click()
    until("mine saved", lambda: not b.css("#conflict") and '"red"' in (b.text("#desired") or ""))
    assert api("GET", f"/v1/things/{thing}/shadow").json()["state"]["desired"]["color"] == "red"

    # Named shadows open from the same page.
    device.conn.publish(f"$aws/things/{thing}/shadow/name/config/update",
                        json.dumps({"state": {"reported": {"mode": "eco"}}}), mqtt.QoS.AT_LEAST_ONCE)[0].result(10)
    b.one("#shadow-input").send_keys("config")
    b.one("#open-shadow").click()
    until("the named shadow", lambda: '"eco"' in b.text("#reported"))

    # Alerts and jobs of this twin (the node raised one from the rule deployed by the harness).
    b.go(f"things/{thing}")
    until("the twin's alert", lambda: b.css("#twin-alerts") and "Hot" in b.text("#twin-alerts"))
    until("the twin's job execution", lambda: b.css("#twin-jobs") and "fw-7" in b.text("#twin-jobs"))
    until("the twin's certificate", lambda: b.css("#twin-certs") and "active" in b.text("#twin-certs"))
    b.d.execute_script("document.getElementById('twin-jobs').scrollIntoView()")
    b.shot("twin-lists")
    device.close()


BROKEN = """// Line 1
rule hot for type Sensor {
  when exists(telemetry.temp) and telemetry.temp > 30
  then { alert Hot severity major "too hot" nonsense }
}
"""


def rules(b):
    b.signin(P["admin"])
    b.go("rules")
    editor = b.one("#rule-editor .cm-content")
    # A broken source shows its diagnostic on line 4, in the editor and in the list.
    b.d.execute_script("const v = document.getElementById('rule-editor').cmView;"
                       "v.dispatch({changes: {from: 0, to: v.state.doc.length, insert: arguments[0]}});", BROKEN)
    diag = b.one('#diagnostics .diag[data-line="4"]')
    assert "error" in diag.text, diag.text
    mark = b.one(".cm-lintRange-error")
    line_of_mark = b.d.execute_script(
        "const v = document.getElementById('rule-editor').cmView;"
        "return v.state.doc.lineAt(v.posAtDOM(arguments[0])).number;", mark)
    assert line_of_mark == 4, f"the error is marked on line {line_of_mark}"
    b.shot("rules-diagnostic")

    # As you type: typing a new broken line adds a diagnostic on that line.
    b.d.execute_script("const v = document.getElementById('rule-editor').cmView;"
                       "v.dispatch({changes: {from: 0, to: v.state.doc.length, insert: arguments[0]}});", P["source"])
    until("no errors", lambda: b.one("#diagnostics").get_attribute("data-errors") == "0")
    editor.click()
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys(Keys.ENTER, "rule x for type Nope")
    lines = P["source"].count("\n") + 2  # the line typed after the last
    until("a diagnostic on the typed line", lambda: b.css(f'#diagnostics .diag[data-line="{lines}"]'))
    editor.send_keys(*([Keys.BACKSPACE] * len("rule x for type Nope")))
    until("no errors again", lambda: b.one("#diagnostics").get_attribute("data-errors") == "0")

    # The source's own tests, then deploy.
    b.one("#run-tests").click()
    assert b.one("#test-results").get_attribute("data-passed") == "true"
    b.one("#deploy").click()
    until("deployed", lambda: "Deployed" in (b.text("#rule-status") or ""))
    until("listed", lambda: "hot" in b.text("#rule-list"))
    assert api("GET", "/v1/rules/hot").status_code == 200
    b.shot("rules")

    # Dry-run the deployed rule against a twin's recorded telemetry.
    b.go("rules/hot")
    b.one("#dryrun-thing").send_keys(P["thing"])
    b.one("#dryrun").click()
    result = b.one("#dryrun-result").text
    assert "samples replayed" in result and "alert" in result, result
    b.shot("rules-dryrun")

    # The rule fires on a report; the alerts page shows it live.
    b.go("alerts")
    b.one("#alerts")
    device = Device(P["thing"], P["token"])
    device.telemetry({"temp": 35})
    until("the firing alert", lambda: b.css("#alerts-firing") and P["thing"] in b.text("#alerts-firing"), timeout=15)
    b.shot("alerts")
    # It resolves when the temperature falls; filtered to resolved, only that entry is left.
    device.telemetry({"temp": 20})
    until("the alert resolved", lambda: not b.css("#alerts-firing") and "resolved" in b.text("#alerts-history"), timeout=15)
    b.d.execute_script("arguments[0].value = 'resolved'; arguments[0].dispatchEvent(new Event('change'));",
                       b.one("#alerts-state"))
    until("only resolved entries", lambda: [r.text for r in b.css("#alerts-history tr[data-thing]")] != []
          and all("resolved" in r.text for r in b.css("#alerts-history tr[data-thing]")))
    b.shot("alerts-resolved")
    device.close()

    b.go("node")
    until("node figures", lambda: b.text("#stat-mqtt") not in (None, "—") and b.text("#stat-rss") not in (None, "—"))
    until("a second scrape", lambda: b.text("#stat-msgs") not in (None, "—"), timeout=6)
    b.shot("node")

    # Delete the rule (after the browser's confirmation).
    b.go("rules/hot")
    b.one("#delete-rule").click()
    until("the confirmation", lambda: b.d.switch_to.alert).accept()
    until("the rule gone", lambda: "hot" not in b.text("#rule-list") and api("GET", "/v1/rules/hot").status_code == 404)


def viewer(b):
    b.signin(P["viewer"])
    assert b.one("#whoami").get_attribute("data-role") == "viewer"
    b.go(f"things/{P['thing']}")
    until("the reported state", lambda: '"temp"' in (b.text("#reported") or ""))
    assert not b.css("#edit-desired"), "a viewer sees no edit control"
    b.shot("viewer-twin")
    b.go("rules/hot")
    b.one("#rule-editor .cm-content")
    until("the rule", lambda: "rule hot" in b.text("#rule-editor"))
    assert b.one("#rule-editor .cm-content").get_attribute("contenteditable") == "false"
    for control in ["#deploy", "#delete-rule", "#new-rule"]:
        assert not b.css(control), f"a viewer sees no {control}"
    b.shot("viewer-rules")
    b.one("#signout").click()
    b.one("#key")

    # A key scoped to a device type sees only things of that type.
    b.signin(P["scoped"])
    until("the scoped counts", lambda: b.one("#count-things").get_attribute("data-value") == str(P["scoped_count"]))
    names = [r.get_attribute("data-thing") for r in b.css("#fleet-list .vrow[data-thing]")]
    assert names and all(n.startswith(P["scoped_prefix"]) for n in names), names
    b.shot("viewer-scoped-fleet")


def cluster(b):
    """The console on node b: the node page lists both nodes and their shards; a twin whose
    device and owner are on node a is live on b's twin page."""
    b.signin(P["admin"])
    b.go("node")
    table = b.one("#cluster-nodes")
    until("both nodes", lambda: all(f"\n{n} " in "\n" + b.text("#cluster-nodes") for n in P["nodes"]))
    counts = [int(row.find_elements(By.TAG_NAME, "td")[2].text) for row in table.find_elements(By.CSS_SELECTOR, "tr")[1:]]
    cluster_doc = api("GET", "/v1/cluster").json()
    assert sum(counts) == len(cluster_doc["shards"]), f"shard counts {counts} of {len(cluster_doc['shards'])}"
    assert all(c > 0 for c in counts), counts
    b.shot("node-cluster")
    thing = P["thing"]
    b.go(f"things/{thing}")
    until("the reported state", lambda: '"temp": 21' in (b.text("#reported") or ""))
    device = Device(thing, P["token"], P["device_mqtt"])
    device.telemetry({"temp": 55})
    until("the report through the other node", lambda: '"temp": 55' in b.text("#reported"), timeout=5)
    b.shot("twin-cluster")
    device.close()


def main():
    scenario = {"fleet": fleet, "twin": twin, "rules": rules, "viewer": viewer, "cluster": cluster}[sys.argv[1]]
    b = Browser()
    try:
        scenario(b)
    except BaseException:
        b.shot(f"{sys.argv[1]}-failure")
        raise
    finally:
        b.quit()
    print(json.dumps(FIGURES))


if __name__ == "__main__":
    main()
