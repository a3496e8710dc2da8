/* Moorage UI: copy buttons and the two charts.  No inline scripts (the pages' CSP forbids them). */
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-HTTP registries on a LAN are not a "secure context": fall back to a selection.
    return new Promise(function (resolve, reject) {
      var ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.style.position = "fixed";
      ta.style.opacity = "0";
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand("copy") ? resolve() : reject(new Error("copy refused")); }
      catch (e) { reject(e); }
      finally { document.body.removeChild(ta); }
    });
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest("button.copy");
    if (!btn) return;
    var text = btn.getAttribute("data-copy") || "";
    var label = btn.textContent;
    copyText(text).then(function () {
      btn.textContent = "Copied";
      btn.classList.add("done");
    }, function () {
      btn.textContent = "Select & copy";
    }).finally(function () {
      setTimeout(function () { btn.textContent = label; btn.classList.remove("done"); }, 1500);
    });
  });

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
  }

  var palette = ["#2f6fdb", "#1a9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#5b8fb9", "#999999"];

  function storageChart(el) {
    fetch("/ui/stats/storage.json", {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (d) {
      var sets = d.ranks.map(function (rank, i) {
        return {label: "rank " + (i + 1), data: rank.data, names: rank.names,
                backgroundColor: palette[i % palette.length], borderWidth: 0};
      });
      new Chart(el, {
        type: "bar",
        data: {labels: d.labels, datasets: sets},
        options: {
          responsive: true, maintainAspectRatio: false, indexAxis: "y", animation: false,
          plugins: {legend: {display: false},
                    tooltip: {callbacks: {label: function (c) {
                      return (c.dataset.names[c.dataIndex] || "") + ": " + human(c.raw);
                    }}}},
          scales: {x: {stacked: true, ticks: {color: css("--muted"), callback: function (v) { return human(v); }},
                       grid: {color: css("--grid")}},
                   y: {stacked: true, ticks: {color: css("--fg")}, grid: {display: false}}}
        }
      });
    });
  }

  function activityChart(el) {
    fetch("/ui/stats/activity.json", {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (d) {
      var labels = d.hours.map(function (t) {
        var dt = new Date(t * 1000);
        return dt.toLocaleDateString(undefined, {month: "short", day: "numeric"}) + " " +
               String(dt.getHours()).padStart(2, "0") + ":00";
      });
      // Bars, not a line: activity comes in bursts, and a line through 168 mostly-empty
      // hours turns one busy hour into a needle at the edge.
      new Chart(el, {
        type: "bar",
        data: {labels: labels, datasets: [
          {label: "pushes", data: d.pushes, backgroundColor: palette[2], borderWidth: 0, barPercentage: 1, categoryPercentage: 0.9},
          {label: "pulls", data: d.pulls, backgroundColor: palette[0], borderWidth: 0, barPercentage: 1, categoryPercentage: 0.9}
        ]},
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          interaction: {mode: "index", intersect: false},
          plugins: {legend: {labels: {color: css("--fg")}}},
          scales: {x: {stacked: true, ticks: {color: css("--muted"), maxTicksLimit: 8, maxRotation: 0}, grid: {display: false}},
                   y: {stacked: true, beginAtZero: true, ticks: {color: css("--muted"), precision: 0}, grid: {color: css("--grid")}}}
        }
      });
    });
  }

  function draw() {
    var s = document.getElementById("storage-chart");
    if (s) storageChart(s);
    var a = document.getElementById("activity-chart");
    if (a) activityChart(a);
  }

  function init() {
    if (typeof Chart === "undefined") return;
    draw();
    // Chart colours come from the CSS variables: redraw when the system switches light/dark.
    if (window.matchMedia) {
      window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
        Object.values(Chart.instances).forEach(function (c) { c.destroy(); });
        draw();
      });
    }
  }

  // Deferred scripts all run before DOMContentLoaded: by then chart.umd.min.js (loaded after
  // this file on the statistics page) has defined Chart.
  if (document.readyState === "complete") init();
  else document.addEventListener("DOMContentLoaded", init);
})();
