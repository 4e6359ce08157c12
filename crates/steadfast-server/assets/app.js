// Steadfast dashboard: shows times in UTC (as the server renders them) or
// in the browser's zone, remembered per browser. Everything else works
// without this script.
(function () {
  "use strict";
  var KEY = "steadfast.times";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function local(date) {
    var offset = -date.getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    var abs = Math.abs(offset);
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) +
      " UTC" + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
  }

  function show(root) {
    var mode = localStorage.getItem(KEY) || "utc";
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (!el.dataset.utc) { el.dataset.utc = el.textContent; }
      el.textContent = mode === "local" ? local(new Date(el.getAttribute("datetime"))) : el.dataset.utc;
    });
    var toggle = document.getElementById("time-toggle");
    if (toggle) {
      toggle.hidden = false;
      toggle.textContent = mode === "local" ? "Show times in UTC" : "Show local times";
      toggle.setAttribute("aria-pressed", mode === "local" ? "true" : "false");
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("time-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        var mode = localStorage.getItem(KEY) === "local" ? "utc" : "local";
        localStorage.setItem(KEY, mode);
        show(document);
      });
    }
    show(document);
  });
  // Live parts replaced by htmx keep the chosen zone.
  document.addEventListener("htmx:afterSwap", function (event) { show(event.target); });
})();
