// Client-side filters: each .item carries data-dataset / data-source / data-stage / data-reason
// (tab-separated values). A set filter shows only the items whose attribute holds its value.
(function () {
  "use strict";
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var text = document.getElementById("filter-text");
  var items = Array.prototype.slice.call(document.querySelectorAll(".item"));

  function apply() {
    var active = selects.filter(function (s) { return s.value !== ""; });
    var query = (text.value || "").trim().toLowerCase();
    items.forEach(function (item) {
      var show = active.every(function (s) {
        var values = (item.getAttribute("data-" + s.getAttribute("data-filter")) || "").split("\t");
        return values.indexOf(s.value) !== -1;
      });
      if (show && query) {
        show = item.textContent.toLowerCase().indexOf(query) !== -1;
      }
      item.hidden = !show;
    });
    document.querySelectorAll("[data-count-for]").forEach(function (el) {
      var section = document.getElementById(el.getAttribute("data-count-for"));
      var all = section ? section.querySelectorAll(".item") : [];
      var shown = Array.prototype.filter.call(all, function (i) { return !i.hidden; }).length;
      el.textContent = shown === all.length ? "(" + all.length + ")" : "(" + shown + " of " + all.length + ")";
    });
  }

  selects.forEach(function (s) { s.addEventListener("change", apply); });
  text.addEventListener("input", apply);
  document.getElementById("filter-clear").addEventListener("click", function () {
    selects.forEach(function (s) { s.value = ""; });
    text.value = "";
    apply();
  });
  // A reason in the chart (bar segment or chip) filters the page to it and jumps to its rejects.
  var reason = document.getElementById("filter-reason");
  document.querySelectorAll("[data-set-reason]").forEach(function (el) {
    el.addEventListener("click", function () {
      if (!reason) { return; }
      var value = el.getAttribute("data-set-reason");
      var known = Array.prototype.some.call(reason.options, function (o) { return o.value === value; });
      reason.value = known ? value : "";
      apply();
      var target = document.getElementById("rejects") || document.getElementById("chains");
      if (target && known) { target.scrollIntoView(); }
    });
  });
  apply();
})();
