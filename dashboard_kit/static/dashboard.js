// Overview: the shell is already on screen; fill the cards and charts from the JSON API.
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  var period = params.get("period") || "30d";
  var select = document.getElementById("period");
  select.value = period;
  select.addEventListener("change", function () {
    params.set("period", select.value);
    location.search = params.toString(); // the view lives in the URL: shareable, reloadable
  });

  function fmtInt(n) { return Math.round(n).toLocaleString(); }
  function fmtMoney(minor, currency) {
    var digits = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"].indexOf(currency) >= 0 ? 0 : 2;
    return (minor / Math.pow(10, digits)).toLocaleString(undefined, { style: "currency", currency: currency });
  }
  function fmtDuration(seconds) {
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
    return h > 0 ? h + " h " + m + " min" : m + " min " + Math.round(seconds % 60) + " s";
  }
  function setCard(name, text) {
    document.querySelector('[data-card="' + name + '"] .value').textContent = text;
  }
  function lineChart(el, points, label) {
    var w = 600, h = 180, pad = 28;
    var max = Math.max(1, Math.max.apply(null, points.map(function (p) { return p.value; })));
    var step = points.length > 1 ? (w - 2 * pad) / (points.length - 1) : 0;
    var d = points.map(function (p, i) {
      var x = pad + i * step, y = h - pad - (p.value / max) * (h - 2 * pad);
      return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    }).join(" ");
    var first = points.length ? points[0].day : "", last = points.length ? points[points.length - 1].day : "";
    el.innerHTML =
      '<svg viewBox="0 0 ' + w + " " + h + '" preserveAspectRatio="none">' +
      '<line class="axis" x1="' + pad + '" y1="' + (h - pad) + '" x2="' + (w - pad) + '" y2="' + (h - pad) + '"/>' +
      '<path class="series" d="' + d + '"/>' +
      '<text x="' + pad + '" y="' + (h - 8) + '">' + first + "</text>" +
      '<text x="' + (w - pad) + '" y="' + (h - 8) + '" text-anchor="end">' + last + "</text>" +
      '<text x="' + pad + '" y="14">max ' + label(max) + "</text></svg>";
    el.setAttribute("aria-label", el.getAttribute("aria-label") + ": " + points.length + " days, peak " + label(max));
  }

  fetch("api/overview?period=" + encodeURIComponent(period), { headers: { Accept: "application/json" } })
    .then(function (r) {
      if (!r.ok) throw new Error(r.status === 403 ? "You are not allowed to see these analytics." : "The analytics backend did not answer (" + r.status + ").");
      return r.json();
    })
    .then(function (data) {
      var c = data.cards, currencies = Object.keys(c.revenue_minor);
      setCard("views", fmtInt(c.views));
      setCard("purchases", fmtInt(c.purchases));
      setCard("watch_time", fmtDuration(c.watch_time_seconds));
      setCard("revenue", currencies.length ? currencies.map(function (cur) { return fmtMoney(c.revenue_minor[cur], cur); }).join(" · ") : "—");
      lineChart(document.querySelector('[data-chart="views_per_day"] .chart'), data.series.views_per_day, fmtInt);
      var main = currencies[0];
      var rev = main ? data.series.revenue_per_day[main] : [];
      lineChart(document.querySelector('[data-chart="revenue_per_day"] .chart'), rev || [], function (v) { return main ? fmtMoney(v, main) : "0"; });
      if (!c.views && !c.purchases) document.getElementById("status").textContent = "No data yet for this period.";
    })
    .catch(function (err) { document.getElementById("status").textContent = err.message; });
})();
