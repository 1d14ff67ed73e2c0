// The dashboard: the shell is already on screen; every card fetches its own JSON in parallel
// and draws itself (small hand-written SVG, no library). The view lives in the URL.
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  var FILTERS = ["period", "from", "to", "content_type", "country", "device", "authenticated"];
  var item = document.body.getAttribute("data-item");
  var PAGE = 10;

  // --- filters: read from the URL, written back to it ----------------------------------
  var form = document.getElementById("filters");
  FILTERS.forEach(function (name) {
    var field = form.elements[name];
    if (field && params.get(name)) field.value = params.get(name);
  });
  function customShown() { form.classList.toggle("is-custom", form.elements.period.value === "custom"); }
  customShown();
  form.elements.period.addEventListener("change", function () {
    customShown();
    if (form.elements.period.value !== "custom") form.requestSubmit();
  });
  ["content_type", "device", "authenticated"].forEach(function (name) {
    form.elements[name].addEventListener("change", function () { form.requestSubmit(); });
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var next = new URLSearchParams();
    FILTERS.forEach(function (name) {
      var value = (form.elements[name].value || "").trim();
      if (name === "country") value = value.toUpperCase();
      if ((name === "from" || name === "to") && form.elements.period.value !== "custom") value = "";
      if (value && !(name === "period" && value === "30d")) next.set(name, value);
    });
    var text = next.toString();
    location.search = text ? "?" + text : ""; // a full reload: shareable, reloadable
  });
  var query = new URLSearchParams();
  FILTERS.forEach(function (name) { if (params.get(name)) query.set(name, params.get(name)); });
  var qs = query.toString();
  // Links keep the filters: sections, CSV and ZIP downloads.
  document.querySelectorAll("[data-nav], [data-export], [data-export-zip]").forEach(function (a) {
    var extra = new URLSearchParams(query);
    if (item && !a.hasAttribute("data-nav")) extra.set("item", item);
    var s = extra.toString();
    if (s) a.setAttribute("href", a.getAttribute("href") + "?" + s);
  });

  // --- formatting -----------------------------------------------------------------------
  var ZERO_DECIMALS = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG", "RWF"];
  function fmtInt(n) { return Math.round(n).toLocaleString("en-US"); }
  function fmtMoney(v, currency) {
    if (!currency) return v.toLocaleString("en-US", { maximumFractionDigits: 2 });
    var d = ZERO_DECIMALS.indexOf(currency) >= 0 ? 0 : 2;
    return v.toLocaleString("en-US", { style: "currency", currency: currency, minimumFractionDigits: d, maximumFractionDigits: d });
  }
  function fmtDuration(s) {
    s = Math.round(s);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h) return h + " h " + m + " min";
    if (m) return m + " min " + sec + " s";
    return sec + " s";
  }
  function fmt(kind, v, row) {
    if (v === null || v === undefined || v === "") return "—";
    switch (kind) {
      case "int": return fmtInt(v);
      case "money": return fmtMoney(v, row && row.currency);
      case "duration": return fmtDuration(v);
      case "percent": return (v * 100).toFixed(1) + "%";
      case "ms": return v.toFixed(1) + " ms";
      case "number": return v.toLocaleString("en-US", { maximumFractionDigits: 2 });
      default: return String(v);
    }
  }
  function kindOf(col, row) { return col.key === "value" && row.kind ? row.kind : col.kind; }
  function cellText(col, row) {
    var kind = kindOf(col, row), text = fmt(kind, row[col.key], row);
    var ci = row[col.key + "_ci"];
    if (ci) text = "≈" + text + " (95% CI " + fmt(kind, ci[0], row) + "–" + fmt(kind, ci[1], row) + ")";
    return text;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function numeric(col) { return col.kind !== "text" && col.kind !== "date" && col.kind !== "datetime"; }

  // --- tables: sortable, searchable, paged ------------------------------------------------
  function table(el, data, opts) {
    var cols = data.columns, state = { sort: null, desc: false, q: "", page: 0 };
    var searchable = opts.searchable;
    var wrap = document.createElement("div");
    wrap.className = "table";
    if (searchable) {
      wrap.innerHTML = '<label class="search">Search titles <input type="search" data-search></label>';
    }
    var box = document.createElement("div");
    box.className = "scroll";
    wrap.appendChild(box);
    var pager = document.createElement("p");
    pager.className = "pager";
    wrap.appendChild(pager);
    el.appendChild(wrap);
    function rows() {
      var q = state.q.toLowerCase(), out = data.rows.filter(function (r) {
        return !q || String(r.title || r[cols[0].key]).toLowerCase().indexOf(q) >= 0;
      });
      if (state.sort) {
        var key = state.sort, dir = state.desc ? -1 : 1;
        out = out.slice().sort(function (a, b) {
          var x = a[key], y = b[key];
          if (x === null || x === undefined) x = -Infinity;
          if (y === null || y === undefined) y = -Infinity;
          if (typeof x === "string" || typeof y === "string") return dir * String(x).localeCompare(String(y));
          return dir * (x - y);
        });
      }
      return out;
    }
    function draw() {
      var all = rows(), pages = Math.max(1, Math.ceil(all.length / PAGE));
      state.page = Math.min(state.page, pages - 1);
      var shown = opts.paged ? all.slice(state.page * PAGE, state.page * PAGE + PAGE) : all;
      var head = cols.map(function (c) {
        var sort = state.sort === c.key ? (state.desc ? "descending" : "ascending") : "none";
        var mark = sort === "ascending" ? " ▲" : sort === "descending" ? " ▼" : "";
        return '<th scope="col" aria-sort="' + sort + '"' + (numeric(c) ? ' class="num"' : "") +
          '><button type="button" data-sort="' + c.key + '">' + esc(c.label) + mark + "</button></th>";
      }).join("");
      var body = shown.map(function (r) {
        return "<tr>" + cols.map(function (c, i) {
          var text = esc(cellText(c, r));
          if (c.key === "title" && r.content && opts.link) text = '<a href="content/' + encodeURIComponent(r.content) + (qs ? "?" + qs : "") + '">' + text + "</a>";
          return (i === 0 ? '<th scope="row">' : numeric(c) ? '<td class="num">' : "<td>") + text + (i === 0 ? "</th>" : "</td>");
        }).join("") + "</tr>";
      }).join("");
      box.innerHTML = "<table><thead><tr>" + head + "</tr></thead><tbody>" +
        (body || '<tr><td colspan="' + cols.length + '">No rows.</td></tr>') + "</tbody></table>";
      if (opts.paged && all.length > PAGE) {
        pager.innerHTML = '<button type="button" data-page="-1"' + (state.page ? "" : " disabled") + '>Previous</button> ' +
          '<span data-page-label>Page ' + (state.page + 1) + " of " + pages + " (" + all.length + " rows)</span> " +
          '<button type="button" data-page="1"' + (state.page < pages - 1 ? "" : " disabled") + ">Next</button>";
      } else {
        pager.textContent = all.length + (all.length === 1 ? " row" : " rows");
      }
    }
    wrap.addEventListener("click", function (event) {
      var b = event.target.closest("button");
      if (!b) return;
      if (b.hasAttribute("data-sort")) {
        var key = b.getAttribute("data-sort");
        if (state.sort === key) state.desc = !state.desc;
        else { state.sort = key; state.desc = numeric(cols.filter(function (c) { return c.key === key; })[0]); }
        state.page = 0;
        draw();
        var again = box.querySelector('[data-sort="' + key + '"]');
        if (again) again.focus();
      } else if (b.hasAttribute("data-page")) {
        state.page += Number(b.getAttribute("data-page"));
        draw();
      }
    });
    var input = wrap.querySelector("[data-search]");
    if (input) input.addEventListener("input", function () { state.q = input.value; state.page = 0; draw(); });
    draw();
  }

  // Long tables: the server sorts, searches and pages; only the page shown travels.
  function serverTable(card, el, first) {
    var cols = first.columns, state = { sort: first.sort || "", q: first.q || "", page: first.page || 0 };
    var wrap = document.createElement("div");
    wrap.className = "table";
    wrap.innerHTML = '<label class="search">Search titles <input type="search" data-search></label>';
    var box = document.createElement("div");
    box.className = "scroll";
    var pager = document.createElement("p");
    pager.className = "pager";
    wrap.appendChild(box);
    wrap.appendChild(pager);
    el.appendChild(wrap);
    var input = wrap.querySelector("[data-search]");
    input.value = state.q;
    var csv = card.querySelector("a.csv"), csvBase = csv.getAttribute("href");
    function draw(data) {
      var head = cols.map(function (c) {
        var sort = state.sort === c.key ? "ascending" : state.sort === "-" + c.key ? "descending" : "none";
        var mark = sort === "ascending" ? " ▲" : sort === "descending" ? " ▼" : "";
        return '<th scope="col" aria-sort="' + sort + '"' + (numeric(c) ? ' class="num"' : "") +
          '><button type="button" data-sort="' + c.key + '">' + esc(c.label) + mark + "</button></th>";
      }).join("");
      var body = data.rows.map(function (r) {
        return "<tr>" + cols.map(function (c, i) {
          var text = esc(cellText(c, r));
          if (c.key === "title" && r.content) text = '<a href="content/' + encodeURIComponent(r.content) + (qs ? "?" + qs : "") + '">' + text + "</a>";
          return (i === 0 ? '<th scope="row">' : numeric(c) ? '<td class="num">' : "<td>") + text + (i === 0 ? "</th>" : "</td>");
        }).join("") + "</tr>";
      }).join("");
      box.innerHTML = "<table><thead><tr>" + head + "</tr></thead><tbody>" +
        (body || '<tr><td colspan="' + cols.length + '">No rows.</td></tr>') + "</tbody></table>";
      pager.innerHTML = '<button type="button" data-page="-1"' + (data.page > 0 ? "" : " disabled") + '>Previous</button> ' +
        '<span data-page-label>Page ' + (data.page + 1) + " of " + data.pages + " (" + data.total_rows + " rows)</span> " +
        '<button type="button" data-page="1"' + (data.page < data.pages - 1 ? "" : " disabled") + ">Next</button>";
      state.page = data.page;
      var extra = new URLSearchParams(csvBase.split("?")[1] || "");
      if (state.sort) extra.set("sort", state.sort); else extra.delete("sort");
      if (state.q) extra.set("q", state.q); else extra.delete("q");
      csv.setAttribute("href", csvBase.split("?")[0] + "?" + extra.toString());
      card.setAttribute("data-state", "ready");
    }
    var seq = 0;
    function refetch(focusSort) {
      var mine = ++seq;
      card.setAttribute("data-state", "loading");
      var extra = { page: String(state.page) };
      if (state.sort) extra.sort = state.sort;
      if (state.q) extra.q = state.q;
      fetch(cardUrl(card, extra), { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (mine !== seq) return; // a newer request superseded this one
          draw(data);
          if (focusSort) { var b = box.querySelector('[data-sort="' + focusSort + '"]'); if (b) b.focus(); }
        });
    }
    wrap.addEventListener("click", function (event) {
      var b = event.target.closest("button");
      if (!b) return;
      if (b.hasAttribute("data-sort")) {
        var key = b.getAttribute("data-sort");
        var col = cols.filter(function (c) { return c.key === key; })[0];
        if (state.sort === key) state.sort = "-" + key;
        else if (state.sort === "-" + key) state.sort = key;
        else state.sort = numeric(col) ? "-" + key : key;
        state.page = 0;
        refetch(key);
      } else if (b.hasAttribute("data-page")) {
        state.page += Number(b.getAttribute("data-page"));
        refetch(null);
      }
    });
    var timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = input.value.trim(); state.page = 0; refetch(null); }, 200);
    });
    draw(first);
  }

  // --- charts -------------------------------------------------------------------------------
  var DASHES = ["", "6 4", "2 3", "10 3 2 3"];
  function lineChart(el, data) {
    var x = data.columns[0], series = data.columns.slice(1);
    var w = 640, h = 200, pad = 34, n = data.rows.length;
    var max = 0;
    data.rows.forEach(function (r) { series.forEach(function (s) { max = Math.max(max, r[s.key] || 0); }); });
    max = max || 1;
    var step = n > 1 ? (w - 2 * pad) / (n - 1) : 0;
    var paths = series.map(function (s, k) {
      var d = data.rows.map(function (r, i) {
        var px = pad + i * step, py = h - pad - ((r[s.key] || 0) / max) * (h - 2 * pad);
        return (i ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1);
      }).join(" ");
      return '<path class="series s' + k + '" stroke-dasharray="' + DASHES[k % DASHES.length] + '" d="' + d + '"/>';
    }).join("");
    var first = n ? data.rows[0][x.key] : "", last = n ? data.rows[n - 1][x.key] : "";
    var peak = series.length ? fmt(series[0].kind, max, { currency: (series[0].label.match(/\((\w{3})\)/) || [])[1] }) : "";
    var legend = series.map(function (s, k) {
      return '<li><svg width="28" height="8" aria-hidden="true"><line x1="0" y1="4" x2="28" y2="4" class="series s' + k + '" stroke-dasharray="' + DASHES[k % DASHES.length] + '"/></svg>' + esc(s.label) + "</li>";
    }).join("");
    el.insertAdjacentHTML("beforeend",
      '<div class="chart" role="img" aria-label="' + esc(series.map(function (s) { return s.label; }).join(", ")) + ": " + n + " points from " + esc(first) + " to " + esc(last) + ", peak " + esc(peak) + '">' +
      '<svg viewBox="0 0 ' + w + " " + h + '" preserveAspectRatio="none" aria-hidden="true">' +
      '<line class="axis" x1="' + pad + '" y1="' + (h - pad) + '" x2="' + (w - pad) + '" y2="' + (h - pad) + '"/>' + paths +
      "</svg></div>" +
      '<p class="axis-labels"><span>' + esc(first) + "</span><span>peak " + esc(peak) + "</span><span>" + esc(last) + "</span></p>" +
      (series.length > 1 ? '<ul class="legend">' + legend + "</ul>" : ""));
  }
  function bars(el, data) {
    var label = data.columns[0], value = data.columns.filter(function (c) { return numeric(c) && c.kind !== "percent"; })[0];
    var max = Math.max.apply(null, [1].concat(data.rows.map(function (r) { return r[value.key] || 0; })));
    var html = data.rows.map(function (r) {
      var pct = ((r[value.key] || 0) / max) * 100;
      var name = esc(r[label.key]);
      if (r.content) name = '<a href="content/' + encodeURIComponent(r.content) + (qs ? "?" + qs : "") + '">' + name + "</a>";
      return '<li><span class="bar-label">' + name + '</span><span class="bar-track"><span class="bar" style="width:' + pct.toFixed(1) + '%"></span></span><span class="bar-value">' + esc(cellText(value, r)) + (r.share !== undefined ? " · " + fmt("percent", r.share) : "") + "</span></li>";
    }).join("");
    el.insertAdjacentHTML("beforeend", '<ol class="bars" aria-label="' + esc(value.label) + " by " + esc(label.label) + '">' + html + "</ol>");
  }
  function donut(el, data) {
    var label = data.columns[0], value = data.columns[1];
    var total = data.rows.reduce(function (a, r) { return a + (r[value.key] || 0); }, 0) || 1;
    var r = 40, c = 2 * Math.PI * r, offset = 0;
    var arcs = data.rows.map(function (row, k) {
      var len = ((row[value.key] || 0) / total) * c;
      var s = '<circle class="arc a' + (k % 6) + '" r="' + r + '" cx="60" cy="60" stroke-dasharray="' + len.toFixed(2) + " " + (c - len).toFixed(2) + '" stroke-dashoffset="' + (-offset).toFixed(2) + '"/>';
      offset += len;
      return s;
    }).join("");
    var legend = data.rows.map(function (row, k) {
      return '<li><span class="swatch a' + (k % 6) + '" aria-hidden="true">' + "●▲■◆★✚".charAt(k % 6) + "</span> " + esc(row[label.key]) + ": " + esc(cellText(value, row)) + " (" + fmt("percent", row.share) + ")</li>";
    }).join("");
    el.insertAdjacentHTML("beforeend", '<div class="donut"><svg viewBox="0 0 120 120" aria-hidden="true">' + arcs + '</svg><ul class="legend">' + legend + "</ul></div>");
  }
  function kpi(el, data) {
    var cols = data.columns, value = cols.filter(function (c) { return c.key === "value"; })[0];
    var html = data.rows.map(function (r) {
      var change = "";
      if ("change" in r) {
        change = r.change === null ? '<span class="change">no earlier data to compare</span>' :
          '<span class="change">' + (r.change >= 0 ? "▲ up " : "▼ down ") + fmt("percent", Math.abs(r.change)) + " against the previous period</span>";
      }
      var extra = cols.filter(function (c) { return c.key === "purchases"; }).map(function (c) { return '<span class="change">' + fmt("int", r[c.key]) + " purchases</span>"; }).join("");
      return '<div class="kpi"><span class="measure">' + esc(r.measure) + '</span><span class="value" data-value>' + esc(cellText(value, r)) + "</span>" + change + extra + "</div>";
    }).join("");
    el.insertAdjacentHTML("beforeend", '<div class="kpis">' + (html || '<p class="empty">No data for this period.</p>') + "</div>");
  }
  function curve(el, data) {
    var pts = data.rows.filter(function (r) { return r.position !== null; });
    var done = data.rows.filter(function (r) { return r.position === null; })[0];
    var w = 640, h = 200, pad = 34;
    var maxX = Math.max.apply(null, [1].concat(pts.map(function (p) { return p.position; })));
    var d = pts.map(function (p, i) {
      return (i ? "L" : "M") + (pad + (p.position / maxX) * (w - 2 * pad)).toFixed(1) + " " + (h - pad - p.still_playing * (h - 2 * pad)).toFixed(1);
    }).join(" ");
    el.insertAdjacentHTML("beforeend", '<div class="chart" role="img" aria-label="Share of plays still playing by position; ' + (done ? fmt("percent", done.still_playing) + " completed" : "") + '"><svg viewBox="0 0 ' + w + " " + h + '" preserveAspectRatio="none" aria-hidden="true">' +
      '<line class="axis" x1="' + pad + '" y1="' + (h - pad) + '" x2="' + (w - pad) + '" y2="' + (h - pad) + '"/><path class="series s0" d="' + d + '"/>' +
      "</svg></div>" + '<p class="axis-labels"><span>start: 100% playing</span><span>' + esc(fmtDuration(maxX)) + " into the media</span></p>" +
      (done ? '<p class="note">' + fmt("percent", done.still_playing) + " of plays were completed.</p>" : ""));
  }

  // --- cards --------------------------------------------------------------------------------
  function render(el, data) {
    var body = el.querySelector(".body");
    body.innerHTML = "";
    if (data.estimated) {
      body.insertAdjacentHTML("beforeend", '<p class="estimate"><strong>Estimate</strong> from sampled data (' + fmtInt(data.row_count) + " stored rows): values marked ≈ show their 95% confidence interval.</p>");
    }
    var empty = !data.rows.length || (data.kind === "line" && data.rows.every(function (r) {
      return data.columns.slice(1).every(function (c) { return !r[c.key]; });
    }));
    var kind = data.kind;
    if (empty && kind !== "kpi") {
      body.insertAdjacentHTML("beforeend", '<p class="empty">No data for this period.</p>');
    } else if (kind === "kpi") kpi(body, data);
    else if (kind === "line") lineChart(body, data);
    else if (kind === "bars") bars(body, data);
    else if (kind === "donut") donut(body, data);
    else if (kind === "curve") curve(body, data);
    if (kind === "table" && data.total_rows) {
      serverTable(el, body, data);
      return;
    }
    if (kind === "table") {
      if (!empty) table(body, data, { searchable: data.columns[0].key === "title", paged: true, link: true });
    } else if (!empty && kind !== "kpi") {
      // Every chart also as a table: readable without colour, by screen readers, on phones.
      var details = document.createElement("details");
      details.innerHTML = "<summary>Show the numbers</summary>";
      body.appendChild(details);
      table(details, data, { searchable: false, paged: false, link: true });
    }
    if (data.note) body.insertAdjacentHTML("beforeend", '<p class="note">' + esc(data.note) + "</p>");
    el.setAttribute("data-state", empty ? "empty" : "ready");
    var zero = data.rows.every(function (r) { return !r.value; });
    if (kind === "kpi" && zero) el.setAttribute("data-zero", "");
  }
  function fail(el, status, message) {
    el.querySelector(".body").innerHTML = '<p class="error" role="alert">' + esc(message) + "</p>";
    el.setAttribute("data-state", "error");
    el.setAttribute("data-status", String(status));
  }
  function cardUrl(el, extra) {
    var url = new URLSearchParams(query);
    if (item) url.set("item", item);
    Object.keys(extra || {}).forEach(function (k) { url.set(k, extra[k]); });
    var s = url.toString();
    return "api/card/" + el.getAttribute("data-card") + (s ? "?" + s : "");
  }
  function load(el, tries) {
    tries = tries || 0;
    return fetch(cardUrl(el), { headers: { Accept: "application/json" } })
      .then(function (r) {
        // A busy server sheds load with 503 and Retry-After: ask again after that long.
        var retry = r.status === 503 ? parseFloat(r.headers.get("Retry-After") || "") : NaN;
        if (retry >= 0 && tries < 8) {
          return new Promise(function (done) {
            setTimeout(done, (retry + Math.random() * 0.5) * 1000);
          }).then(function () { return load(el, tries + 1); });
        }
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) {
            var msg = body.error || "";
            if (r.status === 403) fail(el, 403, "Not allowed. " + msg);
            else if (r.status === 503) fail(el, 503, msg || "The analytics backend did not answer.");
            else fail(el, r.status, "This card could not be loaded (" + r.status + "). " + msg);
            return;
          }
          render(el, body);
        });
      })
      .catch(function () { fail(el, 0, "The dashboard could not reach the server. Check your connection and reload."); })
      .then(function () { el.removeAttribute("aria-busy"); });
  }
  var cards = Array.prototype.slice.call(document.querySelectorAll("[data-card]"));
  var status = document.getElementById("status");
  Promise.all(cards.map(function (c) { return load(c); })).then(function () {
    window.edgemetricsCardsFilledAt = performance.now();
    document.body.setAttribute("data-cards", "filled");
    var broken = cards.filter(function (c) { return c.getAttribute("data-state") === "error"; });
    if (broken.length && broken.every(function (c) { return c.getAttribute("data-status") === "503"; })) {
      status.textContent = "The analytics backend is unreachable right now; the figures will return once it answers.";
    }
    // Nothing in this view: is it the filters, or is there no data at all yet?
    var blank = cards.every(function (c) {
      return c.getAttribute("data-state") === "empty" || c.hasAttribute("data-zero");
    });
    if (blank) {
      fetch("api/status").then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
        if (s && !s.has_data) {
          status.textContent = "No data yet: nothing has been recorded for you so far. Once the platform sends its first events, they appear here within a minute.";
          document.body.setAttribute("data-no-data", "true");
        }
      }).catch(function () {});
    }
  });
})();
