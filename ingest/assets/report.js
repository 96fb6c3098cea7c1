// gridclue reporting page, offline-first. Every clue goes into a queue kept in localStorage (with
// its own clue id), its photo into IndexedDB; photos are uploaded first (POST /v1/photos answers
// their content address), then the queue is sent with POST /v1/clues:batch — at once when
// online, on the browser's `online` event and on a retry timer. Re-sending is harmless: the
// server recognises the clue id, so a clue is stored exactly once, and a photo by its content.
// The map is the district's grid GeoJSON drawn on a canvas; the grid, community and street a
// point falls in are found here, by point in polygon on that same map.
(function () {
  "use strict";

  var KEY = { token: "gc.token", lang: "gc.lang", queue: "gc.queue", cats: "gc.categories", area: "gc.area", mine: "gc.mine" };
  var RETRY_MS = 15000;
  var BATCH_MAX = 500;
  var PHOTO_MAX_PX = 1600;
  var PHOTO_QUALITY = 0.85;

  var STATUS = {
    zh: { reported: "已上报", accepted: "已立案", dispatched: "已派遣", in_progress: "处置中", handled: "已处置",
      closed: "已结案", rejected: "不予立案", duplicate: "重复上报", withdrawn: "已撤回", outside: "辖区外" },
    en: { reported: "Reported", accepted: "Accepted", dispatched: "Dispatched", in_progress: "In progress", handled: "Handled",
      closed: "Closed", rejected: "Rejected", duplicate: "Duplicate", withdrawn: "Withdrawn", outside: "Outside" }
  };
  var ACTION = {
    zh: { report: "上报", accept: "立案", reject: "不予立案", merge: "合并", dispatch: "派遣", start: "开始处置", handle: "处置完成",
      return: "退回", verify_ok: "核查通过", verify_fail: "返工", withdraw: "撤回", request_postpone: "申请延期",
      approve_postpone: "批准延期", deny_postpone: "不批准延期", supervise: "督办", rate: "评价" },
    en: { report: "reported", accept: "accepted", reject: "rejected", merge: "merged", dispatch: "dispatched", start: "started", handle: "handled",
      return: "returned", verify_ok: "verified", verify_fail: "sent back for rework", withdraw: "withdrawn",
      request_postpone: "postponement asked", approve_postpone: "postponed", deny_postpone: "postponement denied",
      supervise: "supervised", rate: "rated" }
  };
  var REASON = {
    zh: { accepted: "立案", closed: "结案", duplicate: "重复确认", rejected: "不予立案", withdrawn: "撤回", outside: "辖区外" },
    en: { accepted: "accepted", closed: "closed", duplicate: "confirmed duplicate", rejected: "rejected", withdrawn: "withdrawn", outside: "outside" }
  };

  var TEXT = {
    zh: {
      title: "线索上报", tokenLabel: "请输入上报令牌（只需一次）", save: "保存",
      tabReport: "上报", tabMine: "我的上报",
      pickCategory: "① 选择问题类别", pickPlace: "② 确认位置（点地图可调整）",
      locating: "正在定位…", pinManually: "输入坐标",
      lat: "纬度", lon: "经度", notePlaceholder: "补充说明（可选）", submit: "③ 提交",
      takePhoto: "📷 拍照（可选）", removePhoto: "删除照片", photoFailed: "照片无法读取",
      changeToken: "更换令牌", online: "在线", offline: "离线",
      queued: function (n) { return n ? "待发送 " + n + " 条" : ""; },
      located: function (a) { return "已定位（±" + a + " 米）"; },
      pinned: "已手动定位", noLocation: "无法获取位置，请在地图上点选",
      needLocation: "请先定位", sending: "正在发送…",
      sent: function (n) { return "已发送 " + n + " 条，谢谢！"; },
      savedOffline: "已保存，联网后自动发送", retryLater: "暂时无法发送，稍后自动重试",
      badToken: "令牌无效，请重新输入", rejected: function (m) { return "未被接受：" + m; },
      photoRefused: "照片未被接受，线索已不带照片发送",
      noCategories: "无法加载类别，请联网后重试",
      mapLoading: "正在加载地图…", mapFailed: "地图暂不可用，可点选或输入坐标",
      grid: "网格", outsideGrid: "该位置不在辖区网格内",
      balance: "积分", refresh: "刷新", pointEntries: "积分明细",
      mineEmpty: "还没有上报记录", mineOffline: "离线：显示上次获取的数据", mineFailed: "暂时无法获取",
      pending: "待发送", lastAction: "最近处理", deadline: "处置时限"
    },
    en: {
      title: "Report a problem", tokenLabel: "Enter your reporter token (only once)", save: "Save",
      tabReport: "Report", tabMine: "My reports",
      pickCategory: "1. Pick a category", pickPlace: "2. Check the place (tap the map to move it)",
      locating: "Locating…", pinManually: "Type coordinates",
      lat: "Latitude", lon: "Longitude", notePlaceholder: "Note (optional)", submit: "3. Submit",
      takePhoto: "📷 Photo (optional)", removePhoto: "Remove photo", photoFailed: "The photo could not be read",
      changeToken: "Change token", online: "Online", offline: "Offline",
      queued: function (n) { return n ? n + " waiting to send" : ""; },
      located: function (a) { return "Located (±" + a + " m)"; },
      pinned: "Location set by hand", noLocation: "No location: tap the map to set it",
      needLocation: "Set a location first", sending: "Sending…",
      sent: function (n) { return n + " sent, thank you!"; },
      savedOffline: "Saved; it will be sent when back online", retryLater: "Could not send; will retry",
      badToken: "Token not valid: please enter it again", rejected: function (m) { return "Not accepted: " + m; },
      photoRefused: "The photo was refused; the report was sent without it",
      noCategories: "Categories unavailable: go online and retry",
      mapLoading: "Loading the map…", mapFailed: "Map unavailable: tap or type coordinates",
      grid: "Grid", outsideGrid: "This point is in none of the district's grids",
      balance: "Points", refresh: "Refresh", pointEntries: "Point entries",
      mineEmpty: "No reports yet", mineOffline: "Offline: showing the last answer", mineFailed: "Not available right now",
      pending: "Waiting to send", lastAction: "Last action", deadline: "Deadline"
    }
  };

  var $ = function (id) { return document.getElementById(id); };
  var state = {
    lang: load(KEY.lang) || "zh",
    token: load(KEY.token) || "",
    categories: loadJson(KEY.cats) || [],
    area: loadJson(KEY.area),
    queue: loadJson(KEY.queue) || [],
    mine: loadJson(KEY.mine),
    selected: null,
    location: null, // {lat, lon, source: "gps"|"pin", accuracy}
    photo: null, // {key, url}
    tab: "report",
    flushing: false,
    sent: 0,
    lastStatus: null
  };

  function load(k) { try { return localStorage.getItem(k); } catch (e) { return null; } }
  function save(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* storage full or off */ } }
  function drop(k) { try { localStorage.removeItem(k); } catch (e) { /* storage off */ } }
  function loadJson(k) { try { return JSON.parse(load(k) || "null"); } catch (e) { return null; } }
  function t(key) { return TEXT[state.lang][key]; }

  function uuid4() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  // ---- photos kept in IndexedDB until uploaded ----------------------------------------------
  var photoDb = null;
  function db() {
    if (!photoDb) {
      photoDb = new Promise(function (resolve, reject) {
        var open = indexedDB.open("gridclue-report", 1);
        open.onupgradeneeded = function () { open.result.createObjectStore("photos"); };
        open.onsuccess = function () { resolve(open.result); };
        open.onerror = function () { reject(open.error); };
      });
    }
    return photoDb;
  }
  function idb(mode, action) {
    return db().then(function (d) {
      return new Promise(function (resolve, reject) {
        var tx = d.transaction("photos", mode);
        var req = action(tx.objectStore("photos"));
        tx.oncomplete = function () { resolve(req.result); };
        tx.onerror = function () { reject(tx.error); };
      });
    });
  }
  function photoPut(key, blob) { return idb("readwrite", function (s) { return s.put(blob, key); }); }
  function photoGet(key) { return idb("readonly", function (s) { return s.get(key); }); }
  function photoDelete(key) { return idb("readwrite", function (s) { return s.delete(key); }); }

  // A camera photo is several MB with its EXIF (the position among it): drawn onto a canvas at
  // most PHOTO_MAX_PX wide or high and re-encoded as JPEG, it is a few hundred KB without any.
  function decode(file) {
    if (window.createImageBitmap) return createImageBitmap(file);
    return new Promise(function (resolve, reject) {
      var url = URL.createObjectURL(file), img = new Image();
      img.onload = function () { URL.revokeObjectURL(url); resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error("undecodable")); };
      img.src = url;
    });
  }
  function downscale(file) {
    return decode(file).then(function (img) {
      var w = img.width, h = img.height, k = Math.min(1, PHOTO_MAX_PX / Math.max(w, h, 1));
      var c = document.createElement("canvas");
      c.width = Math.max(1, Math.round(w * k));
      c.height = Math.max(1, Math.round(h * k));
      c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
      return new Promise(function (resolve, reject) {
        c.toBlob(function (b) { if (b) resolve(b); else reject(new Error("encoding failed")); }, "image/jpeg", PHOTO_QUALITY);
      });
    });
  }
  function onPhoto() {
    var file = $("photo-input").files && $("photo-input").files[0];
    if (!file) return;
    downscale(file).then(function (blob) {
      var key = uuid4();
      return photoPut(key, blob).then(function () {
        clearPhoto(true);
        state.photo = { key: key, url: URL.createObjectURL(blob), bytes: blob.size };
        renderPhoto();
      });
    }).catch(function () { setStatus("photoFailed", null, true); })
      .then(function () { $("photo-input").value = ""; });
  }
  function clearPhoto(forget) {
    if (state.photo) {
      URL.revokeObjectURL(state.photo.url);
      if (forget) photoDelete(state.photo.key).catch(function () {});
    }
    state.photo = null;
    renderPhoto();
  }
  function renderPhoto() {
    var img = $("photo-preview");
    img.hidden = !state.photo;
    $("photo-remove").hidden = !state.photo;
    if (state.photo) { img.src = state.photo.url; img.dataset.bytes = String(state.photo.bytes); }
    else { img.removeAttribute("src"); }
  }

  // ---- the map ---------------------------------------------------------------------------
  // Coordinates are projected once (x = lon·cos φ0, y = lat: lengths true around the district)
  // and kept in flat arrays. Edges are classified by the grids on their two sides (neighbours
  // share bit-identical vertices): a street's border is drawn thickest, a community's thicker,
  // the rest thin.
  var map = {
    loaded: false, failed: false, cos: 1,
    grids: [], excluded: [], edges: { grid: [], community: [], street: [] },
    streets: [], communities: [],
    view: null, fit: null
  };

  function project(lon, lat) { return [lon * map.cos, lat]; }

  function ringArrays(coords) {
    return coords.map(function (ring) {
      var a = new Float64Array(ring.length * 2);
      for (var i = 0; i < ring.length; i++) {
        a[2 * i] = ring[i][0] * map.cos;
        a[2 * i + 1] = ring[i][1];
      }
      return a;
    });
  }

  function bboxOf(rings) {
    var b = [Infinity, Infinity, -Infinity, -Infinity];
    rings.forEach(function (r) {
      for (var i = 0; i < r.length; i += 2) {
        if (r[i] < b[0]) b[0] = r[i];
        if (r[i + 1] < b[1]) b[1] = r[i + 1];
        if (r[i] > b[2]) b[2] = r[i];
        if (r[i + 1] > b[3]) b[3] = r[i + 1];
      }
    });
    return b;
  }

  function polygonsOf(geometry) {
    if (!geometry) return [];
    if (geometry.type === "Polygon") return [geometry.coordinates];
    if (geometry.type === "MultiPolygon") return geometry.coordinates;
    return [];
  }

  function buildMap(fc) {
    var features = fc.features || [];
    var lat0 = state.area && state.area.bbox ? (state.area.bbox.min_lat + state.area.bbox.max_lat) / 2 : 31.2;
    map.cos = Math.cos((lat0 * Math.PI) / 180);
    var owner = new Map(); // edge key → index of the first grid that has it
    var streetLabels = {}, communityLabels = {};
    features.forEach(function (f) {
      var p = f.properties || {};
      polygonsOf(f.geometry).forEach(function (coords) {
        var rings = ringArrays(coords);
        if (p.kind !== "grid") { map.excluded.push({ rings: rings, name: p.name || "" }); return; }
        var g = {
          code: p.grid_code, community: p.community_code, communityName: p.community_name,
          street: p.street_code, streetName: p.street_name, rings: rings, bbox: bboxOf(rings)
        };
        var index = map.grids.push(g) - 1;
        var cx = (g.bbox[0] + g.bbox[2]) / 2, cy = (g.bbox[1] + g.bbox[3]) / 2;
        [[streetLabels, g.street, g.streetName], [communityLabels, g.community, g.communityName]].forEach(function (l) {
          var acc = l[0][l[1]] || (l[0][l[1]] = { name: l[2], x: 0, y: 0, n: 0 });
          acc.x += cx; acc.y += cy; acc.n += 1;
        });
        coords.forEach(function (ring, r) {
          var flat = rings[r];
          for (var i = 0; i + 1 < ring.length; i++) {
            var a = ring[i][0] + "," + ring[i][1], b = ring[i + 1][0] + "," + ring[i + 1][1];
            var key = a < b ? a + "|" + b : b + "|" + a;
            var other = owner.get(key);
            var seg = [flat[2 * i], flat[2 * i + 1], flat[2 * i + 2], flat[2 * i + 3]];
            if (other === undefined) { owner.set(key, { grid: index, seg: seg }); continue; }
            owner.delete(key);
            var o = map.grids[other.grid];
            var cls = o.street !== g.street ? "street" : o.community !== g.community ? "community" : "grid";
            Array.prototype.push.apply(map.edges[cls], seg);
          }
        });
      });
    });
    // Edges with one grid only: the district's border, lakes and ponds.
    owner.forEach(function (v) { Array.prototype.push.apply(map.edges.street, v.seg); });
    function labels(acc) {
      return Object.keys(acc).map(function (k) { var a = acc[k]; return { name: a.name, x: a.x / a.n, y: a.y / a.n }; });
    }
    map.streets = labels(streetLabels);
    map.communities = labels(communityLabels);
    var all = bboxOf(map.grids.map(function (g) { return new Float64Array([g.bbox[0], g.bbox[1], g.bbox[2], g.bbox[3]]); }));
    map.fit = all;
    map.loaded = true;
  }

  function ringContains(r, x, y) {
    var inside = false;
    for (var i = 0, j = r.length - 2; i < r.length; j = i, i += 2) {
      var xi = r[i], yi = r[i + 1], xj = r[j], yj = r[j + 1];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  // The grid a point falls in (holes — ponds — excluded by the even-odd rule over all rings).
  function gridAt(lat, lon) {
    var p = project(lon, lat);
    for (var n = 0; n < map.grids.length; n++) {
      var g = map.grids[n], b = g.bbox;
      if (p[0] < b[0] || p[0] > b[2] || p[1] < b[1] || p[1] > b[3]) continue;
      var inside = false;
      for (var r = 0; r < g.rings.length; r++) if (ringContains(g.rings[r], p[0], p[1])) inside = !inside;
      if (inside) return g;
    }
    return null;
  }

  function canvasSize() {
    var c = $("map"), ratio = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(c.clientWidth * ratio)), h = Math.max(1, Math.round(c.clientHeight * ratio));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    return { w: w, h: h, ratio: ratio };
  }

  function fitScale() {
    var s = canvasSize(), f = map.fit || boxFromArea();
    if (!f) return 1;
    return Math.min(s.w / (f[2] - f[0]), s.h / (f[3] - f[1])) * 0.96;
  }

  function boxFromArea() {
    var a = state.area && state.area.bbox;
    if (!a) return null;
    var lo = project(a.min_lon, a.min_lat), hi = project(a.max_lon, a.max_lat);
    return [lo[0], lo[1], hi[0], hi[1]];
  }

  function resetView() {
    var f = map.fit || boxFromArea();
    if (!f) return;
    map.view = { x: (f[0] + f[2]) / 2, y: (f[1] + f[3]) / 2, scale: fitScale() };
  }

  function toScreen(x, y, s) {
    return [(x - map.view.x) * map.view.scale + s.w / 2, s.h / 2 - (y - map.view.y) * map.view.scale];
  }

  function fromScreen(px, py, s) {
    return [(px - s.w / 2) / map.view.scale + map.view.x, map.view.y - (py - s.h / 2) / map.view.scale];
  }

  function drawSegments(ctx, segs, s) {
    ctx.beginPath();
    for (var i = 0; i < segs.length; i += 4) {
      var a = toScreen(segs[i], segs[i + 1], s), b = toScreen(segs[i + 2], segs[i + 3], s);
      ctx.moveTo(a[0], a[1]);
      ctx.lineTo(b[0], b[1]);
    }
    ctx.stroke();
    return segs.length / 4;
  }

  function fillRings(ctx, rings, s) {
    ctx.beginPath();
    rings.forEach(function (r) {
      for (var i = 0; i < r.length; i += 2) {
        var p = toScreen(r[i], r[i + 1], s);
        if (i === 0) ctx.moveTo(p[0], p[1]); else ctx.lineTo(p[0], p[1]);
      }
      ctx.closePath();
    });
    ctx.fill("evenodd");
  }

  function drawLabels(ctx, list, s, font, color) {
    ctx.font = font;
    ctx.fillStyle = color;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.strokeStyle = "rgba(255,255,255,0.85)";
    ctx.lineWidth = 3 * s.ratio;
    list.forEach(function (l) {
      var p = toScreen(l.x, l.y, s);
      if (p[0] < 0 || p[1] < 0 || p[0] > s.w || p[1] > s.h) return;
      ctx.strokeText(l.name, p[0], p[1]);
      ctx.fillText(l.name, p[0], p[1]);
    });
  }

  function drawMap() {
    var canvas = $("map");
    if (!canvas || !canvas.clientWidth) return;
    var s = canvasSize(), ctx = canvas.getContext("2d");
    if (!map.view) resetView();
    ctx.fillStyle = "#eef3ef";
    ctx.fillRect(0, 0, s.w, s.h);
    var drawn = 0;
    if (map.view && map.loaded) {
      var zoom = map.view.scale / fitScale();
      var place = state.place;
      if (place) { ctx.fillStyle = "rgba(11,110,79,0.22)"; fillRings(ctx, place.rings, s); }
      ctx.fillStyle = "#cfe3f3";
      map.excluded.forEach(function (e) { fillRings(ctx, e.rings, s); });
      ctx.lineCap = "round";
      ctx.strokeStyle = "#b7c4be"; ctx.lineWidth = Math.max(0.5, Math.min(1.5, zoom / 3)) * s.ratio;
      drawn += drawSegments(ctx, map.edges.grid, s);
      ctx.strokeStyle = "#7f948a"; ctx.lineWidth = 1.5 * s.ratio;
      drawn += drawSegments(ctx, map.edges.community, s);
      ctx.strokeStyle = "#0b6e4f"; ctx.lineWidth = 3 * s.ratio;
      drawn += drawSegments(ctx, map.edges.street, s);
      if (zoom < 2.5) drawLabels(ctx, map.streets, s, "bold " + 13 * s.ratio + "px sans-serif", "#0b4a36");
      else drawLabels(ctx, map.communities, s, 12 * s.ratio + "px sans-serif", "#33463d");
      if (zoom >= 8) {
        drawLabels(ctx, map.grids.map(function (g) {
          return { name: g.code.slice(-3), x: (g.bbox[0] + g.bbox[2]) / 2, y: (g.bbox[1] + g.bbox[3]) / 2 };
        }), s, 10 * s.ratio + "px sans-serif", "#6b7d75");
      }
    } else if (map.view) {
      var f = boxFromArea(), lo = toScreen(f[0], f[1], s), hi = toScreen(f[2], f[3], s);
      ctx.strokeStyle = "#0b6e4f"; ctx.lineWidth = 2 * s.ratio;
      ctx.strokeRect(lo[0], hi[1], hi[0] - lo[0], lo[1] - hi[1]);
    }
    var l = state.location;
    if (l && map.view) {
      var q = project(l.lon, l.lat), p = toScreen(q[0], q[1], s);
      if (l.accuracy) {
        var metres = (l.accuracy / 111320) * map.view.scale;
        ctx.fillStyle = "rgba(26,115,232,0.15)";
        ctx.beginPath(); ctx.arc(p[0], p[1], metres, 0, Math.PI * 2); ctx.fill();
      }
      ctx.fillStyle = l.source === "gps" ? "#1a73e8" : "#b3261e";
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 2 * s.ratio;
      ctx.beginPath(); ctx.arc(p[0], p[1], 8 * s.ratio, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
    }
    canvas.dataset.drawn = String(drawn);
    $("map-state").textContent = map.loaded ? "" : map.failed ? t("mapFailed") : t("mapLoading");
  }

  function zoomBy(k, px, py) {
    if (!map.view) return;
    var s = canvasSize();
    var before = fromScreen(px === undefined ? s.w / 2 : px, py === undefined ? s.h / 2 : py, s);
    var min = fitScale() * 0.8, max = fitScale() * 64;
    map.view.scale = Math.min(max, Math.max(min, map.view.scale * k));
    var after = fromScreen(px === undefined ? s.w / 2 : px, py === undefined ? s.h / 2 : py, s);
    map.view.x += before[0] - after[0];
    map.view.y += before[1] - after[1];
    drawMap();
  }

  function centreOn(lat, lon, minZoom) {
    if (!map.view) resetView();
    if (!map.view) return;
    var p = project(lon, lat);
    map.view.x = p[0]; map.view.y = p[1];
    map.view.scale = Math.max(map.view.scale, fitScale() * minZoom);
  }

  // Drag pans, a wheel or pinch zooms, a tap (a press that hardly moved) places the point.
  function mapGestures() {
    var canvas = $("map"), pointers = new Map(), moved = false, pinch = null;
    canvas.addEventListener("pointerdown", function (e) {
      canvas.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      moved = pointers.size > 1;
      pinch = null;
    });
    canvas.addEventListener("pointermove", function (e) {
      var last = pointers.get(e.pointerId);
      if (!last || !map.view) return;
      var ratio = window.devicePixelRatio || 1;
      if (pointers.size === 1) {
        var dx = e.clientX - last.x, dy = e.clientY - last.y;
        if (!moved && Math.abs(dx) + Math.abs(dy) < 6) return;
        moved = true;
        map.view.x -= (dx * ratio) / map.view.scale;
        map.view.y += (dy * ratio) / map.view.scale;
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        drawMap();
      } else {
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        var pts = Array.from(pointers.values());
        var d = Math.hypot(pts[0].x - pts[1].x, pts[0].y - pts[1].y);
        if (pinch) zoomBy(d / pinch);
        pinch = d;
      }
    });
    function up(e) {
      var was = pointers.get(e.pointerId);
      pointers.delete(e.pointerId);
      if (pointers.size === 0 && was && !moved && e.type === "pointerup") onMapTap(e);
      if (pointers.size < 2) pinch = null;
    }
    canvas.addEventListener("pointerup", up);
    canvas.addEventListener("pointercancel", up);
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = canvas.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
      zoomBy(e.deltaY < 0 ? 1.25 : 0.8, (e.clientX - r.left) * ratio, (e.clientY - r.top) * ratio);
    }, { passive: false });
  }

  function onMapTap(ev) {
    if (!map.view) return;
    var canvas = $("map"), r = canvas.getBoundingClientRect(), s = canvasSize();
    var px = ((ev.clientX - r.left) / r.width) * s.w, py = ((ev.clientY - r.top) / r.height) * s.h;
    var p = fromScreen(px, py, s);
    state.location = { lat: p[1], lon: p[0] / map.cos, source: "pin" };
    renderLocation();
  }

  function renderPlace() {
    var el = $("place");
    var l = state.location;
    state.place = l && map.loaded ? gridAt(l.lat, l.lon) : null;
    var g = state.place;
    el.dataset.grid = g ? g.code : "";
    el.dataset.community = g ? g.community : "";
    el.dataset.street = g ? g.street : "";
    el.className = "place" + (l && map.loaded && !g ? " outside" : "");
    if (g) el.textContent = g.streetName + " · " + g.communityName + " · " + t("grid") + " " + g.code;
    else el.textContent = l && map.loaded ? t("outsideGrid") : "";
  }

  // ---- rendering -------------------------------------------------------------------------
  function setStatus(key, arg, isError) {
    state.lastStatus = [key, arg, isError];
    var v = TEXT[state.lang][key];
    var el = $("status");
    el.textContent = typeof v === "function" ? v(arg) : (v || "");
    el.className = isError ? "error" : "";
    el.dataset.key = key;
  }

  function renderTexts() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    document.querySelectorAll("[data-i18n]").forEach(function (el) { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach(function (el) { el.placeholder = t(el.dataset.i18nPlaceholder); });
    $("lang").textContent = state.lang === "zh" ? "EN" : "中文";
    renderCategories();
    renderLocation();
    renderNet();
    renderMine();
    if (state.lastStatus) setStatus.apply(null, state.lastStatus);
  }

  function categoryName(code) {
    var c = state.categories.filter(function (x) { return x.code === code; })[0];
    return c ? (state.lang === "zh" ? c.name_zh : c.name_en) : code;
  }

  function renderCategories() {
    var box = $("categories");
    box.textContent = "";
    if (!state.categories.length) {
      box.textContent = t("noCategories");
      return;
    }
    state.categories.forEach(function (c) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "cat";
      b.setAttribute("role", "radio");
      b.setAttribute("aria-checked", String(state.selected === c.code));
      b.dataset.code = c.code;
      var icon = document.createElement("span");
      icon.className = "icon";
      icon.textContent = c.icon || "❗";
      var name = document.createElement("span");
      name.className = "name";
      name.textContent = state.lang === "zh" ? c.name_zh : c.name_en;
      b.appendChild(icon);
      b.appendChild(name);
      b.addEventListener("click", function () {
        state.selected = c.code;
        box.querySelectorAll(".cat").forEach(function (x) {
          x.setAttribute("aria-checked", String(x.dataset.code === c.code));
        });
        updateSubmit();
      });
      box.appendChild(b);
    });
  }

  function renderLocation() {
    var el = $("loc-text");
    var l = state.location;
    if (!l) { el.textContent = state.geoFailed ? t("noLocation") : t("locating"); }
    else if (l.source === "gps") { el.textContent = t("located")(Math.round(l.accuracy || 0)); }
    else { el.textContent = t("pinned"); }
    if (l) {
      $("lat").value = l.lat.toFixed(6);
      $("lon").value = l.lon.toFixed(6);
    }
    renderPlace();
    drawMap();
    updateSubmit();
  }

  function renderNet() {
    var on = navigator.onLine;
    var net = $("net");
    net.textContent = on ? t("online") : t("offline");
    net.className = on ? "" : "offline";
    $("queue").textContent = t("queued")(state.queue.length);
    document.body.dataset.queue = String(state.queue.length);
    document.body.dataset.sent = String(state.sent);
  }

  function updateSubmit() {
    $("submit").disabled = !(state.selected && state.location);
  }

  function onTypedLocation() {
    var lat = parseFloat($("lat").value), lon = parseFloat($("lon").value);
    if (isFinite(lat) && isFinite(lon) && Math.abs(lat) <= 90 && Math.abs(lon) <= 180) {
      state.location = { lat: lat, lon: lon, source: "pin" };
      renderLocation();
    }
  }

  function showPin(show) {
    $("pin-panel").hidden = !show;
  }

  function locate(recentre) {
    if (!navigator.geolocation) { state.geoFailed = true; showPin(true); renderLocation(); return; }
    navigator.geolocation.getCurrentPosition(function (p) {
      if (!recentre && state.location && state.location.source === "pin") return;
      state.location = { lat: p.coords.latitude, lon: p.coords.longitude, accuracy: p.coords.accuracy, source: "gps" };
      centreOn(state.location.lat, state.location.lon, 4);
      renderLocation();
    }, function () {
      state.geoFailed = true;
      showPin(true);
      renderLocation();
    }, { enableHighAccuracy: true, timeout: 10000, maximumAge: 30000 });
  }

  // ---- the queue -------------------------------------------------------------------------
  function saveQueue() {
    save(KEY.queue, JSON.stringify(state.queue));
    renderNet();
  }

  function submit() {
    if (!state.selected) return;
    if (!state.location) { setStatus("needLocation", null, true); return; }
    var item = {
      clue_id: uuid4(),
      category: state.selected,
      lat: state.location.lat,
      lon: state.location.lon,
      description: $("note").value.trim(),
      reported_at: new Date().toISOString()
    };
    if (state.photo) item.photo_key = state.photo.key;
    state.queue.push(item);
    saveQueue();
    state.selected = null;
    $("note").value = "";
    clearPhoto(false);
    renderCategories();
    updateSubmit();
    renderMine();
    if (navigator.onLine) { flush(); } else { setStatus("savedOffline"); }
  }

  function authHeaders(extra) {
    var h = { "Authorization": "Bearer " + state.token, "X-Gridclue-Client": "web" };
    Object.keys(extra || {}).forEach(function (k) { h[k] = extra[k]; });
    return h;
  }

  // A clue is sent only once its photo is uploaded (or refused for good), so that every copy
  // of it the server sees is the same.
  function uploadPhoto(item) {
    return photoGet(item.photo_key).then(function (blob) {
      var key = item.photo_key;
      if (!blob) { delete item.photo_key; saveQueue(); return; }
      return fetch("/v1/photos", {
        method: "POST",
        headers: authHeaders({ "Content-Type": blob.type || "image/jpeg" }),
        body: blob
      }).then(function (r) {
        if (r.status === 401) throw new Error("token");
        if (r.ok) {
          return r.json().then(function (body) {
            item.photos = [body.photo];
            delete item.photo_key;
            saveQueue();
            return photoDelete(key);
          });
        }
        if (r.status >= 400 && r.status < 500 && r.status !== 429 && r.status !== 408) {
          delete item.photo_key;
          saveQueue();
          setStatus("photoRefused", null, true);
          return photoDelete(key);
        }
      });
    });
  }

  function uploadPhotos() {
    return state.queue.filter(function (q) { return q.photo_key; }).reduce(function (p, item) {
      return p.then(function () { return uploadPhoto(item); });
    }, Promise.resolve());
  }

  function wire(item) {
    var c = {};
    ["clue_id", "category", "lat", "lon", "description", "reported_at", "photos"].forEach(function (k) {
      if (item[k] !== undefined) c[k] = item[k];
    });
    return c;
  }

  function flush() {
    if (state.flushing || !state.queue.length || !state.token) return Promise.resolve();
    if (!navigator.onLine) { setStatus("savedOffline"); return Promise.resolve(); }
    state.flushing = true;
    setStatus("sending");
    var batch = [];
    return uploadPhotos().then(function () {
      batch = state.queue.filter(function (q) { return !q.photo_key; }).slice(0, BATCH_MAX);
      if (!batch.length) return null;
      return fetch("/v1/clues:batch", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ clues: batch.map(wire) })
      });
    }).then(function (r) {
      if (!r) { setStatus("retryLater", null, true); return null; }
      if (r.status === 401 || r.status === 403) {
        setStatus("badToken", null, true);
        askToken();
        return null;
      }
      if (!r.ok) { setStatus("retryLater", null, true); return null; }
      return r.json();
    }).then(function (body) {
      if (!body) return;
      var done = {}, sent = 0, refused = null;
      body.results.forEach(function (res) {
        var item = batch[res.index];
        if (!item) return;
        if (res.status === "accepted" || res.status === "duplicate") { done[item.clue_id] = true; sent++; }
        else if (!res.retryable) { done[item.clue_id] = true; refused = res.detail || res.code; }
      });
      state.queue = state.queue.filter(function (q) { return !done[q.clue_id]; });
      state.sent += sent;
      saveQueue();
      if (refused) setStatus("rejected", refused, true);
      else if (state.queue.length) setStatus("retryLater", null, true);
      else setStatus("sent", sent);
      if (sent && state.tab === "mine") refreshMine();
    }).catch(function (e) {
      if (e && e.message === "token") { setStatus("badToken", null, true); askToken(); return; }
      setStatus(navigator.onLine ? "retryLater" : "savedOffline", null, true);
    }).then(function () {
      state.flushing = false;
      renderNet();
      renderMine();
      if (state.queue.length && navigator.onLine && state.queue.length > BATCH_MAX - 1) flush();
    });
  }

  // ---- my reports --------------------------------------------------------------------------
  function showTab(tab) {
    state.tab = tab;
    $("tab-report").setAttribute("aria-selected", String(tab === "report"));
    $("tab-mine").setAttribute("aria-selected", String(tab === "mine"));
    if (!state.token) return;
    $("report-panel").hidden = tab !== "report";
    $("mine-panel").hidden = tab !== "mine";
    if (tab === "mine") refreshMine(); else drawMap();
  }

  function refreshMine() {
    if (!state.token) return;
    if (!navigator.onLine) { state.mineNote = "mineOffline"; renderMine(); return; }
    var get = function (url) {
      return fetch(url, { headers: authHeaders() }).then(function (r) {
        if (r.status === 401) throw new Error("token");
        if (!r.ok) throw new Error(String(r.status));
        return r.json();
      });
    };
    Promise.all([get("/v1/my/clues?limit=50"), get("/v1/my/points")]).then(function (both) {
      state.mine = { clues: both[0], points: both[1] };
      state.mineNote = null;
      save(KEY.mine, JSON.stringify(state.mine));
      renderMine();
    }).catch(function (e) {
      if (e && e.message === "token") { setStatus("badToken", null, true); askToken(); return; }
      state.mineNote = navigator.onLine ? "mineFailed" : "mineOffline";
      renderMine();
    });
  }

  function when(ms) {
    if (!ms) return "";
    var d = new Date(ms);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return (d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function item(cls, top, right, sub, data) {
    var li = document.createElement("li");
    if (cls) li.className = cls;
    Object.keys(data || {}).forEach(function (k) { li.dataset[k] = data[k]; });
    var row = document.createElement("div");
    row.className = "top";
    row.appendChild(top);
    var r = document.createElement("span");
    r.textContent = right;
    row.appendChild(r);
    li.appendChild(row);
    sub.filter(Boolean).forEach(function (text) {
      var s = document.createElement("span");
      s.className = "sub";
      s.textContent = text;
      li.appendChild(s);
    });
    return li;
  }

  function renderMine() {
    var list = $("my-list"), entries = $("points-entries");
    if (!list) return;
    list.textContent = "";
    entries.textContent = "";
    state.queue.forEach(function (q) {
      var name = document.createElement("span");
      name.textContent = categoryName(q.category);
      list.appendChild(item("pending", name, t("pending"), [when(Date.parse(q.reported_at))], { clue: q.clue_id, status: "pending" }));
    });
    var mine = state.mine, clues = mine && mine.clues && mine.clues.items || [];
    clues.forEach(function (c) {
      var top = document.createElement("span");
      if (c.light) {
        var dot = document.createElement("span");
        dot.className = "light " + c.light;
        dot.title = c.light;
        top.appendChild(dot);
      }
      top.appendChild(document.createTextNode(categoryName(c.category)));
      var action = c.last_action ? t("lastAction") + "：" + (ACTION[state.lang][c.last_action] || c.last_action) + " " + when(c.last_action_at_ms) : "";
      var place = [c.street_name, c.community_name].filter(Boolean).join(" · ");
      var deadline = c.deadline_ms && !c.closed_at_ms ? t("deadline") + "：" + when(c.deadline_ms) : "";
      list.appendChild(item("", top, STATUS[state.lang][c.status] || c.status,
        [when(c.reported_at_ms) + (place ? "  " + place : ""), action, deadline],
        { clue: c.clue_id, status: c.status, light: c.light || "", action: c.last_action || "" }));
    });
    var points = mine && mine.points;
    $("points-balance").textContent = points ? String(points.balance) : "–";
    (points && points.entries || []).forEach(function (e) {
      var top = document.createElement("span");
      top.textContent = REASON[state.lang][e.reason] || e.reason;
      entries.appendChild(item("", top, (e.points >= 0 ? "+" : "") + e.points, [when(Date.parse(e.at) || e.at_ms)], { clue: e.clue_id || "" }));
    });
    var note = state.mineNote || (!state.queue.length && !clues.length && mine ? "mineEmpty" : null);
    $("mine-state").textContent = note ? t(note) : "";
    document.body.dataset.mine = String(clues.length);
  }

  // ---- token -----------------------------------------------------------------------------
  function askToken() {
    $("token-panel").hidden = false;
    $("report-panel").hidden = true;
    $("mine-panel").hidden = true;
    $("token-input").value = "";
    $("token-input").focus();
  }

  function useToken(tok) {
    var changed = tok.trim() !== state.token;
    state.token = tok.trim();
    save(KEY.token, state.token);
    if (changed) { state.mine = null; drop(KEY.mine); }
    $("token-panel").hidden = true;
    showTab(state.tab);
    flush();
  }

  // ---- start -----------------------------------------------------------------------------
  function fetchJson(url) {
    return fetch(url).then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function loadMap() {
    fetchJson("/v1/map/grids.geojson").then(function (fc) {
      buildMap(fc);
      map.view = null;
      if (state.location) centreOn(state.location.lat, state.location.lon, state.location.source === "gps" ? 4 : 1);
      renderLocation();
    }).catch(function () { map.failed = true; drawMap(); });
  }

  function start() {
    var params = new URLSearchParams(location.search);
    if (params.get("token")) {
      if (params.get("token") !== state.token) { state.mine = null; drop(KEY.mine); }
      state.token = params.get("token");
      save(KEY.token, state.token);
      params.delete("token");
      var rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
    }
    if (params.get("lang") === "en" || params.get("lang") === "zh") state.lang = params.get("lang");

    $("lang").addEventListener("click", function () {
      state.lang = state.lang === "zh" ? "en" : "zh";
      save(KEY.lang, state.lang);
      renderTexts();
    });
    $("token-save").addEventListener("click", function () {
      if ($("token-input").value.trim()) useToken($("token-input").value);
    });
    $("change-token").addEventListener("click", askToken);
    $("submit").addEventListener("click", submit);
    $("pin-toggle").addEventListener("click", function () { showPin($("pin-panel").hidden); });
    $("zoom-in").addEventListener("click", function () { zoomBy(2); });
    $("zoom-out").addEventListener("click", function () { zoomBy(0.5); });
    $("locate-me").addEventListener("click", function () { locate(true); });
    $("photo-input").addEventListener("change", onPhoto);
    $("photo-remove").addEventListener("click", function () { clearPhoto(true); });
    $("tab-report").addEventListener("click", function () { showTab("report"); });
    $("tab-mine").addEventListener("click", function () { showTab("mine"); });
    $("mine-refresh").addEventListener("click", refreshMine);
    $("lat").addEventListener("change", onTypedLocation);
    $("lon").addEventListener("change", onTypedLocation);
    mapGestures();
    window.addEventListener("resize", drawMap);
    window.addEventListener("online", function () { renderNet(); flush(); });
    window.addEventListener("offline", renderNet);
    setInterval(flush, RETRY_MS);

    if ("serviceWorker" in navigator) {
      // Lets the page open without signal; the queue itself is in localStorage and IndexedDB.
      navigator.serviceWorker.register("/report-sw.js", { scope: "/" }).catch(function () {});
    }
    if (state.token) { showTab("report"); } else { askToken(); }
    renderTexts();
    locate(false);

    fetchJson("/v1/categories").then(function (body) {
      state.categories = body.categories || [];
      save(KEY.cats, JSON.stringify(state.categories));
      renderCategories();
      renderMine();
    }).catch(function () { renderCategories(); });
    fetchJson("/v1/service-area").then(function (body) {
      state.area = body;
      save(KEY.area, JSON.stringify(body));
      if (!map.loaded) { map.view = null; drawMap(); }
    }).catch(function () { /* keep the cached area */ }).then(loadMap);
    flush();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
