// Service worker of the reporting page: keeps the page, its script and style, the categories,
// the district's box and its grid map in a cache so that the page also opens, and draws its map,
// without signal (the clue queue itself lives in localStorage, photos in IndexedDB, the last "my
// reports" answer in localStorage). Network first (the map revalidates with its ETag), cache as
// fallback; only these GETs are touched, never the API's POSTs or a rider's own data.
"use strict";
var CACHE = "gridclue-report-v2";
var PAGE = "/report";
var ASSETS = [PAGE, "/report/app.js", "/report/app.css", "/v1/categories", "/v1/service-area", "/v1/map/grids.geojson"];

function keyOf(url) {
  var path = new URL(url).pathname;
  return path === "/" ? PAGE : path;
}

self.addEventListener("install", function (event) {
  event.waitUntil(
    caches.open(CACHE).then(function (c) { return c.addAll(ASSETS); }).then(function () { return self.skipWaiting(); })
  );
});

self.addEventListener("activate", function (event) {
  event.waitUntil(
    caches.keys().then(function (keys) {
      return Promise.all(keys.filter(function (k) { return k !== CACHE; }).map(function (k) { return caches.delete(k); }));
    }).then(function () { return self.clients.claim(); })
  );
});

self.addEventListener("fetch", function (event) {
  var req = event.request;
  if (req.method !== "GET" || new URL(req.url).origin !== self.location.origin) return;
  var key = keyOf(req.url);
  if (ASSETS.indexOf(key) < 0) return;
  event.respondWith(
    fetch(req).then(function (resp) {
      if (resp.ok) {
        var copy = resp.clone();
        caches.open(CACHE).then(function (c) { return c.put(key, copy); });
      }
      return resp;
    }).catch(function () {
      return caches.match(key).then(function (hit) { return hit || Response.error(); });
    })
  );
});
