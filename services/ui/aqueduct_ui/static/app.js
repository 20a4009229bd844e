// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  // Confirmation before destructive actions (forms marked data-confirm).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
  // Copy buttons: data-copy holds a selector of the input or element whose text is copied.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = "value" in source ? source.value : source.textContent;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(source, done); });
    } else {
      fallback(source, done);
    }
  });
  function fallback(source, done) {
    if (source.select) { source.select(); } else {
      var range = document.createRange(); range.selectNodeContents(source);
      var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    }
    try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected for Ctrl-C */ }
  }
  // Select the new token value so that a keyboard user can copy it at once.
  var secret = document.querySelector("[data-secret]");
  if (secret) { secret.focus(); secret.select(); }
  // A form the server refused comes back as the user typed it, with the server's message next to the
  // field it names (the message is also in the alert above, for readers without this script).
  var refused = document.getElementById("refused-form");
  if (refused) {
    try { restoreForm(JSON.parse(refused.textContent)); } catch (e) { /* the alert above still tells */ }
  }
  function restoreForm(state) {
    var form = Array.prototype.find.call(document.forms, function (f) {
      return (f.getAttribute("method") || "").toLowerCase() === "post" &&
        new URL(f.action, window.location.href).pathname === state.action;
    });
    if (!form) return;
    Object.keys(state.values || {}).forEach(function (name) {
      var values = state.values[name];
      form.querySelectorAll('[name="' + CSS.escape(name) + '"]').forEach(function (input, i) {
        if (input.type === "hidden" || input.type === "password" || input.type === "file") return;
        if (input.type === "checkbox" || input.type === "radio") {
          input.checked = values.indexOf(input.value) >= 0;
        } else if (input.tagName === "SELECT" && input.multiple) {
          Array.prototype.forEach.call(input.options, function (o) { o.selected = values.indexOf(o.value) >= 0; });
        } else if (values[i] !== undefined) {
          input.value = values[i];
        }
      });
    });
    for (var open = form.closest("details"); open; open = open.parentElement && open.parentElement.closest("details")) {
      open.open = true;
    }
    var field = fieldOf(form, state.field);
    var note = document.createElement("p");
    note.className = "field-error";
    note.id = "refused-form-error";
    note.textContent = state.message;
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.setAttribute("aria-describedby", note.id);
      field.insertAdjacentElement("afterend", note);
      field.focus();
    } else {
      form.insertBefore(note, form.firstChild);
    }
  }
  // The API names fields as "slug", "limits.requests_per_minute" or
  // "model_limits.<model>.requests_per_minute"; the forms name inputs "slug", "requests_per_minute" and
  // "ml:requests_per_minute:<model>".
  function fieldOf(form, name) {
    if (!name) return null;
    var parts = name.split(".");
    var candidates = [name, parts[parts.length - 1]];
    if (parts[0] === "model_limits" && parts.length > 2) {
      candidates.unshift("ml:" + parts[parts.length - 1] + ":" + parts.slice(1, -1).join("."));
    }
    for (var i = 0; i < candidates.length; i++) {
      var input = form.querySelector('[name="' + CSS.escape(candidates[i]) + '"]');
      if (input && input.type !== "hidden") return input;
    }
    return null;
  }
  // Auto-submit selects marked data-autosubmit (time-range picker); the submit button stays for no-JS.
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });
})();
