// Drives dashboard-api's web dashboard in headless Debian Chromium (playwright-core):
//   node dashboard.mjs <dashboard-url> <district-token> <street-a> <street-b> <screenshot-dir>
//                      <street-a-token>
// 1. laptop (1440×900): the sign-in form (nothing in the URL), sign in, read the tiles, the
//    street ranking, the red/yellow lists and the hotspot alerts (list and map); screenshot
//    dashboard-laptop.png;
//    live alerts: print `ready-for-alert`, wait for a line `<alert id>` on stdin (the test has
//    written that alert into ClickHouse meanwhile) and wait until the page lists it and pins it
//    on the map, without a reload; click its pin: the view narrows to its grid; open the
//    timeline of one of its clues; screenshot dashboard-alerts.png; clear the filter;
// 2. click street A's row in the ranking: read the filtered tiles and lists;
// 3. click street B's label on the map (a canvas click at its point): read the tiles;
// 4. the language toggle is remembered across a reload; the token never enters the URL;
// 5. wall mode (?wall=1, 1920×1080): no controls; screenshot dashboard-wall.png;
// 6. sign out: the token leaves sessionStorage and the sign-in form is back;
// 7. sign in with street A's token: read its alerts (list and map).
// Prints one JSON object of what the page showed (the Rust test compares it with the API) and
// fails on any page error or Content-Security-Policy violation.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url, token, streetA, streetB, shots, streetToken] = process.argv.slice(2);
if (!url || !token || !streetA || !streetB || !shots || !streetToken) {
  console.error("usage: node dashboard.mjs <url> <district-token> <street-a> <street-b> <shot-dir> <street-a-token>");
  process.exit(2);
}
const stdin = createInterface({ input: process.stdin });
const stdinLines = stdin[Symbol.asyncIterator]();
const executablePath = process.env.GRIDCLUE_CHROMIUM || "/usr/bin/chromium";
const STEP_MS = 30000;

