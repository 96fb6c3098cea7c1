// gridclue web dashboard: reads the dashboard API with the token the user signs in with (kept in
// sessionStorage, sent as a bearer header, never put in a URL) and draws the district map, KPI
// tiles, rankings, trend, categories, the red/yellow lists and the hotspot alerts (listed, and
// marked on the map while open). Numbers are never computed here:
// every figure on the page is a field of an API answer (the tiles carry it in data-value).
// Routes this server does not have yet (a bare 404) are shown as "not available", not guessed.
"use strict";
(() => {
  const TOKEN_KEY = "gc.dashboard.token";
  const LANG_KEY = "gc.dashboard.lang";
  const DAY_MS = 86400000;
  const CHINA_MS = 8 * 3600000;
  const LIST_LIMIT = 50;
  const ALERT_LIMIT = 200;

  const I18N = {
    zh: {
      title: "网格线索 · 城运看板", p7d: "近7天", p30d: "近30天", pmonth: "本月", pyear: "本年",
      wall: "大屏", laptop: "桌面", signout: "退出", reset: "清除筛选",
      k_reports: "上报数", k_cases: "立案数", k_open: "未结案", k_overdue: "超期未结",
      k_closure: "结案率", k_on_time: "按期结案率", k_rework: "返工率", k_score: "综合指标值",
      map: "网格热力图", ranking: "排名", by_street: "街镇", by_department: "部门", name: "名称",
      change: "环比", trend: "趋势", categories: "类别", overdue_list: "超期(红灯)",
      yellow_list: "即将超期(黄灯)", signin_title: "登录看板",
      signin_help: "请输入街镇或全区令牌。令牌只保存在本标签页中。", token: "令牌", signin: "登录",
      timeline: "线索经过", district: "全区", street: "街镇", grid: "网格",
      target: "目标", of_target: "达标", live: "实时", polling: "定时刷新", reconnecting: "重连中",
      not_available: "本服务器尚无此接口", none: "暂无", bad_token: "令牌无效或已撤销",
      wrong_kind: "此令牌不能查看统计(需街镇或全区令牌)", unreachable: "无法连接服务",
      reports: "上报", accepted: "立案", closed: "结案", overdue: "超期", open: "未结",
      heat_from_api: "颜色: 各网格上报数", heat_missing: "热力数据接口尚未提供",
      tiles_of_street: "指标为所在街镇", prev: "上期", updated: "更新于",
      csv_missing: "此处无CSV导出接口", no_scope: "仅限本街镇",
      alerts: "热点预警", a_new: "新发", a_ongoing: "持续", a_closed: "已结束", open_alerts: "进行中",
      place_grid: "网格", place_neighbourhood: "网格及相邻网格", window: "窗口", days: "天",
      observed: "实际", expected: "预期", first_seen: "首次", last_seen: "最近", clues: "线索",
      recur_days: (n) => `约${n}天一遇`, recur_years: (n) => `约${n}年一遇`,
    },
    en: {
      title: "Grid clues · District dashboard", p7d: "7 days", p30d: "30 days", pmonth: "This month",
      pyear: "This year", wall: "Wall", laptop: "Desk", signout: "Sign out", reset: "Clear filter",
      k_reports: "Reports", k_cases: "Cases", k_open: "Open", k_overdue: "Overdue",
      k_closure: "Closure rate", k_on_time: "On-time rate", k_rework: "Rework rate", k_score: "Score",
      map: "Grid heatmap", ranking: "Ranking", by_street: "Streets", by_department: "Departments",
      name: "Name", change: "Change", trend: "Trend", categories: "Categories",
      overdue_list: "Overdue (red)", yellow_list: "Due soon (yellow)", signin_title: "Sign in",
      signin_help: "Enter a street or district token. It is kept in this tab only.", token: "Token",
      signin: "Sign in", timeline: "Clue timeline", district: "District", street: "Street",
      grid: "Grid", target: "target", of_target: "of target", live: "live", polling: "polling",
      reconnecting: "reconnecting", not_available: "this server has no such route yet",
      none: "none", bad_token: "The token is not valid or has been revoked",
      wrong_kind: "This token cannot read statistics (street or district token needed)",
      unreachable: "Cannot reach the service", reports: "reports", accepted: "accepted",
      closed: "closed", overdue: "overdue", open: "open", heat_from_api: "colour: reports per grid",
      heat_missing: "heatmap route not available yet", tiles_of_street: "tiles show its street",
      prev: "prev.", updated: "updated", csv_missing: "no CSV export for this yet",
      no_scope: "own street only",
      alerts: "Hotspot alerts", a_new: "new", a_ongoing: "ongoing", a_closed: "closed",
      open_alerts: "open", place_grid: "grid", place_neighbourhood: "grid and neighbours",
      window: "window", days: "d", observed: "observed", expected: "expected",
      first_seen: "first", last_seen: "last", clues: "clues",
      recur_days: (n) => `1 in ${n} days by chance`, recur_years: (n) => `1 in ${n} years by chance`,
    },
  };

  const $ = (sel) => document.querySelector(sel);
  const $$ = (sel) => Array.from(document.querySelectorAll(sel));
  const params = new URLSearchParams(location.search);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    lang: localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh",
    wall: params.get("wall") === "1",
    preset: "30d",
    period: null, // {from, to} China dates, `to` exclusive
    filter: { street: null, grid: null },
    scopeStreet: null, // a street token's own street
    rankBy: "street",
    map: null, // /dashboard/map.json
    gridStreet: new Map(),
    gridCentre: new Map(),
    selectedAlert: null,
    alertsLoaded: 0,
    streetNames: new Map(),
    charts: {},
    data: {},
    refreshing: null,
    pending: false,
    lastRefresh: 0,
    loaded: 0,
    stream: null,
    pollTimer: null,
  };

  const t = (k) => I18N[state.lang][k] ?? k;

  // ---- time -------------------------------------------------------------------------------
  const chinaDate = (ms) => new Date(ms + CHINA_MS).toISOString().slice(0, 10);
  const dateMs = (d) => Date.parse(d + "T00:00:00Z") - CHINA_MS;
  const addDays = (d, n) => chinaDate(dateMs(d) + n * DAY_MS);

  function periodOf(preset) {
    const today = chinaDate(Date.now());
    const from = params.get("from");
    const to = params.get("to");
    if (preset === "url" && from && to) return { from, to };
    if (preset === "7d") return { from: addDays(today, -6), to: addDays(today, 1) };
    if (preset === "month") {
      const first = today.slice(0, 8) + "01";
      const next = new Date(dateMs(first) + CHINA_MS);
      next.setUTCMonth(next.getUTCMonth() + 1);
      return { from: first, to: next.toISOString().slice(0, 10) };
    }
    if (preset === "year") {
      const y = Number(today.slice(0, 4));
      return { from: `${y}-01-01`, to: `${y + 1}-01-01` };
    }
    return { from: addDays(today, -29), to: addDays(today, 1) };
  }

  function previousPeriod(p) {
    const days = Math.round((dateMs(p.to) - dateMs(p.from)) / DAY_MS);
    return { from: addDays(p.from, -days), to: p.from };
  }

  // ---- API --------------------------------------------------------------------------------
  class SignedOut extends Error {}

  function query(obj) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // GET a JSON answer: {ok, missing, status, body}. A 404 without a problem+json body means
  // the route does not exist on this server (`missing`).
  async function api(path, q = {}, accept = "application/json") {
    const r = await fetch(path + query(q), {
      headers: { Authorization: "Bearer " + state.token, Accept: accept },
      cache: "no-store",
    });
    const problem = (r.headers.get("content-type") || "").includes("problem+json");
    if (r.status === 401) throw new SignedOut(t("bad_token"));
    if (r.status === 403 && path === "/v1/indicators" && !problem) throw new SignedOut(t("wrong_kind"));
    const missing = (r.status === 404 || r.status === 405) && !problem;
    let body = null;
    if (accept === "application/json") {
      try { body = await r.json(); } catch { body = null; }
    } else if (r.ok) {
      body = await r.blob();
    }
    return { ok: r.ok, missing, status: r.status, body };
  }

  // ---- formatting -------------------------------------------------------------------------
  const fmtInt = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
  const fmtRate = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%");
  const fmtScore = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
  const fmtTime = (ms) => {
    if (!ms) return "–";
    const s = new Date(ms + CHINA_MS).toISOString();
    return s.slice(5, 10) + " " + s.slice(11, 16);
  };
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  };

  function toast(text) {
    const box = $("#toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  // ---- language and mode ------------------------------------------------------------------
  function applyLanguage() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    for (const e of $$("[data-t]")) e.textContent = t(e.dataset.t);
    for (const e of $$("[data-t-placeholder]")) e.placeholder = t(e.dataset.tPlaceholder);
    for (const e of $$("[data-t-title]")) e.title = t(e.dataset.tTitle);
    $("#lang").textContent = state.lang === "zh" ? "EN" : "中文";
    document.title = t("title") + " · gridclue";
    $("#wall").textContent = state.wall ? t("laptop") : t("wall");
  }

  function applyWall() {
    document.body.classList.toggle("wall", state.wall);
    const u = new URL(location.href);
    if (state.wall) u.searchParams.set("wall", "1");
    else u.searchParams.delete("wall");
    history.replaceState(null, "", u);
    $("#wall").textContent = state.wall ? t("laptop") : t("wall");
    setTimeout(resizeCharts, 50);
  }

  function resizeCharts() {
    for (const c of Object.values(state.charts)) c.resize();
  }

  // ---- sign-in ----------------------------------------------------------------------------
  function showSignIn(message) {
    $("#board").hidden = true;
    $("#signin").hidden = false;
    $("#signin-error").textContent = message || "";
    $("#token").value = "";
    $("#token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.scopeStreet = null;
    state.filter = { street: null, grid: null };
    state.selectedAlert = null;
    stopLive();
    showSignIn(message);
  }

  async function signIn(token) {
    state.token = token;
    try {
      const r = await api("/v1/indicators", { ...state.period, by: "street" });
      if (!r.ok) {
        const reason = r.status === 403 ? t("wrong_kind") : (r.body && r.body.detail) || r.status;
        state.token = null;
        return showSignIn(String(reason));
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      // Asked for the whole district, a district token gets `street: null` back and a street
      // token its own street.
      state.scopeStreet = r.body.street || null;
      $("#signin").hidden = true;
      $("#board").hidden = false;
      await ensureMap();
      renderScope();
      await refresh();
      startLive();
    } catch (e) {
      state.token = null;
      showSignIn(e instanceof SignedOut ? e.message : t("unreachable"));
    }
  }

  function renderScope() {
    $("#scope").textContent = state.scopeStreet
      ? `${t("street")}: ${state.streetNames.get(state.scopeStreet) || state.scopeStreet}`
      : t("district");
  }

  // ---- view state -------------------------------------------------------------------------
  const viewStreet = () => state.filter.street || state.scopeStreet;

  function setFilter(street, grid) {
    if (state.scopeStreet && street && street !== state.scopeStreet) return;
    state.filter = { street: street || null, grid: grid || null };
    const chosen = alertRows().find((r) => r.alert_id === state.selectedAlert);
    if (!chosen || chosen.grid_code !== state.filter.grid) state.selectedAlert = null;
    const f = $("#filter");
    const parts = [];
    if (state.filter.street) parts.push(state.streetNames.get(state.filter.street) || state.filter.street);
    if (state.filter.grid) parts.push(`${t("grid")} ${state.filter.grid}`);
    f.hidden = parts.length === 0;
    $("#filter-label").textContent = parts.join(" › ");
    refresh();
  }

  function setPeriod(preset) {
    state.preset = preset;
    state.period = periodOf(preset);
    for (const b of $$(".period")) b.classList.toggle("active", b.dataset.preset === preset);
    $("#period-label").textContent = `${state.period.from} – ${addDays(state.period.to, -1)}`;
  }

  // ---- data -------------------------------------------------------------------------------
  async function refresh() {
    if (!state.token) return;
    if (state.refreshing) { state.pending = true; return state.refreshing; }
    state.refreshing = (async () => {
      try {
        await load();
        render();
        state.loaded += 1;
        document.body.dataset.loaded = String(state.loaded);
        state.lastRefresh = Date.now();
      } catch (e) {
        if (e instanceof SignedOut) signOut(e.message);
        else toast(t("unreachable") + ": " + e.message);
      } finally {
        state.refreshing = null;
        if (state.pending) { state.pending = false; refresh(); }
      }
    })();
    return state.refreshing;
  }

  async function load() {
    const p = state.period;
    const prev = previousPeriod(p);
    const street = viewStreet();
    const grid = state.filter.grid;
    const area = { street, grid };
    const [now, cats, rankStreet, rankDept, trend, heat, overdue, dueSoon, alerts] = await Promise.all([
      api("/v1/indicators", { ...p, by: "street", street }),
      api("/v1/indicators", { ...p, by: "category", street }),
      // The street ranking stays whole (the selected street is highlighted in it).
      api("/v1/rankings", { ...p, by: "street", street: state.scopeStreet }),
      api("/v1/rankings", { ...p, by: "department", street }),
      api("/v1/trend", { ...p, bucket: bucketOf(p), ...area }),
      api("/v1/heatmap", { ...p }),
      api("/v1/lists/overdue", { ...area, limit: LIST_LIMIT }),
      api("/v1/lists/due_soon", { ...area, limit: LIST_LIMIT }),
      alertsRequest(p, street),
    ]);
    for (const r of [now, cats]) {
      if (!r.ok) throw new Error(`/v1/indicators: ${r.status} ${(r.body && r.body.detail) || ""}`);
    }
    // Without `/v1/rankings`, the previous period comes from `/v1/indicators` (as of now).
    const ranking = { street: rankStreet, department: rankDept, fallback: rankStreet.missing };
    if (ranking.fallback) {
      const [all, before, deptNow, deptBefore] = await Promise.all([
        api("/v1/indicators", { ...p, by: "street", street: state.scopeStreet }),
        api("/v1/indicators", { ...prev, by: "street", street: state.scopeStreet }),
        api("/v1/indicators", { ...p, by: "department", street }),
        api("/v1/indicators", { ...prev, by: "department", street }),
      ]);
      ranking.street = withPrevious(all.body, before.body);
      ranking.department = withPrevious(deptNow.body, deptBefore.body);
    }
    let lists = { overdue, dueSoon, fallback: false };
    if (overdue.missing || dueSoon.missing) lists = await listsFromWork(street);
    const d = { now: now.body, cats: cats.body, ranking, trend, heat, lists, alerts };
    // A view asked for while this one loaded replaces it: keep only the latest.
    if (street === viewStreet() && grid === state.filter.grid && p === state.period) {
      state.data = d;
      markAlertsLoaded();
    }
    document.body.dataset.from = p.from;
    document.body.dataset.to = p.to;
    document.body.dataset.street = street || "";
    document.body.dataset.grid = grid || "";
  }

  // The alerts of the view: raised in the period, in the viewed street (a street token's own).
  const alertsRequest = (p, street) => api("/v1/alerts", { from: p.from, to: p.to, street, limit: ALERT_LIMIT });

  function markAlertsLoaded() {
    state.alertsLoaded += 1;
    document.body.dataset.alertsLoaded = String(state.alertsLoaded);
  }

  // The stream said the open alerts changed: read the alerts again (only them) at once.
  async function refreshAlerts() {
    if (!state.token || !state.data.now) return;
    const p = state.period;
    const street = viewStreet();
    try {
      const r = await alertsRequest(p, street);
      if (street !== viewStreet() || p !== state.period) return;
      state.data.alerts = r;
      renderAlerts();
      renderMap();
      markAlertsLoaded();
    } catch (e) {
      if (e instanceof SignedOut) signOut(e.message);
    }
  }

  // `/v1/rankings`' shape built from two `/v1/indicators` answers: each row with `previous` and
  // the change of its score.
  function withPrevious(current, before) {
    const prev = new Map(before.rows.map((r) => [r.key, r]));
    const rows = current.rows.map((r) => {
      const p = prev.get(r.key) || null;
      const score = r.score !== null && p && p.score !== null ? r.score - p.score : null;
      const rank = r.rank !== null && p && p.rank !== null ? p.rank - r.rank : null;
      return { ...r, previous: p, change: { score, rank } };
    });
    return { ok: true, missing: false, body: { rows, targets: {} } };
  }

  const bucketOf = (p) => {
    const days = (dateMs(p.to) - dateMs(p.from)) / DAY_MS;
    return days <= 2 ? "hour" : days <= 62 ? "day" : days <= 400 ? "week" : "month";
  };

  // Without the lists routes the page falls back on the work queues: their items carry the
  // light, and a red or yellow one is waiting for someone's action.
  async function listsFromWork(street) {
    const r = await api("/v1/work", { street, limit: 500 });
    const items = [];
    const seen = new Set();
    if (r.ok) {
      for (const q of r.body.queues || []) {
        for (const it of q.items || []) {
          if (seen.has(it.clue_id)) continue;
          seen.add(it.clue_id);
          items.push(it);
        }
      }
    }
    const by = (light) => items.filter((i) => i.light === light && (!state.filter.grid || i.grid_code === state.filter.grid))
      .sort((a, b) => (a.deadline_ms || 0) - (b.deadline_ms || 0));
    const wrap = (list) => ({ ok: r.ok, missing: false, body: { items: list, total: list.length } });
    return { overdue: wrap(by("red")), dueSoon: wrap(by("yellow")), fallback: true };
  }

  // ---- rendering --------------------------------------------------------------------------
  function render() {
    renderTiles();
    renderRanking();
    renderCategories();
    renderTrend();
    renderLists();
    renderAlerts();
    renderMap();
  }

  // `/v1/rankings` carries the configured targets; without it tiles show no target line.
  function targetsOf(ranking) {
    const r = ranking.street;
    return (r && r.ok && r.body && r.body.targets) || {};
  }

  function renderTiles() {
    const total = state.data.now.total;
    const values = {
      reports: total.reports,
      cases: total.accepted,
      open: total.accepted - total.closed,
      overdue: total.overdue_open,
      closure_rate: total.closure_rate,
      on_time_rate: total.on_time_rate,
      rework_rate: total.rework_rate,
      score: total.score,
    };
    const targets = targetsOf(state.data.ranking);
    for (const tile of $$("#kpis .tile")) {
      const k = tile.dataset.kpi;
      const v = values[k];
      const box = tile.querySelector(".v");
      box.dataset.value = v === null || v === undefined ? "null" : String(v);
      box.textContent = k.endsWith("_rate") ? fmtRate(v) : k === "score" ? fmtScore(v) : fmtInt(v);
      const line = tile.querySelector(".t");
      line.className = "t";
      line.textContent = "";
      const target = targets[k];
      if (target !== undefined && target !== null) {
        const lowerIsBetter = k === "rework_rate";
        const shown = k === "score" ? fmtScore(target) : fmtRate(target);
        line.textContent = `${t("target")} ${lowerIsBetter ? "≤" : "≥"} ${shown}`;
        if (v !== null && v !== undefined) {
          const met = lowerIsBetter ? v <= target : v >= target;
          line.classList.add(met ? "met" : "missed");
          line.textContent += met ? " ✓" : " ✗";
        }
      } else if (state.filter.grid && k === "reports") {
        line.textContent = t("tiles_of_street");
      }
    }
  }

  function renderRanking() {
    const byStreet = state.rankBy === "street";
    for (const b of $$(".tab")) b.classList.toggle("active", b.dataset.rank === state.rankBy);
    const answer = state.data.ranking[state.rankBy];
    const body = $("#rank-table tbody");
    body.replaceChildren();
    $("#rank-note").textContent = !answer.ok ? String(answer.status)
      : state.data.ranking.fallback ? t("not_available") + " (/v1/rankings) → /v1/indicators" : "";
    for (const r of answer.ok ? answer.body.rows : []) {
      const p = r.previous;
      const change = r.change ? r.change.score : null;
      const arrow = change === null ? el("span", { class: "muted" }, "–")
        : change > 0 ? el("span", { class: "up" }, `▲ ${change.toFixed(1)}`)
        : change < 0 ? el("span", { class: "down" }, `▼ ${(-change).toFixed(1)}`)
        : el("span", { class: "muted" }, "= 0.0");
      if (p) arrow.title = `${t("prev")}: ${fmtScore(p.score)} (#${p.rank ?? "–"})`;
      const moved = r.change && r.change.rank ? (r.change.rank > 0 ? ` ↑${r.change.rank}` : ` ↓${-r.change.rank}`) : "";
      const tr = el("tr", { "data-key": r.key },
        el("td", {}, `${r.rank ?? "–"}${moved}`), el("td", {}, r.name || r.key),
        el("td", { "data-value": String(r.score) }, fmtScore(r.score)),
        el("td", {}, fmtRate(r.on_time_rate)), el("td", {}, fmtRate(r.closure_rate)),
        el("td", {}, fmtInt(r.overdue_open)), el("td", { class: "change" }, arrow));
      if (byStreet) {
        tr.classList.toggle("selected", r.key === state.filter.street);
        tr.addEventListener("click", () => setFilter(state.filter.street === r.key && !state.filter.grid ? null : r.key, null));
      }
      body.append(tr);
    }
  }

  function chart(id) {
    if (!state.charts[id]) state.charts[id] = echarts.init(document.getElementById(id), null, { renderer: "canvas" });
    return state.charts[id];
  }

  const AXIS = { axisLine: { lineStyle: { color: "#3b5b85" } }, axisLabel: { color: "#8aa2c0" }, splitLine: { lineStyle: { color: "#1f3a5f" } } };

  function renderCategories() {
    const rows = state.data.cats.rows.filter((r) => r.accepted > 0 || r.reports > 0)
      .sort((a, b) => a.accepted - b.accepted);
    $("#category-note").textContent = rows.length ? "" : t("none");
    chart("categories").setOption({
      animation: false,
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: { textStyle: { color: "#dce7f5" }, top: 0 },
      grid: { left: 8, right: 16, top: 28, bottom: 8, containLabel: true },
      xAxis: { type: "value", ...AXIS },
      yAxis: { type: "category", data: rows.map((r) => r.name || r.key), ...AXIS },
      series: [
        { name: t("reports"), type: "bar", data: rows.map((r) => r.reports), itemStyle: { color: "#3fa7ff" } },
        { name: t("closed"), type: "bar", stack: "c", data: rows.map((r) => r.closed), itemStyle: { color: "#37d39b" } },
        { name: t("open"), type: "bar", stack: "c", data: rows.map((r) => r.accepted - r.closed), itemStyle: { color: "#ffc53d" } },
      ],
    }, true);
  }

  // The rows of an answer (`items` of the work queues the lists fall back on).
  const rowsOf = (body) => (body && (body.rows || body.items)) || [];

  function renderTrend() {
    const tr = state.data.trend;
    const c = chart("trend");
    if (!tr.ok) {
      $("#trend-note").textContent = tr.missing ? t("not_available") + " (/v1/trend)" : String(tr.status);
      c.clear();
      return;
    }
    $("#trend-note").textContent = "";
    const rows = rowsOf(tr.body);
    const hourly = tr.body.bucket === "hour";
    const label = (r) => (r.start_ms !== undefined ? fmtTime(r.start_ms).slice(0, hourly ? 11 : 5) : String(r.start));
    const series = ["reports", "accepted", "closed", "overdue"].filter((k) => rows.some((r) => k in r));
    const colors = { reports: "#3fa7ff", accepted: "#a78bfa", closed: "#37d39b", overdue: "#ff5b5b" };
    c.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { textStyle: { color: "#dce7f5" }, top: 0 },
      grid: { left: 8, right: 16, top: 28, bottom: 8, containLabel: true },
      xAxis: { type: "category", data: rows.map(label), ...AXIS },
      yAxis: { type: "value", minInterval: 1, ...AXIS },
      series: series.map((k) => ({ name: t(k), type: "line", showSymbol: false,
        data: rows.map((r) => r[k]), itemStyle: { color: colors[k] } })),
    }, true);
  }

  function renderLists() {
    const { overdue, dueSoon, fallback } = state.data.lists;
    fillList("#list-overdue", "#overdue-count", overdue, "red");
    fillList("#list-yellow", "#yellow-count", dueSoon, "yellow");
    $("#lists-note").textContent = fallback ? t("not_available") + " (/v1/lists) → /v1/work" : "";
  }

  function fillList(listSel, countSel, answer, light) {
    const ul = $(listSel);
    ul.replaceChildren();
    if (!answer.ok) {
      ul.append(el("li", { class: "empty" }, answer.missing ? t("not_available") : String(answer.status)));
      $(countSel).textContent = "";
      return;
    }
    const items = rowsOf(answer.body);
    const more = answer.body.next_cursor ? "+" : "";
    $(countSel).textContent = `${items.length}${more}`;
    if (!items.length) ul.append(el("li", { class: "empty" }, t("none")));
    for (const it of items) {
      const category = (state.lang === "en" && it.category_name_en) || it.category_name || it.category;
      const place = [it.street_name, it.community_name, it.grid ?? it.grid_code].filter(Boolean).join(" · ");
      const dept = it.department_name || it.department || "";
      const due = fmtTime(it.deadline_ms);
      const li = el("li", { class: it.light || light, "data-clue": it.clue_id },
        el("span", {}, category), el("span", { class: "due" }, due),
        el("span", { class: "where" }, `${place}${dept ? " · " + dept : ""}`));
      li.title = it.clue_id;
      li.addEventListener("click", () => showTimeline(it.clue_id));
      ul.append(li);
    }
  }

  const alertRows = () => {
    const a = state.data.alerts;
    return a && a.ok ? rowsOf(a.body) : [];
  };
  const isOpen = (a) => a.state !== "closed";
  const shortTime = (s) => (s ? s.slice(5, 16).replace("T", " ") : "–");

  function recurrence(days) {
    if (days === null || days === undefined || !isFinite(days)) return "";
    return days >= 365 ? t("recur_years")((days / 365).toFixed(1)) : t("recur_days")(Math.round(days));
  }

  function alertCategory(a) {
    return (state.lang === "en" && a.category_name_en) || a.category_name || a.category;
  }

  function renderAlerts() {
    const answer = state.data.alerts;
    const ul = $("#list-alerts");
    ul.replaceChildren();
    if (!answer || !answer.ok) {
      const why = !answer ? "" : answer.missing ? t("not_available") + " (/v1/alerts)" : String(answer.status);
      ul.append(el("li", { class: "empty" }, why));
      $("#alerts-count").textContent = "";
      return;
    }
    const rows = alertRows();
    const open = rows.filter(isOpen).length;
    $("#alerts-count").textContent = `${rows.length} · ${t("open_alerts")} ${open}`;
    if (!rows.length) ul.append(el("li", { class: "empty" }, t("none")));
    for (const a of rows) {
      const place = [a.street_name, a.community_name,
        `${t("place_" + a.place_kind)} ${a.grid_code}${a.grids.length > 1 ? ` (+${a.grids.length - 1})` : ""}`]
        .filter(Boolean).join(" · ");
      const clues = el("span", { class: "alert-clues" }, `${t("clues")}: `);
      for (const id of a.clue_ids) {
        const b = el("button", { type: "button", class: "clue-id", "data-clue": id, title: id }, id.slice(0, 8));
        b.addEventListener("click", (e) => { e.stopPropagation(); showTimeline(id); });
        clues.append(b);
      }
      const li = el("li", { class: `alert ${a.state}`, "data-alert": a.alert_id, "data-category": a.category,
        "data-state": a.state, "data-grid": a.grid_code, "data-street": a.street_code },
        el("span", { class: "head" }, el("span", { class: `badge ${a.state}` }, t("a_" + a.state)), " ",
          el("b", {}, alertCategory(a)), " ", el("span", { class: "where" }, place)),
        el("span", { class: "figures" },
          `${t("window")} ${shortTime(a.window_start)} – ${shortTime(a.window_end)} (${a.window_days}${t("days")}) · `,
          el("b", { class: "observed" }, `${t("observed")} ${a.observed}`),
          ` / ${t("expected")} ${Number(a.expected).toFixed(2)} · ${recurrence(a.recurrence_days)}`),
        el("span", { class: "seen muted" }, `${t("first_seen")} ${shortTime(a.raised_at)} · ${t("last_seen")} ${shortTime(a.updated_at)}`),
        clues);
      li.classList.toggle("selected", a.alert_id === state.selectedAlert);
      li.addEventListener("click", () => focusAlert(a));
      ul.append(li);
    }
    const chosen = ul.querySelector("li.selected");
    if (chosen) chosen.scrollIntoView({ block: "nearest" });
  }

  // An alert clicked (in the list or its marker on the map): the view narrows to its grid and
  // the alert stays highlighted in the list; clicked again, the filter is lifted.
  function focusAlert(a) {
    if (state.selectedAlert === a.alert_id && state.filter.grid === a.grid_code) {
      state.selectedAlert = null;
      return setFilter(state.scopeStreet, null);
    }
    state.selectedAlert = a.alert_id;
    setFilter(a.street_code, a.grid_code);
  }

  async function showTimeline(id) {
    const box = $("#timeline-items");
    box.replaceChildren();
    $("#timeline-id").textContent = id;
    $("#timeline").hidden = false;
    const r = await api(`/v1/clues/${encodeURIComponent(id)}/timeline`).catch(() => null);
    if (!r || !r.ok) {
      box.append(el("li", {}, r && r.missing ? t("not_available") : String(r ? r.status : t("unreachable"))));
      return;
    }
    for (const f of r.body.facts || []) {
      const who = [f.actor_role, f.actor].filter(Boolean).join(" ");
      const extra = [f.department, f.deadline && `→ ${f.deadline.slice(0, 16).replace("T", " ")}`, f.rating && `★${f.rating}`, f.note]
        .filter(Boolean).join(" · ");
      box.append(el("li", {}, [fmtTime(f.at_ms), f.kind, f.status, who, extra].filter(Boolean).join(" · ")));
    }
  }

  // ---- map --------------------------------------------------------------------------------
  async function ensureMap() {
    if (state.map) return;
    const r = await fetch("/dashboard/map.json");
    if (!r.ok) throw new Error("district map: " + r.status);
    state.map = await r.json();
    for (const f of state.map.geojson.features) {
      if (!f.properties.street_code) continue;
      state.gridStreet.set(f.properties.name, f.properties.street_code);
      state.gridCentre.set(f.properties.name, centreOf(f.geometry));
    }
    for (const s of state.map.streets) state.streetNames.set(s.code, s.name);
    echarts.registerMap("district", state.map.geojson);
    const c = chart("map");
    c.on("click", (e) => {
      if (e.seriesId === "alerts") {
        const a = alertRows().find((r) => r.alert_id === e.data.alert);
        if (a) focusAlert(a);
      } else if (e.seriesType === "scatter" || e.seriesType === "lines") {
        const code = e.data.street;
        setFilter(state.filter.street === code && !state.filter.grid ? null : code, null);
      } else if (e.componentType === "geo" || e.seriesType === "map") {
        const grid = e.name;
        const street = state.gridStreet.get(grid);
        if (!street) return;
        if (state.filter.grid === grid) setFilter(state.scopeStreet, null);
        else setFilter(street, grid);
      }
    });
  }

  // A label point for a grid: the mean of its outer ring's vertices (grids are compact).
  function centreOf(geometry) {
    const ring = geometry.type === "MultiPolygon" ? geometry.coordinates[0][0] : geometry.coordinates[0];
    let x = 0;
    let y = 0;
    for (const [lon, lat] of ring) { x += lon; y += lat; }
    return [x / ring.length, y / ring.length];
  }

  function heatValues() {
    const h = state.data.heat;
    const values = new Map();
    if (!h || !h.ok) return null;
    for (const r of rowsOf(h.body)) {
      values.set(r.grid, r.count);
    }
    return values;
  }

  function renderMap() {
    const heat = heatValues();
    $("#map-note").textContent = heat ? t("heat_from_api") : t("heat_missing");
    const street = viewStreet();
    const grids = state.map.geojson.features.filter((f) => f.properties.street_code);
    const max = heat ? Math.max(1, ...heat.values()) : 1;
    const regions = [];
    for (const f of state.map.geojson.features) {
      if (f.properties.kind === "excluded") {
        regions.push({ name: f.properties.name, itemStyle: { areaColor: "#1b4d7a" }, label: { show: false } });
      }
    }
    // Open alerts: their grids outlined in red (the named grid thicker), a pin on the named grid.
    const open = alertRows().filter(isOpen);
    const outlined = new Map();
    for (const a of open) {
      for (const g of a.grids) if (!outlined.has(g)) outlined.set(g, 1.6);
      outlined.set(a.grid_code, 3);
    }
    for (const [g, width] of outlined) {
      if (g !== state.filter.grid) regions.push({ name: g, itemStyle: { borderColor: "#ff5b5b", borderWidth: width } });
    }
    if (state.filter.grid) {
      regions.push({ name: state.filter.grid, itemStyle: { borderColor: "#ffffff", borderWidth: 2.5 } });
    }
    const pins = open.filter((a) => state.gridCentre.has(a.grid_code)).map((a) => ({
      name: a.alert_id, alert: a.alert_id, grid: a.grid_code, street: a.street_code, state: a.state,
      label: alertCategory(a), value: state.gridCentre.get(a.grid_code),
      itemStyle: { color: a.state === "new" ? "#ff5b5b" : "#ff9f43" },
    }));
    const outline = [];
    for (const s of state.map.streets) {
      const on = s.code === street;
      for (const line of s.outline) {
        outline.push({ coords: line, street: s.code,
          lineStyle: { color: on ? "#ffffff" : "#7fb2e5", width: on ? 2.6 : 1.1, opacity: street && !on ? 0.45 : 0.95 } });
      }
    }
    chart("map").setOption({
      animation: false,
      tooltip: { trigger: "item", formatter: (p) => mapTooltip(p, heat) },
      geo: {
        map: "district", roam: true, aspectScale: 0.86, layoutCenter: ["50%", "50%"], layoutSize: "98%",
        itemStyle: { areaColor: "#16304f", borderColor: "#2b4a72", borderWidth: 0.3 },
        emphasis: { itemStyle: { areaColor: "#2f6db0" }, label: { show: false } },
        select: { disabled: true }, label: { show: false }, regions,
      },
      visualMap: heat ? { type: "continuous", min: 0, max, seriesIndex: 0, left: 8, bottom: 8,
        calculable: false, text: [String(max), "0"], textStyle: { color: "#dce7f5" },
        inRange: { color: ["#16304f", "#2f6db0", "#ffc53d", "#ff5b5b"] } } : undefined,
      series: [
        { type: "map", geoIndex: 0, data: heat ? grids.map((f) => ({ name: f.properties.name, value: heat.get(f.properties.name) || 0 })) : [] },
        { type: "lines", coordinateSystem: "geo", polyline: true, data: outline, z: 3, emphasis: { disabled: true } },
        { type: "scatter", coordinateSystem: "geo", z: 4, symbolSize: 7,
          itemStyle: { color: "#ffffff" },
          label: { show: true, position: "right", color: "#ffffff", fontSize: state.wall ? 15 : 12,
            formatter: (p) => p.data.label, textBorderColor: "#0b1a2e", textBorderWidth: 2 },
          data: state.map.streets.map((s) => ({ name: s.code, street: s.code, label: s.name, value: s.center })) },
        { id: "alerts", type: "scatter", coordinateSystem: "geo", z: 5, symbol: "pin",
          symbolSize: state.wall ? 36 : 28, symbolOffset: [0, "-40%"], data: pins,
          label: { show: true, position: "top", color: "#ffffff", fontSize: state.wall ? 15 : 12, fontWeight: "bold",
            formatter: (p) => p.data.label, textBorderColor: "#7a1010", textBorderWidth: 2 } },
      ],
    }, true);
  }

  function mapTooltip(p, heat) {
    if (p.seriesId === "alerts") {
      const a = alertRows().find((r) => r.alert_id === p.data.alert);
      return a ? `${t("alerts")} · ${t("a_" + a.state)}<br>${alertCategory(a)} · ${a.grid_code}<br>`
        + `${t("observed")} ${a.observed} / ${t("expected")} ${Number(a.expected).toFixed(2)}` : "";
    }
    if (p.seriesType === "scatter" || p.seriesType === "lines") return state.streetNames.get(p.data.street) || "";
    const street = state.gridStreet.get(p.name);
    if (!street) return p.name;
    const v = heat ? heat.get(p.name) || 0 : null;
    return `${state.streetNames.get(street)} · ${p.name}${v !== null ? "<br>" + t("reports") + ": " + v : ""}`;
  }

  // ---- CSV --------------------------------------------------------------------------------
  function csvRequest(which) {
    const p = state.period;
    const area = { street: viewStreet(), grid: state.filter.grid };
    switch (which) {
      case "rankings": return ["/v1/rankings", { ...p, by: state.rankBy }];
      case "trend": return ["/v1/trend", { ...p, bucket: bucketOf(p), ...area }];
      case "categories": return ["/v1/breakdown", { ...p, by: "category", ...area }];
      case "overdue": return ["/v1/lists/overdue", area];
      default: return ["/v1/lists/due_soon", area];
    }
  }

  // A download link cannot carry the bearer header: fetch the CSV, then save the blob.
  async function downloadCsv(which) {
    const [path, q] = csvRequest(which);
    try {
      const r = await api(path, { ...q, format: "csv" }, "text/csv");
      if (!r.ok) return toast(r.missing ? `${t("csv_missing")} (${path})` : `${path}: ${r.status}`);
      const a = el("a", { href: URL.createObjectURL(r.body), download: `gridclue-${which}-${state.period.from}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      if (e instanceof SignedOut) signOut(e.message);
      else toast(t("unreachable"));
    }
  }

  // ---- live -------------------------------------------------------------------------------
  function setLive(kind) {
    const box = $("#live");
    box.className = "live " + (kind === "live" ? "on" : kind === "reconnecting" ? "retry" : "off");
    box.dataset.state = kind;
    box.textContent = `${t(kind)} · ${t("updated")} ${fmtTime(state.lastRefresh || Date.now()).slice(6)}`;
  }

  // Numbers changed upstream: refresh the view, at most every few seconds.
  function scheduleRefresh() {
    const wait = Math.max(0, state.lastRefresh + 3000 - Date.now());
    clearTimeout(scheduleRefresh.timer);
    scheduleRefresh.timer = setTimeout(() => refresh().then(() => setLive($("#live").dataset.state)), wait);
  }

  function stopLive() {
    if (state.stream) state.stream.abort();
    state.stream = null;
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  function startPolling() {
    setLive("polling");
    clearInterval(state.pollTimer);
    state.pollTimer = setInterval(() => refresh().then(() => setLive("polling")), state.wall ? 15000 : 30000);
  }

  // EventSource cannot send an Authorization header, so the stream is read with fetch and
  // parsed here (text/event-stream: events separated by a blank line, `event:`/`data:` lines).
  async function startLive() {
    stopLive();
    const ctrl = new AbortController();
    state.stream = ctrl;
    let backoff = 1000;
    let lastNumbers = null;
    while (state.stream === ctrl && state.token) {
      try {
        const r = await fetch("/v1/stream", {
          headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" },
          cache: "no-store", signal: ctrl.signal,
        });
        const problem = (r.headers.get("content-type") || "").includes("problem+json");
        if (r.status === 401) return signOut(t("bad_token"));
        if ((r.status === 404 || r.status === 405) && !problem) return startPolling();
        if (!r.ok || !r.body) throw new Error("stream " + r.status);
        setLive("live");
        backoff = 1000;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let event = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) continue;
              const i = line.indexOf(":");
              const field = i < 0 ? line : line.slice(0, i);
              const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
              if (field === "event") event = val;
              else if (field === "data") data.push(val);
            }
            if (event === "numbers" && data.length) {
              const text = data.join("\n");
              const numbers = JSON.parse(text);
              const key = JSON.stringify([numbers.kpis, numbers.by_street]);
              if (lastNumbers !== null && key !== lastNumbers) scheduleRefresh();
              lastNumbers = key;
              setLive("live");
            } else if (event === "alerts") {
              // Every alerts event (the first one too: an alert may have come since the page
              // read them) reads the alerts again; they are few.
              refreshAlerts();
            }
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) return;
      }
      if (state.stream !== ctrl) return;
      setLive("reconnecting");
      await new Promise((res) => setTimeout(res, backoff + Math.random() * 500));
      backoff = Math.min(backoff * 2, 30000);
      // Catch up on what changed while the stream was down.
      refresh();
    }
  }

  // ---- wiring -----------------------------------------------------------------------------
  function wire() {
    $("#signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("#token").value.trim();
      if (token) signIn(token);
    });
    $("#signout").addEventListener("click", () => signOut());
    $("#lang").addEventListener("click", () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      localStorage.setItem(LANG_KEY, state.lang);
      applyLanguage();
      if (state.token && state.data.now) { renderScope(); render(); setLive($("#live").dataset.state); }
    });
    $("#wall").addEventListener("click", () => { state.wall = !state.wall; applyWall(); if (state.data.now) renderMap(); });
    document.addEventListener("keydown", (e) => {
      // The wall shows no controls: `w` (or Escape) leaves it.
      if (e.target instanceof HTMLInputElement) return;
      if (e.key === "w" || (e.key === "Escape" && state.wall)) { state.wall = !state.wall; applyWall(); }
    });
    $("#filter-clear").addEventListener("click", () => setFilter(null, null));
    for (const b of $$(".period")) b.addEventListener("click", () => { setPeriod(b.dataset.preset); refresh(); });
    for (const b of $$(".tab")) b.addEventListener("click", () => { state.rankBy = b.dataset.rank; renderRanking(); });
    for (const b of $$(".csv")) b.addEventListener("click", () => downloadCsv(b.dataset.csv));
    $("#timeline-close").addEventListener("click", () => { $("#timeline").hidden = true; });
    window.addEventListener("resize", resizeCharts);
  }

  wire();
  setPeriod(params.get("from") && params.get("to") ? "url" : "30d");
  applyLanguage();
  applyWall();
  if (state.token) signIn(state.token);
  else showSignIn();
})();
