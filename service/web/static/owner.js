/* civflow: the process-owner pages' small enhancements. Every page works without it.
   - The version page: mermaid (vendored, static/vendor/mermaid.min.js) draws the state
     diagram from the text in <pre class="mermaid">, on load, in strict security mode
     (labels are text, never HTML; no click handlers, no links).
   - The upload page: a problem's "Line N" link puts the cursor on that line of the text
     area and selects it; the line and column of the cursor are shown under the text area;
     a chosen file is read into the text area, so what is sent is what is seen. */
(function () {
  "use strict";

  if (window.mermaid && document.querySelector("pre.mermaid")) {
    window.mermaid.initialize({
      startOnLoad: true,
      securityLevel: "strict",
      theme: "base",
      themeVariables: {
        fontFamily: 'system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif',
        fontSize: "15px",
        primaryColor: "#e8f0fb",
        primaryBorderColor: "#0b57a4",
        primaryTextColor: "#1f2328",
        lineColor: "#555c66",
        textColor: "#1f2328"
      }
    });
  }

  function lineStart(text, line) {
    var at = 0;
    for (var n = 1; n < line; n += 1) {
      var next = text.indexOf("\n", at);
      if (next < 0) return text.length;
      at = next + 1;
    }
    return at;
  }

  function selectLine(area, line) {
    var text = area.value;
    var start = lineStart(text, line);
    var end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    area.focus();
    area.setSelectionRange(start, end);
    // Scroll the text area so that the line sits a few lines from the top.
    var style = window.getComputedStyle(area);
    var height = parseFloat(style.lineHeight) || 20;
    area.scrollTop = Math.max(0, (line - 4) * height);
  }

  function showPosition(area, out) {
    var before = area.value.slice(0, area.selectionStart);
    var line = before.split("\n").length;
    var column = before.length - before.lastIndexOf("\n");
    out.textContent = (out.getAttribute("data-text") || "{line}:{column}")
      .replace("{line}", line).replace("{column}", column);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var area = document.getElementById("source");
    if (!area) return;
    document.querySelectorAll("a.line-link[data-line]").forEach(function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        selectLine(area, parseInt(a.getAttribute("data-line"), 10));
      });
    });
    var out = document.getElementById("source-pos");
    if (out) {
      ["keyup", "click", "focus", "select"].forEach(function (kind) {
        area.addEventListener(kind, function () { showPosition(area, out); });
      });
    }
    var file = document.getElementById("file");
    var name = document.getElementById("filename");
    if (file && window.FileReader) {
      file.addEventListener("change", function () {
        var chosen = file.files && file.files[0];
        if (!chosen) return;
        var reader = new FileReader();
        reader.onload = function () {
          area.value = String(reader.result).replace(/^\uFEFF/, "");
          if (name) name.value = chosen.name;
          file.value = "";  // the text area now holds it: send that, edited or not
          area.focus();
        };
        reader.readAsText(chosen, "utf-8");
      });
    }
  });
})();
