// Small page helpers: CSRF header for HTMX requests, confirm on dangerous forms,
// local time for timestamps, and a live "time left" countdown.
(function () {
  "use strict";
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });
  function fmtLeft(ms) {
    if (ms <= 0) return "closed";
    var s = Math.floor(ms / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + " d " + h + " h left";
    if (h > 0) return h + " h " + m + " min left";
    return m + " min " + (s % 60) + " s left";
  }
  function tick() {
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-deadline"));
      if (!isNaN(t)) el.textContent = fmtLeft(t - Date.now());
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) el.title = d.toLocaleString();
    });
    tick();
    setInterval(tick, 1000);
  });
})();
