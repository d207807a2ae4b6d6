/* EDM — the task page of the admin: live progress, audience, preview, test send.
 *
 * No framework, no CDN: plain DOM and fetch. The endpoints are the TaskAdmin views
 * (apps/dispatch/admin/tasks.py); every panel finds its URL in a data-url attribute.
 */
(function () {
  "use strict";

  // Drawing order and colours of the bar (the same as the list's bars).
  var STATUSES = [
    ["sent", "#2e7d32"], ["sending", "#66bb6a"], ["allocated", "#a5d6a7"],
    ["pending", "#cfd8dc"], ["unknown", "#ffb300"], ["failed", "#e53935"],
    ["dead", "#6d4c41"], ["skipped", "#90a4ae"], ["cancelled", "#546e7a"]
  ];
  var POLL_MS = 2000;
  var RATE_WINDOW_MS = 60000;

  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function text(root, selector, value) {
    var el = root.querySelector(selector);
    if (el) { el.textContent = value; }
  }

  function post(url, fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (key) {
      if (fields[key] !== undefined && fields[key] !== null) { body.append(key, fields[key]); }
    });
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken(), "Accept": "application/json"},
      body: body
    }).then(function (response) {
      return response.json().then(function (data) { return {ok: response.ok, data: data}; });
    });
  }

  function firstError(errors) {
    var keys = Object.keys(errors || {});
    if (!keys.length) { return "failed"; }
    var field = keys[0] === "__all__" ? "" : keys[0] + ": ";
    return field + errors[keys[0]][0];
  }

  // --- progress ------------------------------------------------------------------------

  function formatDuration(seconds) {
    if (!isFinite(seconds) || seconds < 0) { return "—"; }
    if (seconds < 1) { return "under 1 s"; }
    seconds = Math.round(seconds);
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (h) { return h + " h " + m + " min"; }
    if (m) { return m + " min " + s + " s"; }
    return s + " s";
  }

  function Progress(panel) {
    this.panel = panel;
    this.url = panel.dataset.url;
    this.status = panel.dataset.status;
    this.sameButtons = (panel.dataset.sameButtons || "").split(",");
    this.samples = [];  // [server time in ms, messages done]
    var initial = document.getElementById("task-progress-initial");
    if (initial) { this.draw(JSON.parse(initial.textContent)); }
    if (panel.dataset.finished !== "1") { this.schedule(); }
  }

  Progress.prototype.schedule = function () {
    var self = this;
    this.timer = window.setTimeout(function () { self.poll(); }, POLL_MS);
  };

  Progress.prototype.poll = function () {
    var self = this;
    fetch(this.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        self.draw(data);
        if (!data.finished) { self.schedule(); }
      })
      .catch(function () { self.schedule(); });
  };

  Progress.prototype.rate = function (data) {
    var now = Date.parse(data.server_time);
    this.samples.push([now, data.done]);
    while (this.samples.length > 2 && now - this.samples[1][0] >= RATE_WINDOW_MS) {
      this.samples.shift();
    }
    var first = this.samples[0];
    var seconds = (now - first[0]) / 1000;
    if (this.samples.length < 2 || seconds <= 0) { return null; }
    return (data.done - first[1]) / seconds;
  };

  Progress.prototype.draw = function (data) {
    var panel = this.panel, counts = data.progress, total = counts.total;
    var bar = panel.querySelector(".task-bar");
    var legend = panel.querySelector(".task-legend");
    bar.textContent = "";
    legend.textContent = "";
    STATUSES.forEach(function (pair) {
      var key = pair[0], count = counts[key] || 0;
      var item = document.createElement("li");
      item.className = "task-legend-" + key + (count ? "" : " task-legend-zero");
      var swatch = document.createElement("span");
      swatch.className = "task-swatch";
      swatch.style.background = pair[1];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(key + " "));
      var number = document.createElement("strong");
      number.className = "task-count-" + key;
      number.textContent = count;
      item.appendChild(number);
      legend.appendChild(item);
      if (!count || !total) { return; }
      var segment = document.createElement("span");
      segment.className = "task-segment task-segment-" + key;
      segment.style.width = (100 * count / total) + "%";
      segment.style.background = pair[1];
      segment.title = key + ": " + count;
      bar.appendChild(segment);
    });
    bar.setAttribute("aria-valuenow", data.percent);
    text(panel, ".task-status", data.status_display);
    text(panel, ".task-percent", data.percent);
    text(panel, ".task-done", data.done);
    text(panel, ".task-total", total);
    if (data.first_send_wait_seconds !== null && data.first_send_wait_seconds !== undefined) {
      text(panel, ".task-wait", data.first_send_wait_seconds.toFixed(1) + " s after queueing");
    }
    var rate = this.rate(data);
    if (data.finished) {
      text(panel, ".task-rate", rate === null ? "—" : rate.toFixed(1) + " /s");
      text(panel, ".task-eta", "none, finished");
    } else if (rate !== null) {
      text(panel, ".task-rate", rate.toFixed(1) + " /s");
      text(panel, ".task-eta", rate > 0 ? formatDuration(data.left / rate) : "—");
    }
    if (data.status !== this.status) {
      var status = document.querySelector(".field-status .readonly");
      if (status) { status.textContent = data.status_display; }
      if (this.sameButtons.indexOf(data.status) < 0) {  // other actions now: say so
        var stale = panel.querySelector(".task-stale");
        text(stale, ".task-new-status", data.status_display);
        stale.hidden = false;
      }
    }
  };

  // --- audience ------------------------------------------------------------------------

  function selectedIds(name) {
    var field = document.getElementById("id_" + name);
    if (!field) { return null; }
    return Array.prototype.filter.call(field.options || [], function (o) { return o.selected; })
      .map(function (o) { return o.value; }).filter(Boolean);
  }

  function Audience(panel) {
    this.panel = panel;
    this.url = panel.dataset.url;
    this.last = null;
    var self = this;
    window.setInterval(function () { self.refresh(); }, 800);
    if (window.django && window.django.jQuery) {
      window.django.jQuery("#id_include_tags, #id_exclude_tags, #id_contacts")
        .on("change", function () { self.refresh(); });
    }
    this.refresh();
  }

  Audience.prototype.refresh = function () {
    var params = new URLSearchParams();
    var any = false;
    ["include_tags", "exclude_tags", "contacts"].forEach(function (name) {
      var ids = selectedIds(name);
      if (ids === null) { return; }
      any = true;
      ids.forEach(function (id) { params.append(name, id); });
    });
    var owner = document.getElementById("id_owner");
    if (owner && owner.value) { params.append("owner", owner.value); }
    var query = any ? params.toString() : "";
    if (query === this.last) { return; }
    this.last = query;
    var panel = this.panel;
    fetch(this.url + (query ? "?" + query : ""), {credentials: "same-origin"})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        text(panel, ".audience-recipients", data.recipients);
        text(panel, ".audience-total", data.total);
        var skipped = Object.keys(data.skipped).map(function (reason) {
          return data.skipped[reason] + " " + reason;
        });
        text(panel, ".audience-skipped", skipped.join(", "));
        panel.dataset.recipients = data.recipients;
      });
  };

  // --- preview and test ------------------------------------------------------------------

  function formValue(name) {
    var field = document.getElementById("id_" + name);
    return field ? field.value : undefined;  // a read-only field: the saved value is used
  }

  function Preview(panel) {
    this.panel = panel;
    var self = this;
    panel.querySelector("#preview-render").addEventListener("click", function () { self.render(); });
    panel.querySelector("#preview-contact").addEventListener("change", function () { self.render(); });
    this.render();
  }

  Preview.prototype.render = function () {
    var panel = this.panel;
    var errors = panel.querySelector(".preview-errors");
    post(panel.dataset.url, {
      subject: formValue("subject"), body_text: formValue("body_text"),
      body_html: formValue("body_html"), from_name: formValue("from_name"),
      contact: panel.querySelector("#preview-contact").value
    }).then(function (result) {
      if (!result.ok) {
        errors.textContent = firstError(result.data.errors);
        errors.hidden = false;
        return;
      }
      errors.hidden = true;
      text(panel, ".preview-subject", result.data.subject);
      text(panel, ".preview-to", result.data.to);
      text(panel, ".preview-text", result.data.text);
      // srcdoc of a sandboxed iframe: no script runs, no link navigates this page.
      panel.querySelector(".preview-html").srcdoc = result.data.html ||
        "<p style='color:#888;font-family:sans-serif'>(no HTML body)</p>";
      panel.dataset.rendered = "1";
    });
  };

  function TestSend(panel) {
    var button = panel.querySelector("#test-send");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var result = panel.querySelector(".test-result");
      var contact = document.getElementById("preview-contact");
      button.disabled = true;
      result.textContent = "sending…";
      post(panel.dataset.url, {
        to_email: panel.querySelector("#test-to").value,
        service: panel.querySelector("#test-service").value,
        contact: contact ? contact.value : ""
      }).then(function (response) {
        button.disabled = false;
        var data = response.data;
        if (!response.ok) {
          result.textContent = firstError(data.errors);
          result.className = "test-result test-failed";
          return;
        }
        result.textContent = data.ok ? "sent to " + data.to_email : "failed: " + data.error;
        result.className = "test-result " + (data.ok ? "test-ok" : "test-failed");
        var body = panel.querySelector(".test-sends tbody");
        var empty = body.querySelector(".test-sends-empty");
        if (empty) { empty.remove(); }
        var row = document.createElement("tr");
        [data.created_at, data.to_email, data.service, data.ok ? "sent" : "failed: " + data.error]
          .forEach(function (value) {
            var cell = document.createElement("td");
            cell.textContent = value;
            row.appendChild(cell);
          });
        body.insertBefore(row, body.firstChild);
      });
    });
  }

  // --- buttons -------------------------------------------------------------------------------

  function confirmations() {
    Array.prototype.forEach.call(document.querySelectorAll("form.task-action[data-confirm]"),
      function (form) {
        form.addEventListener("submit", function (event) {
          if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
        });
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var progress = document.getElementById("task-progress");
    if (progress) { window.edmTaskProgress = new Progress(progress); }
    var audience = document.getElementById("task-audience");
    if (audience) { new Audience(audience); }
    var preview = document.getElementById("task-preview");
    if (preview) { new Preview(preview); }
    var test = document.getElementById("task-test");
    if (test) { new TestSend(test); }
    confirmations();
  });
})();
