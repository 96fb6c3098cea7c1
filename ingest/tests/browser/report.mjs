// Drives ingest's reporting page in headless Debian Chromium (playwright-core):
//   node report.mjs <ingest-url> <reporter-token> [screenshot-dir]
// 1. geolocation stubbed: pick a category, submit (2 taps) -> sent through the batch endpoint;
// 2. network cut: a clue with a photo is queued (the clue in localStorage, the photo in
//    IndexedDB), nothing is sent; the page reopened offline comes from the service worker with
//    the queue intact; network back: the photo is uploaded, then the clue, carrying its sha256;
// 3. geolocation refused: the map fallback (tap on the drawn map) places the clue.
// Prints {"online": id, "offline": id, "offline_photo": "sha256:…", "pinned": id,
// "pinned_location": {...}} on stdout; the
// Rust test checks those clues on the topic. Exits non-zero on any failed expectation.
import { chromium } from "playwright-core";

const [url, token, shots] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node report.mjs <ingest-url> <reporter-token> [screenshot-dir]");
  process.exit(2);
}
const executablePath = process.env.GRIDCLUE_CHROMIUM || "/usr/bin/chromium";
const STEP_MS = 20000;

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

// Every clue id the page sends, in order, from the batch requests it makes.
function recordBatches(page, sink) {
  page.on("request", (req) => {
    if (req.method() === "POST" && req.url().endsWith("/v1/clues:batch")) {
      const body = JSON.parse(req.postData() || "{}");
      for (const c of body.clues || []) sink.push(c);
      expect(req.headers()["x-gridclue-client"] === "web", "the page marks its requests");
    }
  });
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

const result = {};
try {
  // ---- 1 and 2: geolocation stubbed --------------------------------------------------------
  const context = await browser.newContext({
    geolocation: { latitude: 31.2, longitude: 121.47, accuracy: 12 },
    permissions: ["geolocation"],
    locale: "zh-CN",
    viewport: { width: 390, height: 844 },
    hasTouch: true,
  });
  const page = await context.newPage();
  const sent = [];
  recordBatches(page, sent);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${url}/report?token=${encodeURIComponent(token)}`);
  await page.waitForSelector(".cat", { timeout: STEP_MS });
  expect((await page.textContent("h1")) === "线索上报", "Chinese UI by default");
  expect(!page.url().includes("token="), "the token is taken out of the address bar");
  expect(
    (await page.evaluate(() => localStorage.getItem("gc.token"))) === token,
    "the token is kept in localStorage",
  );
  expect((await page.locator(".cat").count()) >= 10, "category buttons from /v1/categories");
  await page.waitForFunction(
    () => document.getElementById("loc-text").textContent.includes("已定位"),
    null, { timeout: STEP_MS },
  );
  expect(await page.isDisabled("#submit"), "submit waits for a category");
  await shot(page, "1-ready");

  // Online: tap a category, tap submit.
  await page.tap('.cat[data-code="manhole_cover"]');
  await page.fill("#note", "井盖缺失");
  await page.tap("#submit");
  await page.waitForSelector('body[data-sent="1"][data-queue="0"]', { timeout: STEP_MS });
  expect(sent.length === 1, "one clue sent");
  expect(sent[0].category === "manhole_cover" && sent[0].description === "井盖缺失", "its fields");
  expect(Math.abs(sent[0].lat - 31.2) < 1e-9 && Math.abs(sent[0].lon - 121.47) < 1e-9, "stubbed location");
  result.online = sent[0].clue_id;

  // English toggle.
  await page.tap("#lang");
  expect((await page.textContent("h1")) === "Report a problem", "English UI after the toggle");
  expect(
    (await page.textContent('.cat[data-code="manhole_cover"] .name')).startsWith("Manhole"),
    "category names in English",
  );

  // The service worker controls the page before the network goes.
  await page.waitForFunction(() => navigator.serviceWorker && navigator.serviceWorker.controller !== null,
    null, { timeout: STEP_MS });

  // Offline: the clue is queued, not sent.
  await context.setOffline(true);
  await page.waitForFunction(() => !navigator.onLine, null, { timeout: STEP_MS });
  const picture = await page.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 800; c.height = 600;
    const g = c.getContext("2d");
    g.fillStyle = "#5a6"; g.fillRect(0, 0, 800, 600);
    g.fillStyle = "#421"; g.fillRect(200, 250, 400, 200);
    return c.toDataURL("image/jpeg", 0.9).split(",")[1];
  });
  await page.setInputFiles("#photo-input", {
    name: "pile.jpg", mimeType: "image/jpeg", buffer: Buffer.from(picture, "base64"),
  });
  await page.waitForSelector("#photo-preview:not([hidden])", { timeout: STEP_MS });
  await page.tap('.cat[data-code="garbage_pile"]');
  await page.tap("#submit");
  await page.waitForSelector('body[data-queue="1"]', { timeout: STEP_MS });
  const queued = await page.evaluate(() => JSON.parse(localStorage.getItem("gc.queue")));
  expect(queued.length === 1 && queued[0].category === "garbage_pile", "queued in localStorage");
  expect(typeof queued[0].photo_key === "string" && !queued[0].photos, "its photo waits in IndexedDB");
  expect((await page.textContent("#net")) === "Offline", "offline shown");
  await page.waitForTimeout(1500);
  expect(sent.length === 1, "nothing sent while offline");
  result.offline = queued[0].clue_id;

  // Still offline, the rider closes and reopens the page: the service worker serves it, the
  // queue is still there (and the language choice too).
  await page.reload();
  await page.waitForSelector(".cat", { timeout: STEP_MS });
  expect((await page.textContent("h1")) === "Report a problem", "the page opens offline, in English");
  await page.waitForSelector('body[data-queue="1"]', { timeout: STEP_MS });
  expect(sent.length === 1, "nothing sent while offline");
  await shot(page, "2-offline-queued");

  // Back online: the `online` event sends the queue.
  await context.setOffline(false);
  // (the page was reloaded, so its own sent counter starts again at 0)
  await page.waitForSelector('body[data-queue="0"][data-sent="1"]', { timeout: STEP_MS });
  expect(sent.length === 2 && sent[1].clue_id === result.offline, "the queued clue was sent");
  expect(Array.isArray(sent[1].photos) && /^sha256:[0-9a-f]{64}$/.test(sent[1].photos[0]),
    "with the uploaded photo's address: " + JSON.stringify(sent[1]));
  result.offline_photo = sent[1].photos[0];
  await shot(page, "3-sent");
  expect(pageErrors.length === 0, "no script errors: " + pageErrors.join("; "));
  await context.close();

  // ---- 3: geolocation refused: tap the drawn map ------------------------------------------
  const denied = await browser.newContext({
    permissions: [],
    locale: "zh-CN",
    viewport: { width: 390, height: 844 },
    hasTouch: true,
  });
  const page2 = await denied.newPage();
  const sent2 = [];
  recordBatches(page2, sent2);
  await page2.goto(`${url}/report?token=${encodeURIComponent(token)}`);
  await page2.waitForSelector(".cat", { timeout: STEP_MS });
  await page2.waitForSelector("#pin-panel:not([hidden])", { timeout: STEP_MS });
  // Wait until the district's box is known, then tap the middle of the map.
  await page2.waitForFunction(() => localStorage.getItem("gc.area") !== null, null, { timeout: STEP_MS });
  const box = await page2.locator("#map").boundingBox();
  await page2.locator("#map").click({ position: { x: box.width / 2, y: box.height / 2 } });
  await page2.waitForFunction(
    () => document.getElementById("loc-text").textContent === "已手动定位",
    null, { timeout: STEP_MS },
  );
  await page2.tap('.cat[data-code="street_light"]');
  await page2.tap("#submit");
  await page2.waitForSelector('body[data-sent="1"][data-queue="0"]', { timeout: STEP_MS });
  await shot(page2, "4-pinned");
  result.pinned = sent2[0].clue_id;
  result.pinned_location = { lat: sent2[0].lat, lon: sent2[0].lon };
  await denied.close();
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  if (shots) {
    for (const ctx of browser.contexts()) {
      for (const [i, p] of ctx.pages().entries()) {
        await p.screenshot({ path: `${shots}/failed-${i}.png`, fullPage: true }).catch(() => {});
        console.error("page text:", await p.textContent("body").catch(() => "?"));
      }
    }
  }
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(result));
