// Draws the figures each page embeds (plotly.js, served by the app) and refreshes the live part in place.
"use strict";

function drawFigures(root) {
  root.querySelectorAll("script.figure").forEach(function (node) {
    var fig = JSON.parse(node.textContent);
    var target = document.getElementById(node.dataset.target);
    if (target) {
      Plotly.react(target, fig.data, fig.layout, {displayModeBar: false, responsive: true});
    }
  });
}

function refreshLive() {
  var url = new URL(window.location.href);
  url.searchParams.set("partial", "1");
  return fetch(url, {credentials: "same-origin"})
    .then(function (response) { return response.text(); })
    .then(function (html) {
      var live = document.getElementById("live");
      live.innerHTML = html;
      drawFigures(live);
      document.body.dataset.refreshedAt = new Date().toISOString();
    })
    .catch(function () { /* the next tick tries again */ });
}

document.addEventListener("DOMContentLoaded", function () {
  drawFigures(document);
  var seconds = parseInt(document.body.dataset.refresh || "0", 10);
  if (seconds > 0) {
    window.setInterval(refreshLive, seconds * 1000);
  }
});
