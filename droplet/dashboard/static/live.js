// Live refresh: fetch this page's fragment every few seconds and swap it in, keeping open
// tracebacks open. Nothing else on the page depends on script.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var badge = document.getElementById("conn");
  document.addEventListener("click", function (event) {
    var pick = event.target.closest ? event.target.closest("[data-pick]") : null;
    var target = document.getElementById("target");
    if (pick && target) { target.value = pick.getAttribute("data-pick"); target.focus(); }
  });
  var linked = window.location.hash ? document.getElementById(window.location.hash.slice(1)) : null;
  if (linked && linked.tagName === "DETAILS") { linked.open = true; }
  if (!live) { return; }
  var every = Math.max(1, Number(live.getAttribute("data-refresh")) || 2) * 1000;
  function tick() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url, { cache: "no-store" }).then(function (response) {
      if (!response.ok) { throw new Error("the dashboard answered " + response.status); }
      return response.text();
    }).then(function (html) {
      var open = Array.prototype.map.call(live.querySelectorAll("details[open]"),
                                          function (d) { return d.id; });
      live.innerHTML = html;
      open.forEach(function (id) { var d = document.getElementById(id); if (d) { d.open = true; } });
      badge.textContent = "live";
      badge.className = "conn ok";
    }).catch(function (error) {
      badge.textContent = "not updating: " + error.message;
      badge.className = "conn bad";
    }).then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
}());
