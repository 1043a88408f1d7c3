/* Postback's tracker for landing pages (docs/tracker.md): keeps the ad click ids in first-party cookies,
   sends events to POST /v1/track, rewrites Telegram links to /track/invite. No dependencies; never throws. */
(function (w, d) {
  "use strict";
  // URL parameter -> the /v1/track field (and _pb_<field> cookie) it goes in; fbclid becomes Meta's _fbc.
  // tests/test_tracker_script.py keeps this list equal to the click ids the server's platforms declare.
  var CLICKS = {"gclid": "gclid", "gbraid": "gbraid", "wbraid": "wbraid", "ttclid": "ttclid", "ScCid": "sccid", "sccid": "sccid"};
  var DAYS90 = 7776000, UTM = "_pb_utm", PREFIX = "_pb_";
  var script = d.currentScript || d.querySelector("script[data-site][src*='postback.js']");
  if (!script) return;
  var base = script.src.replace(/\/static\/postback\.js.*$/, "");
  var site = script.getAttribute("data-site"), key = script.getAttribute("data-key");
  var granted = script.getAttribute("data-consent") !== "denied";
  var domain = null;  // the widest domain of the page's host that takes a cookie, found once

  function now() { return Date.now(); }

  function cookie(name) {
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : undefined;
  }

  function write(name, value, maxAge, at) {
    d.cookie = name + "=" + encodeURIComponent(value) + "; Path=/; SameSite=Lax"
      + (maxAge === null ? "" : "; Max-Age=" + maxAge) + (at ? "; Domain=" + at : "")
      + (location.protocol === "https:" ? "; Secure" : "");
  }

  // Like Meta's pixel: on the widest domain that takes it (shop.example for www.shop.example), so the
  // landing page and the checkout on another subdomain share it; a host that is an IP address gets it alone.
  function keep(name, value, maxAge) {
    if (!granted) return;
    if (domain === null) {
      var parts = location.hostname.split("."), i;
      domain = "";
      if (!/^[\d.]+$|:/.test(location.hostname)) {
        for (i = parts.length - 2; i > 0; i--) {
          var at = parts.slice(i).join(".");
          write(name, value, maxAge, at);
          if (cookie(name) === value) { domain = at; return; }
        }
      }
    }
    write(name, value, maxAge, domain);
  }

  function drop(name) { write(name, "", 0, domain || ""); write(name, "", 0, ""); }

  function random() { return Math.floor(Math.random() * 9e9) + 1e9; }

  function newId() {
    try { if (w.crypto && crypto.randomUUID) return crypto.randomUUID(); } catch (e) { /* an http: page */ }
    return "pb-" + now().toString(36) + "-" + random().toString(36) + random().toString(36);
  }

  // https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/: the click's
  // time, kept while the same fbclid comes back, so a reload or a second page never moves it.
  function capture() {
    var q = new URLSearchParams(location.search), utm = [], p, v;
    v = q.get("fbclid");
    var fbc = cookie("_fbc");
    if (v && !(fbc && fbc.slice(-v.length - 1) === "." + v)) keep("_fbc", "fb.1." + now() + "." + v, DAYS90);
    if (!cookie("_fbp")) keep("_fbp", "fb.1." + now() + "." + random(), DAYS90);
    for (p in CLICKS) if ((v = q.get(p))) keep(PREFIX + CLICKS[p], v, DAYS90);
    q.forEach(function (value, name) { if (name.indexOf("utm_") === 0) utm.push(name + "=" + encodeURIComponent(value)); });
    if (utm.length) keep(UTM, utm.join("&"), null);
  }

  function kept() {
    var out = {}, p, v;
    if (!granted) return out;
    if ((v = cookie("_fbc"))) out.fbc = v;
    if ((v = cookie("_fbp"))) out.fbp = v;
    for (p in CLICKS) if ((v = cookie(PREFIX + CLICKS[p]))) out[CLICKS[p]] = v;
    new URLSearchParams(cookie(UTM) || "").forEach(function (value, name) { out[name] = value; });
    return out;
  }

  function post(path, body, credentials) {
    return fetch(base + path, {method: "POST", keepalive: true, credentials: credentials || "omit",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body)});  // text/plain: no preflight
  }

  function track(name, fields) {
    var body = kept(), eventId, p;
    try {
      for (p in fields || {}) body[p] = fields[p];
      eventId = body.event_id = body.event_id || newId();
      body.api_key = key; body.event = name; body.source_url = body.source_url || location.href;
      if (!granted) body.consent = false;
      return post("/v1/track", body).then(function (r) {
        return {eventId: eventId, ok: r.ok, status: r.status};
      }, function () {
        return {eventId: eventId, ok: beacon(body)};
      });
    } catch (e) {
      return Promise.resolve({eventId: eventId, ok: beacon(body)});
    }
  }

  function beacon(body) {
    try {
      return !!(navigator.sendBeacon && navigator.sendBeacon(base + "/v1/track",
        new Blob([JSON.stringify(body)], {type: "text/plain"})));
    } catch (e) { return false; }
  }

  // <a href="https://t.me/…" data-postback-channel="vip">: to this visitor's own invite link.
  function rewrite(tempId) {
    var links = d.querySelectorAll("a[data-postback-channel]"), i;
    for (i = 0; i < links.length; i++) {
      links[i].href = base + "/track/invite?site=" + encodeURIComponent(site)
        + "&channel=" + encodeURIComponent(links[i].getAttribute("data-postback-channel"))
        + (key ? "&key=" + encodeURIComponent(key) : "") + (tempId ? "&tempId=" + encodeURIComponent(tempId) : "");
    }
  }

  function telegram() {
    if (!granted || !d.querySelector("a[data-postback-channel]")) return;
    rewrite(null);  // the links work at once; once /track/init answers they also name the visitor
    var ids = kept(), body = {site: site, key: key || undefined, href: location.href,
      referrer: d.referrer || undefined, fbc: ids.fbc, fbp: ids.fbp};
    post("/track/init", body, "include")
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (visit) { if (visit) rewrite(visit.tempId); })["catch"](function () {});
  }

  function consent(given) {
    granted = given !== false;
    if (granted) { capture(); return; }
    for (var p in CLICKS) drop(PREFIX + CLICKS[p]);
    drop(UTM);
  }

  var queued = w.postback;
  w.postback = {track: track, consent: consent, version: 1};
  try {
    if (granted) capture();
    if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", telegram); else telegram();
    // Calls made before this script arrived: window.postback = window.postback || []; postback.push(["track", …]).
    if (queued && queued.length) for (var i = 0; i < queued.length; i++) w.postback[queued[i][0]].apply(null, queued[i].slice(1));
  } catch (e) { /* tracking never breaks the page */ }
})(window, document);
