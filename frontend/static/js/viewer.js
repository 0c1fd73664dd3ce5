// Slice viewer: one slider moves the input, sCT, CT and difference panes together, and the
// dose panes below them (stored dose maps over the CT, with the DVH of the case and plan).
// PNG slices and the DVH plot are rendered server-side (backend/web/slices.py, dose_view.py)
// with the access rules applied.
(function () {
  "use strict";
  function setup(root) {
    var base = root.getAttribute("data-slice-url"); // ".../cases/{case}/slice.png"
    var caseSel = root.querySelector("select[name=case]");
    var axisSel = root.querySelector("select[name=axis]");
    var slider = root.querySelector("input[name=index]");
    var label = root.querySelector("[data-role=index]");
    var imgs = root.querySelectorAll("img[data-kind]");
    var dose = root.querySelector("[data-dose-viewer]");
    var modSel = dose && dose.querySelector("select[name=modality]");
    var doseImgs = dose ? dose.querySelectorAll("img[data-dose-kind]") : [];
    var dvhBox = dose && dose.querySelector("[data-role=dvh]");
    var missing = dose && dose.querySelector("[data-role=dose-missing]");
    var dvhShown = "";
    var timer = null;
    function renderDose(opt, axis) {
      if (!dose) return;
      var have = (opt.getAttribute("data-dose") || "").split(" ").filter(Boolean);
      // A case with only one plan: offer that one (the other stays visible, disabled).
      Array.prototype.forEach.call(modSel.options, function (o) {
        o.disabled = have.length > 0 && have.indexOf(o.value) < 0;
      });
      if (have.length && have.indexOf(modSel.value) < 0) modSel.value = have[0];
      var modality = modSel.value;
      var ok = have.indexOf(modality) >= 0;
      missing.hidden = ok;
      doseImgs.forEach(function (img) {
        img.closest("figure").hidden = !ok;
        if (ok) {
          img.src = dose.getAttribute("data-dose-url").replace("{case}", encodeURIComponent(opt.value)) +
            "?kind=" + img.getAttribute("data-dose-kind") + "&modality=" + modality +
            "&axis=" + axis + "&index=" + slider.value;
        }
      });
      var want = ok ? opt.value + "|" + modality : "";
      if (want === dvhShown) return;
      dvhShown = want;
      if (!ok) { dvhBox.innerHTML = ""; return; }
      var url = dose.getAttribute("data-dvh-url").replace("{case}", encodeURIComponent(opt.value)) +
        "?modality=" + modality;
      fetch(url, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text() : Promise.reject(r.status);
      }).then(function (html) {
        if (dvhShown === want) dvhBox.innerHTML = html; // server-rendered, escaped SVG
      }).catch(function () {
        if (dvhShown === want) dvhBox.textContent = "The DVH could not be loaded; reload the page.";
      });
    }
    function render() {
      var opt = caseSel.options[caseSel.selectedIndex];
      var axis = axisSel.value;
      var shape = JSON.parse(opt.getAttribute("data-shape") || "[1,1,1]"); // z, y, x
      var n = axis === "axial" ? shape[0] : axis === "coronal" ? shape[1] : shape[2];
      if (parseInt(slider.max, 10) !== n - 1) {
        slider.max = String(Math.max(0, n - 1));
        if (parseInt(slider.value, 10) > n - 1 || root.dataset.lastAxis !== axis || root.dataset.lastCase !== opt.value) {
          slider.value = String(Math.floor(n / 2));
        }
      }
      root.dataset.lastAxis = axis;
      root.dataset.lastCase = opt.value;
      label.textContent = (parseInt(slider.value, 10) + 1) + " / " + n;
      imgs.forEach(function (img) {
        var url = base.replace("{case}", encodeURIComponent(opt.value)) +
          "?kind=" + img.getAttribute("data-kind") + "&axis=" + axis + "&index=" + slider.value;
        img.src = url;
      });
      renderDose(opt, axis);
    }
    function debounced() { clearTimeout(timer); timer = setTimeout(render, 60); }
    caseSel.addEventListener("change", function () { slider.max = "-1"; render(); });
    axisSel.addEventListener("change", function () { slider.max = "-1"; render(); });
    slider.addEventListener("input", debounced);
    if (modSel) modSel.addEventListener("change", render);
    root.addEventListener("keydown", function (e) {
      if (e.target === slider) return;
      if (e.key === "ArrowUp" || e.key === "ArrowDown") {
        e.preventDefault();
        slider.value = String(parseInt(slider.value, 10) + (e.key === "ArrowUp" ? 1 : -1));
        render();
      }
    });
    slider.max = "-1";
    render();
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-slice-viewer]").forEach(setup);
  });
})();
