// Hummel dashboard: live updates. Replaces the page's live sections with each snapshot from
// /ui/events (server-sent events); the page is complete without this script.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var status = document.getElementById("live-status");
  function connect() {
    var source = new EventSource("/ui/events");
    source.addEventListener("snapshot", function (e) {
      var snap;
      try { snap = JSON.parse(e.data); } catch (err) { return; }
      snap.sections.forEach(function (pair) {
        var el = document.getElementById(pair[0]);
        // Keep a section whose form the admin is filling in.
        if (el && !el.contains(document.activeElement) && el.innerHTML !== pair[1]) {
          el.innerHTML = pair[1];
        }
      });
      document.documentElement.setAttribute("data-revision", snap.revision === null ? "" : String(snap.revision));
      if (status) { status.textContent = "live"; status.className = "live"; }
    });
    source.onerror = function () {
      if (status) { status.textContent = "reconnecting"; status.className = "stale"; }
    };
  }
  connect();
})();
