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
  // Auto-submit selects marked data-autosubmit (time-range picker); the submit button stays for no-JS.
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });
})();
