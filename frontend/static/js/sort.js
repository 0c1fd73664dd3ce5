// Client-side sorting of tables marked data-sortable. Without JS the column headers are
// plain links that ask the server for the same order, so the table stays usable.
(function () {
  "use strict";
  function value(cell) {
    var v = cell.getAttribute("data-value");
    if (v === null) v = cell.textContent.trim();
    if (v === "" || v === "nan" || v === "None") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(table, th, dir) {
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[idx]), y = value(b.cells[idx]);
      // Missing values always last, whatever the direction (NaN never ranks above a number).
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      var c = x < y ? -1 : x > y ? 1 : 0;
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    th.parentNode.querySelectorAll("th").forEach(function (h) {
      h.classList.remove("sorted-asc", "sorted-desc");
      h.removeAttribute("aria-sort");
    });
    th.classList.add(dir === "asc" ? "sorted-asc" : "sorted-desc");
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table[data-sortable]").forEach(function (table) {
      table.querySelectorAll("th.sortable").forEach(function (th) {
        th.addEventListener("click", function (e) {
          e.preventDefault();
          var current = th.classList.contains("sorted-asc") ? "asc" : th.classList.contains("sorted-desc") ? "desc" : null;
          var first = th.getAttribute("data-first") || "asc";
          var dir = current === null ? first : current === "asc" ? "desc" : "asc";
          sortBy(table, th, dir);
          var url = new URL(window.location.href);
          url.searchParams.set("sort", th.getAttribute("data-key") || "");
          url.searchParams.set("dir", dir);
          window.history.replaceState(null, "", url.toString());
        });
      });
    });
  });
})();