function expect(cond, what) {
  if (!cond) throw new Error("expectation failed: " + what);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

// What the page shows: tiles (raw values from data-value and the text), the ranking rows,
// the lists' clue ids and counts, and the view the page loaded.
async function read(page) {
  return page.evaluate(() => {
    const tiles = {};
    for (const t of document.querySelectorAll("#kpis .tile")) {
      const v = t.querySelector(".v");
      tiles[t.dataset.kpi] = { value: v.dataset.value, text: v.textContent };
    }
    const ranking = Array.from(document.querySelectorAll("#rank-table tbody tr")).map((tr) => ({
      key: tr.dataset.key,
      rank: tr.children[0].textContent,
      score: tr.children[2].dataset.value,
      change: tr.querySelector(".change").textContent,
    }));
    const ids = (sel) => Array.from(document.querySelectorAll(`${sel} li[data-clue]`)).map((li) => li.dataset.clue);
    const alerts = Array.from(document.querySelectorAll("#list-alerts li[data-alert]")).map((li) => ({
      id: li.dataset.alert, category: li.dataset.category, state: li.dataset.state, grid: li.dataset.grid,
      street: li.dataset.street,
      clues: Array.from(li.querySelectorAll("button[data-clue]")).map((c) => c.dataset.clue),
    }));
    // The map's alert marks: pins (series "alerts") and grids outlined in red.
    const chart = echarts.getInstanceByDom(document.getElementById("map"));
    const option = chart ? chart.getOption() : null;
    const pinSeries = option ? option.series.find((s) => s.id === "alerts") : null;
    const pins = pinSeries ? pinSeries.data.map((d) => ({ alert: d.alert, grid: d.grid })) : [];
    const outlined = option ? (option.geo[0].regions || [])
      .filter((r) => r.itemStyle && r.itemStyle.borderColor === "#ff5b5b").map((r) => r.name) : [];
    const b = document.body.dataset;
    return {
      view: { from: b.from, to: b.to, street: b.street, grid: b.grid, loaded: Number(b.loaded) },
      tiles, ranking,
      overdue: ids("#list-overdue"), yellow: ids("#list-yellow"),
      overdue_count: document.querySelector("#overdue-count").textContent,
      alerts, pins, outlined, alerts_count: document.querySelector("#alerts-count").textContent,
      notes: {
        map: document.querySelector("#map-note").textContent,
        trend: document.querySelector("#trend-note").textContent,
        lists: document.querySelector("#lists-note").textContent,
      },
      live: document.querySelector("#live").dataset.state,
    };
  });
}

const loaded = (page) => page.evaluate(() => Number(document.body.dataset.loaded));

async function waitForView(page, street, after) {
  await page.waitForFunction(
    ([s, n]) => document.body.dataset.street === s && Number(document.body.dataset.loaded) > n,
    [street, after], { timeout: STEP_MS },
  );
}

const result = {};
let n = 0;
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: "zh-CN" });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push("page error: " + e));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push("CSP: " + m.text());
  });

  // 1. Sign in.
  await page.goto(`${url}/dashboard`);
  await page.waitForSelector("#signin:not([hidden])", { timeout: STEP_MS });
  expect(await page.isHidden("#board"), "nothing shown before sign-in");
  await page.fill("#token", "not-a-token");
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("signin-error").textContent.length > 0, null, { timeout: STEP_MS });
  result.bad_token_message = await page.textContent("#signin-error");
  await page.fill("#token", token);
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => Number(document.body.dataset.loaded) >= 1, null, { timeout: STEP_MS });
  expect(!page.url().includes(token), "the token is not in the URL");
  expect((await page.evaluate(() => sessionStorage.getItem("gc.dashboard.token"))) === token, "token kept in sessionStorage");
  expect((await page.evaluate(() => localStorage.length)) === 0 || !(await page.evaluate(() => JSON.stringify(localStorage))).includes(token), "token not in localStorage");
  // The map draws (a canvas of the chart's size) and the live indicator settles.
  await page.waitForFunction(() => document.querySelector("#map canvas") !== null, null, { timeout: STEP_MS });
  await page.waitForFunction(() => ["live", "polling"].includes(document.getElementById("live").dataset.state), null, { timeout: STEP_MS });
  result.district = await read(page);
  await page.screenshot({ path: `${shots}/dashboard-laptop.png` });

  // Live alerts: the test writes one now; the page shows it without a reload.
  const loadsBefore = await loaded(page);
  console.log("ready-for-alert");
  const next = await stdinLines.next();
  expect(!next.done, "an alert id on stdin");
  const liveId = next.value.trim();
  stdin.close(); // nothing more comes: stdin must not keep the process alive
  await page.waitForFunction(
    (id) => document.querySelector(`#list-alerts li[data-alert="${id}"]`) !== null,
    liveId, { timeout: STEP_MS },
  );
  await page.waitForFunction((id) => {
    const chart = echarts.getInstanceByDom(document.getElementById("map"));
    return chart.getOption().series.find((s) => s.id === "alerts").data.some((d) => d.alert === id);
  }, liveId, { timeout: STEP_MS });
  result.live_alert = await read(page);
  // Only the alerts were read again: the page did not reload everything for them.
  result.live_alert_full_reloads = (await loaded(page)) - loadsBefore;

  // Click the live alert's pin on the map canvas: the view narrows to its grid.
  const pin = await page.evaluate((id) => {
    const el = document.getElementById("map");
    const chart = echarts.getInstanceByDom(el);
    const d = chart.getOption().series.find((s) => s.id === "alerts").data.find((p) => p.alert === id);
    const [x, y] = chart.convertToPixel({ geoIndex: 0 }, d.value);
    const box = el.getBoundingClientRect();
    // The pin's body stands above its point.
    return { x: box.left + x, y: box.top + y - 14, grid: d.grid, street: d.street };
  }, liveId);
  n = await loaded(page);
  await page.mouse.click(pin.x, pin.y);
  await waitForView(page, pin.street, n);
  result.alert_click = {
    view: await page.evaluate(() => ({ street: document.body.dataset.street, grid: document.body.dataset.grid })),
    selected: await page.evaluate(() => Array.from(document.querySelectorAll("#list-alerts li.selected")).map((li) => li.dataset.alert)),
  };
  // One of its clues opens the timeline.
  const clue = await page.getAttribute(`#list-alerts li[data-alert="${liveId}"] button[data-clue]`, "data-clue");
  await page.click(`#list-alerts li[data-alert="${liveId}"] button[data-clue]`);
  await page.waitForSelector("#timeline:not([hidden])", { timeout: STEP_MS });
  result.alert_timeline = { clue, shown: await page.textContent("#timeline-id") };
  await page.click("#timeline-close");
  await page.waitForTimeout(300); // let the last chart frame paint before the picture
  await page.screenshot({ path: `${shots}/dashboard-alerts.png` });
  n = await loaded(page);
  await page.click("#filter-clear");
  await waitForView(page, "", n);

  // 2. Click street A in the ranking.
  n = await loaded(page);
  await page.click(`#rank-table tbody tr[data-key="${streetA}"]`);
  await waitForView(page, streetA, n);
  result.street_a = await read(page);
  result.street_a_filter_label = await page.textContent("#filter-label");
  await page.screenshot({ path: `${shots}/dashboard-street.png` });

  // 3. Click street B's label point on the map canvas.
  n = await loaded(page);
  const point = await page.evaluate((code) => {
    const el = document.getElementById("map");
    const chart = echarts.getInstanceByDom(el);
    const street = chart.getOption().series[2].data.find((d) => d.street === code);
    const [x, y] = chart.convertToPixel({ geoIndex: 0 }, street.value);
    const box = el.getBoundingClientRect();
    return { x: box.left + x, y: box.top + y };
  }, streetB);
  await page.mouse.click(point.x, point.y);
  await waitForView(page, streetB, n);
  result.street_b = await read(page);

  // Reset the filter.
  n = await loaded(page);
  await page.click("#filter-clear");
  await waitForView(page, "", n);
  result.reset = await read(page);

  // 4. Language: English, remembered across a reload (the token stays in the tab).
  await page.click("#lang");
  expect((await page.textContent("#title")).startsWith("Grid clues"), "English title");
  await page.reload();
  await page.waitForFunction(() => Number(document.body.dataset.loaded) >= 1, null, { timeout: STEP_MS });
  result.english_title_after_reload = await page.textContent("#title");
  result.english_tile = await page.textContent('#kpis .tile[data-kpi="on_time_rate"] .k');
  await page.click("#lang");

  // 5. Wall mode at 1920×1080.
  await page.setViewportSize({ width: 1920, height: 1080 });
  await page.goto(`${url}/dashboard?wall=1`);
  await page.waitForFunction(() => Number(document.body.dataset.loaded) >= 1, null, { timeout: STEP_MS });
  await page.waitForFunction(() => document.querySelector("#map canvas") !== null, null, { timeout: STEP_MS });
  expect(await page.evaluate(() => document.body.classList.contains("wall")), "wall mode on");
  expect(await page.isHidden(".controls"), "no controls on the wall");
  result.wall = await read(page);
  result.wall_fits = await page.evaluate(() => document.documentElement.scrollHeight <= window.innerHeight + 1);
  await page.waitForTimeout(300); // let the last chart frame paint before the picture
  await page.screenshot({ path: `${shots}/dashboard-wall.png` });

  // 6. Sign out (leave the wall first: it has no controls).
  await page.keyboard.press("w");
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])", { timeout: STEP_MS });
  result.token_after_signout = await page.evaluate(() => sessionStorage.getItem("gc.dashboard.token"));

  // 7. Street A's office: its alerts only.
  n = await loaded(page);
  await page.fill("#token", streetToken);
  await page.click("#signin-form button[type=submit]");
  await waitForView(page, streetA, n);
  await page.waitForFunction(() => document.querySelector("#map canvas") !== null, null, { timeout: STEP_MS });
  result.street_token = await read(page);
  await context.close();
} finally {
  await browser.close();
}
expect(problems.length === 0, problems.join("\n"));
console.log(JSON.stringify(result));
