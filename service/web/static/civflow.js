/* civflow pages: small progressive enhancements. Every page works without this file;
   the server checks everything again. No build step, no dependencies besides htmx. */
(function () {
  "use strict";

  var csrf = function () {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  };

  // htmx requests send the session's CSRF token in a header.
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  // List fields (周记实, 指标): "Add a row" copies the last row, renumbered and empty.
  function renumber(el, from, to) {
    ["name", "id", "for", "aria-describedby"].forEach(function (attr) {
      var v = el.getAttribute(attr);
      if (!v) return;
      v = v.replace("." + from + ".", "." + to + ".").replace(new RegExp("\\." + from + "$"), "." + to)
           .replace("-" + from + "-", "-" + to + "-").replace(new RegExp("-" + from + "$"), "-" + to);
      el.setAttribute(attr, v);
    });
  }

  function setupAddRow(button) {
    var group = button.closest(".list-field");
    var max = parseInt(group.getAttribute("data-max") || "50", 10);
    button.hidden = false;
    button.addEventListener("click", function () {
      var rows = group.querySelectorAll("[data-row]");
      if (rows.length >= max) return;
      var last = rows[rows.length - 1];
      var copy = last.cloneNode(true);
      var from = rows.length - 1, to = rows.length;
      copy.querySelectorAll("input, textarea, select, label").forEach(function (el) {
        renumber(el, from, to);
        if (el.tagName === "SELECT") el.selectedIndex = 0;
        else if (el.tagName !== "LABEL") el.value = "";
        el.removeAttribute("aria-invalid");
        el.removeAttribute("aria-describedby");
      });
      copy.querySelectorAll(".field-error").forEach(function (el) { el.remove(); });
      var legend = copy.querySelector("legend");
      if (legend) legend.textContent = legend.textContent.replace(/\d+/, String(to + 1));
      last.after(copy);
      var first = copy.querySelector("input, textarea, select");
      if (first) first.focus();
      if (rows.length + 1 >= max) button.hidden = true;
    });
  }

  // Bulk approval: the quota meter follows the ticked boxes; over a limit, no submitting.
  function setupBulk(form) {
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[name="case_ids"]'));
    var submit = form.querySelector("#bulk-submit");
    var message = form.querySelector("#bulk-reason");  // why the button is disabled, beside it
    var count = form.querySelector("#bulk-count");
    var all = form.querySelector("[data-select-all]");
    var pools = Array.prototype.slice.call(form.querySelectorAll(".pool"));

    function update() {
      var ticked = {}, n = 0;
      boxes.forEach(function (b) {
        if (!b.checked) return;
        n += 1;
        if (b.getAttribute("data-hit") === "1") {
          var p = b.getAttribute("data-pool");
          ticked[p] = (ticked[p] || 0) + 1;
        }
      });
      var over = [];
      pools.forEach(function (li) {
        var used = parseInt(li.getAttribute("data-used"), 10);
        var limit = parseInt(li.getAttribute("data-limit"), 10);
        var sel = ticked[li.id] || 0;
        li.querySelector('[data-f="selected"]').textContent = sel;
        li.querySelector('[data-f="remaining"]').textContent = limit - used - sel;
        var meter = li.querySelector("meter");
        meter.value = Math.min(used + sel, Math.max(limit, 1));
        var isOver = used + sel > limit;
        li.classList.toggle("over", isOver);
        if (isOver) over.push(li.querySelector(".pool-name").firstChild.textContent.trim());
      });
      if (count) count.textContent = count.getAttribute("data-text") ? count.getAttribute("data-text").replace("{n}", n) : "";
      if (submit) submit.disabled = over.length > 0 || n === 0;
      if (message) {
        message.textContent = over.length
          ? message.getAttribute("data-over-text").replace("{pools}", over.join(", "))
          : (n === 0 ? message.getAttribute("data-none-text") : "");
      }
      if (all) all.checked = n > 0 && n === boxes.length;
    }

    boxes.forEach(function (b) { b.addEventListener("change", update); });
    if (all) {
      all.addEventListener("change", function () {
        boxes.forEach(function (b) { b.checked = all.checked; });
        update();
      });
    }
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-add-row]").forEach(setupAddRow);
    var bulk = document.getElementById("bulk-form");
    if (bulk) setupBulk(bulk);
    // Focus the first error summary so keyboard and screen-reader users land on it.
    var summary = document.querySelector(".error-summary");
    if (summary) { summary.setAttribute("tabindex", "-1"); summary.focus(); }
  });
})();
