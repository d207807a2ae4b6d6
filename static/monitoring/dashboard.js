// Refreshes the dashboard's body in place every data-refresh seconds (no reload, no
// library). Without JavaScript the page still renders; a reload refreshes it.
(function () {
  "use strict";
  var body = document.getElementById("edm-dashboard");
  if (!body || !window.fetch) return;
  var every = Number(body.dataset.refresh || 15) * 1000;
  function refresh() {
    fetch(body.dataset.fragmentUrl, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) {
          body.innerHTML = html;
          body.dataset.refreshedAt = String(Date.now());
        }
      })
      .catch(function () { /* keep the last view; try again next time */ });
  }
  window.setInterval(refresh, every);
})();
