/* EDM — a contact import's page: its counters follow the job until it ends.
 *
 * Polls the job's progress (ContactImportAdmin.progress_view) every second and updates
 * both the live box and the read-only fields of the form below it, so that no counter
 * on the page stays behind. No framework, no CDN.
 */
(function () {
  "use strict";
  var FIELDS = ["status", "bytes_read", "rows_read", "rows_created", "rows_updated",
    "rows_unchanged", "rows_rejected", "rows_skipped", "error", "started_at", "finished_at"];

  function show(box, data) {
    var bar = box.querySelector("progress");
    if (bar) { bar.value = data.percent; }
    Object.keys(data).forEach(function (key) {
      var el = box.querySelector("." + key);
      if (el) { el.textContent = data[key] === null ? "" : data[key]; }
    });
    FIELDS.forEach(function (key) {
      var field = document.querySelector(".field-" + key + " .readonly");
      if (!field) { return; }
      var value = key === "status" ? data.status_display : data[key];
      field.textContent = value === null || value === "" || value === undefined ? "-" : value;
    });
  }

  function poll(box) {
    fetch(box.dataset.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        show(box, data);
        if (!data.finished) { window.setTimeout(function () { poll(box); }, 1000); }
      })
      .catch(function () { window.setTimeout(function () { poll(box); }, 2000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("import-progress");
    if (box && box.dataset.finished !== "1") { window.setTimeout(function () { poll(box); }, 500); }
  });
})();
