// gridclue reporting page: one screen, offline-first. Every clue goes into a queue kept in
// localStorage (with its own clue id), and the queue is sent with POST /v1/clues:batch — at once
// when online, on the browser's `online` event and on a retry timer. Re-sending is harmless: the
// server recognises the clue id, so a clue is stored exactly once.
(function () {
  "use strict";

  var KEY = { token: "gc.token", lang: "gc.lang", queue: "gc.queue", cats: "gc.categories", area: "gc.area" };
  var RETRY_MS = 15000;
  var BATCH_MAX = 500;

  var TEXT = {
    zh: {
      title: "线索上报", tokenLabel: "请输入上报令牌（只需一次）", save: "保存",
      pickCategory: "① 选择问题类别", locating: "正在定位…", pinManually: "手动定位",
      lat: "纬度", lon: "经度", notePlaceholder: "补充说明（可选）", submit: "② 提交",
      changeToken: "更换令牌", online: "在线", offline: "离线",
      queued: function (n) { return n ? "待发送 " + n + " 条" : ""; },
      located: function (a) { return "已定位（±" + a + " 米）"; },
      pinned: "已手动定位", noLocation: "无法获取位置，请在地图上点选",
      needLocation: "请先定位", sending: "正在发送…",
      sent: function (n) { return "已发送 " + n + " 条，谢谢！"; },
      savedOffline: "已保存，联网后自动发送", retryLater: "暂时无法发送，稍后自动重试",
      badToken: "令牌无效，请重新输入", rejected: function (m) { return "未被接受：" + m; },
      noCategories: "无法加载类别，请联网后重试"
    },
    en: {
      title: "Report a problem", tokenLabel: "Enter your reporter token (only once)", save: "Save",
      pickCategory: "1. Pick a category", locating: "Locating…", pinManually: "Set on map",
      lat: "Latitude", lon: "Longitude", notePlaceholder: "Note (optional)", submit: "2. Submit",
      changeToken: "Change token", online: "Online", offline: "Offline",
      queued: function (n) { return n ? n + " waiting to send" : ""; },
      located: function (a) { return "Located (±" + a + " m)"; },
      pinned: "Location set by hand", noLocation: "No location: tap the map to set it",
      needLocation: "Set a location first", sending: "Sending…",
      sent: function (n) { return n + " sent, thank you!"; },
      savedOffline: "Saved; it will be sent when back online", retryLater: "Could not send; will retry",
      badToken: "Token not valid: please enter it again", rejected: function (m) { return "Not accepted: " + m; },
      noCategories: "Categories unavailable: go online and retry"
    }
  };

  var $ = function (id) { return document.getElementById(id); };
  var state = {
    lang: load(KEY.lang) || "zh",
    token: load(KEY.token) || "",
    categories: loadJson(KEY.cats) || [],
    area: loadJson(KEY.area),
    queue: loadJson(KEY.queue) || [],
    selected: null,
    location: null, // {lat, lon, source: "gps"|"pin", accuracy}
    flushing: false,
    sent: 0,
    lastStatus: null
  };

  function load(k) { try { return localStorage.getItem(k); } catch (e) { return null; } }
  function save(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* storage full or off */ } }
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
    if (state.lastStatus) setStatus.apply(null, state.lastStatus);
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

  // ---- the map fallback: the district's bounding box, tap to place the pin ---------------
  function drawMap() {
    var canvas = $("map");
    if (!canvas || $("pin-panel").hidden) return;
    var ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height;
    ctx.fillStyle = "#e8efe9";
    ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "#b9c6c0";
    ctx.lineWidth = 1;
    for (var i = 1; i < 8; i++) {
      ctx.beginPath(); ctx.moveTo((w * i) / 8, 0); ctx.lineTo((w * i) / 8, h); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, (h * i) / 8); ctx.lineTo(w, (h * i) / 8); ctx.stroke();
    }
    ctx.strokeStyle = "#0b6e4f";
    ctx.lineWidth = 3;
    ctx.strokeRect(2, 2, w - 4, h - 4);
    var l = state.location, a = state.area && state.area.bbox;
    if (l && a) {
      var x = ((l.lon - a.min_lon) / (a.max_lon - a.min_lon)) * w;
      var y = ((a.max_lat - l.lat) / (a.max_lat - a.min_lat)) * h;
      ctx.fillStyle = "#b3261e";
      ctx.beginPath(); ctx.arc(x, y, 10, 0, Math.PI * 2); ctx.fill();
    }
  }

  function onMapTap(ev) {
    var a = state.area && state.area.bbox;
    if (!a) return;
    var r = ev.target.getBoundingClientRect();
    var fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
    state.location = {
      lat: a.max_lat - fy * (a.max_lat - a.min_lat),
      lon: a.min_lon + fx * (a.max_lon - a.min_lon),
      source: "pin"
    };
    renderLocation();
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
    drawMap();
  }

  function locate() {
    if (!navigator.geolocation) { state.geoFailed = true; showPin(true); renderLocation(); return; }
    navigator.geolocation.getCurrentPosition(function (p) {
      if (state.location && state.location.source === "pin") return;
      state.location = { lat: p.coords.latitude, lon: p.coords.longitude, accuracy: p.coords.accuracy, source: "gps" };
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
    state.queue.push({
      clue_id: uuid4(),
      category: state.selected,
      lat: state.location.lat,
      lon: state.location.lon,
      description: $("note").value.trim(),
      reported_at: new Date().toISOString()
    });
    saveQueue();
    state.selected = null;
    $("note").value = "";
    renderCategories();
    updateSubmit();
    if (navigator.onLine) { flush(); } else { setStatus("savedOffline"); }
  }

  function flush() {
    if (state.flushing || !state.queue.length || !state.token) return Promise.resolve();
    if (!navigator.onLine) { setStatus("savedOffline"); return Promise.resolve(); }
    state.flushing = true;
    setStatus("sending");
    var batch = state.queue.slice(0, BATCH_MAX);
    return fetch("/v1/clues:batch", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + state.token,
        "X-Gridclue-Client": "web"
      },
      body: JSON.stringify({ clues: batch })
    }).then(function (r) {
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
    }).catch(function () {
      setStatus(navigator.onLine ? "retryLater" : "savedOffline", null, true);
    }).then(function () {
      state.flushing = false;
      renderNet();
      if (state.queue.length && navigator.onLine && state.queue.length > BATCH_MAX - 1) flush();
    });
  }

  // ---- token -----------------------------------------------------------------------------
  function askToken() {
    $("token-panel").hidden = false;
    $("report-panel").hidden = true;
    $("token-input").value = "";
    $("token-input").focus();
  }

  function useToken(tok) {
    state.token = tok.trim();
    save(KEY.token, state.token);
    $("token-panel").hidden = true;
    $("report-panel").hidden = false;
    flush();
  }

  // ---- start -----------------------------------------------------------------------------
  function fetchJson(url) {
    return fetch(url).then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function start() {
    var params = new URLSearchParams(location.search);
    if (params.get("token")) {
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
    $("map").addEventListener("click", onMapTap);
    $("lat").addEventListener("change", onTypedLocation);
    $("lon").addEventListener("change", onTypedLocation);
    window.addEventListener("online", function () { renderNet(); flush(); });
    window.addEventListener("offline", renderNet);
    setInterval(flush, RETRY_MS);

    if ("serviceWorker" in navigator) {
      // Lets the page open without signal; the queue itself is in localStorage.
      navigator.serviceWorker.register("/report-sw.js", { scope: "/" }).catch(function () {});
    }
    if (state.token) { $("report-panel").hidden = false; } else { askToken(); }
    renderTexts();
    locate();

    fetchJson("/v1/categories").then(function (body) {
      state.categories = body.categories || [];
      save(KEY.cats, JSON.stringify(state.categories));
      renderCategories();
    }).catch(function () { renderCategories(); });
    fetchJson("/v1/service-area").then(function (body) {
      state.area = body;
      save(KEY.area, JSON.stringify(body));
      drawMap();
    }).catch(function () { /* keep the cached area */ });
    flush();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
