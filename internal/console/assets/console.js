// LLM Proxy console: the copy button and the usage charts (uPlot). Pages
// work without it; an htmx swap of the usage panel redraws the charts.
(function () {
  "use strict";
  var palette = ["#0b4f8a", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#be185d", "#4b5563"];

  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy]");
    if (!b) return;
    var input = document.getElementById(b.getAttribute("data-copy"));
    var status = document.getElementById("copy-status");
    var done = function () { if (status) status.textContent = "Copied to the clipboard."; };
    var fallback = function () {
      input.select();
      if (document.execCommand("copy")) done();
      else if (status) status.textContent = "Select the token and copy it.";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, fallback);
    } else {
      fallback();
    }
  });

  var charts = [];
  var observer = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(function (entries) {
    entries.forEach(function (e) {
      var c = charts.filter(function (c) { return c.root.parentNode === e.target; })[0];
      var w = Math.max(200, Math.floor(e.contentRect.width));
      if (c && c.width !== w) c.setSize({ width: w, height: 240 });
    });
  });

  function draw() {
    var el = document.getElementById("usage-data");
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    if (observer) observer.disconnect();
    if (!el || typeof uPlot === "undefined") return;
    var data = JSON.parse(el.getAttribute("data-chart"));
    var hourly = data.x.length > 1 && data.x[1] - data.x[0] < 86400;
    [["chart-requests", "requests"], ["chart-tokens", "tokens"]].forEach(function (spec) {
      var target = document.getElementById(spec[0]);
      if (!target) return;
      var series = [{}], values = [data.x];
      data.series.forEach(function (s, i) {
        series.push({ label: s.label, stroke: palette[i % palette.length], width: 2, points: { show: data.x.length < 40 } });
        values.push(s[spec[1]]);
      });
      var opts = {
        width: Math.max(200, target.clientWidth), height: 240,
        series: series,
        scales: { x: { time: true } },
        axes: [{ values: hourly ? "{HH}:{mm}" : "{MMM} {D}" }, { size: 60 }],
        legend: { live: true },
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }
      };
      target.textContent = "";
      charts.push(new uPlot(opts, values, target));
      if (observer) observer.observe(target);
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  // htmx:load fires on the content an htmx swap inserted (the usage panel).
  document.addEventListener("htmx:load", function (e) {
    if (e.target.id === "usage-panel") draw();
  });
})();
