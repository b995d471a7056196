// The page's only script: sorting the leaderboards and switching std / 95% t-intervals.
// Cells carry their exact numbers in data-value; missing values ("-", "never") stay last.
(function () {
  "use strict";

  function compare(a, b, numeric) {
    if (numeric) return parseFloat(a) - parseFloat(b);
    return a.localeCompare(b);
  }

  function sortBy(table, th) {
    const heads = Array.from(table.tHead.rows[0].cells);
    const col = heads.indexOf(th);
    const numeric = th.dataset.kind === "number";
    const current = th.getAttribute("aria-sort");
    // A first click puts the best rows on top: descending where higher is better.
    const first = th.dataset.better === "higher" ? "descending" : "ascending";
    const dir = current ? (current === "ascending" ? "descending" : "ascending") : first;
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    const sign = dir === "ascending" ? 1 : -1;
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort(function (r1, r2) {
      const a = r1.cells[col].dataset.value, b = r2.cells[col].dataset.value;
      if (a === "" || b === "") return (a === "") - (b === "");
      return sign * compare(a, b, numeric);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  document.querySelectorAll("table.leaderboard").forEach(function (table) {
    Array.from(table.tHead.rows[0].cells).forEach(function (th) {
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });

  const spread = document.getElementById("ci-switch");
  spread.addEventListener("change", function () {
    document.body.classList.toggle("show-ci", spread.checked);
    document.body.classList.toggle("show-sd", !spread.checked);
  });
})();
