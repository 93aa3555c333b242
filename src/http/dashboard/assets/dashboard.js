// jobwarden's dashboard: live updates. The pages are complete without this file; it asks
// /live/<same page> every few seconds while the tab is visible and swaps in the regions that
// changed. It keeps one timer and one ETag, nothing that grows, so a tab can stay open for
// days; the server keeps nothing per tab at all.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  var MAX_BACKOFF_MS = 60000;
  var REQUEST_TIMEOUT_MS = 10000;
  var status = document.getElementById("live-status");
  var etag = null;
  var timer = null;
  var failures = 0;

  function say(state, text) {
    if (!status) return;
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  }

  // A reader selecting text (a log line, an id) keeps it: that region waits for the next news.
  function selecting(region) {
    var selection = window.getSelection && window.getSelection();
    return !!selection && !selection.isCollapsed && region.contains(selection.anchorNode);
  }

  function apply(regions) {
    Object.keys(regions).forEach(function (name) {
      var region = document.querySelector('[data-live="' + name + '"]');
      if (region && !selecting(region)) {
        region.innerHTML = regions[name];
      }
    });
  }

  function tick() {
    if (document.visibilityState !== "visible") {
      return; // visibilitychange starts again
    }
    var headers = { Accept: "application/json" };
    if (etag) {
      headers["If-None-Match"] = etag;
    }
    var abort = new AbortController();
    var deadline = setTimeout(function () { abort.abort(); }, REQUEST_TIMEOUT_MS);
    fetch("/live" + location.pathname + location.search, {
      headers: headers,
      credentials: "same-origin",
      cache: "no-store",
      signal: abort.signal
    })
      .then(function (response) {
        if (response.status === 304) {
          return null;
        }
        if (response.status === 401) {
          throw new Error("the read token is needed again: reload the page");
        }
        if (!response.ok) {
          throw new Error("the server answered " + response.status);
        }
        etag = response.headers.get("ETag");
        return response.json();
      })
      .then(function (page) {
        clearTimeout(deadline);
        if (page && page.regions) {
          apply(page.regions);
        }
        failures = 0;
        say("live", "live · " + new Date().toLocaleTimeString());
        schedule(EVERY_MS);
      })
      .catch(function (error) {
        clearTimeout(deadline);
        failures += 1;
        var wait = Math.min(EVERY_MS * Math.pow(2, failures), MAX_BACKOFF_MS);
        say("paused", "live updates paused (" + (error && error.message ? error.message : error) +
          "); trying again in " + Math.round(wait / 1000) + " s");
        schedule(wait);
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      schedule(0);
    }
  });
  say("live", "live");
  schedule(EVERY_MS);
})();
