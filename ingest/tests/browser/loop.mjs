// Drives the reporting page against a whole stack (ingest, the clue processor, the sink,
// ClickHouse, dashboard-api) in headless Debian Chromium (playwright-core):
//   node loop.mjs <ingest-url> <reporter-token> <screenshot-path>
// 1. the map draws: the canvas holds the district's outlines (segments drawn, non-blank pixels);
// 2. a tap on the map moves the point and the page names its grid, community and street;
// 3. a photo (generated here: 2400×1800 JPEG with an EXIF block holding a GPS position) is
//    attached, downscaled by the page to 1600 px and uploaded; the report carries its sha256;
// 4. the "my reports" tab lists the sent report once the pipeline has it, with its status.
// Prints {"clue_id", "photo", "place": {grid, community, street}, "lat", "lon", "mine": {...}}
// on stdout; the Rust test compares the place with the server's own geo assignment. Exits
// non-zero on any failed expectation.
import { chromium } from "playwright-core";

const [url, token, screenshot] = process.argv.slice(2);
if (!url || !token || !screenshot) {
  console.error("usage: node loop.mjs <ingest-url> <reporter-token> <screenshot-path>");
  process.exit(2);
}
const executablePath = process.env.GRIDCLUE_CHROMIUM || "/usr/bin/chromium";
const STEP_MS = 20000;
const PIPELINE_MS = 60000;

function expect(cond, what) {
  if (!cond) throw new Error("expectation failed: " + what);
}

// An APP1 Exif segment (big-endian TIFF, IFD0 → GPS IFD with GPSLatitudeRef "N") and a note.
function exifSegment() {
  const tiff = Buffer.from([
    0x4d, 0x4d, 0x00, 0x2a, 0, 0, 0, 8,
    0, 1, 0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0,
    0, 1, 0, 1, 0, 2, 0, 0, 0, 2, 0x4e, 0, 0, 0, 0, 0, 0, 0,
  ]);
  const payload = Buffer.concat([Buffer.from("Exif\0\0"), tiff, Buffer.from("GPS 31.2N 121.47E")]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

const result = {};
try {
  const context = await browser.newContext({
    geolocation: { latitude: 31.2, longitude: 121.47, accuracy: 15 },
    permissions: ["geolocation"],
    locale: "zh-CN",
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 1,
    hasTouch: true,
  });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // Console errors (a refused Content-Security-Policy, say), except failed loads, which are
  // told apart by their URL below (the browser asks for a favicon the page does not have).
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push("console: " + m.text());
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) pageErrors.push(r.status() + " " + r.url());
  });
  const batches = [];
  const uploads = [];
  page.on("request", (req) => {
    if (req.method() === "POST" && req.url().endsWith("/v1/clues:batch")) {
      batches.push(...(JSON.parse(req.postData() || "{}").clues || []));
    }
  });
  page.on("response", async (resp) => {
    if (resp.request().method() === "POST" && resp.url().endsWith("/v1/photos")) {
      uploads.push({ status: resp.status(), body: await resp.json().catch(() => null) });
    }
  });

  await page.goto(`${url}/report?token=${encodeURIComponent(token)}`);
  await page.waitForSelector(".cat", { timeout: STEP_MS });

  // ---- 1. the map draws ------------------------------------------------------------------
  await page.waitForFunction(() => Number(document.getElementById("map").dataset.drawn) > 1000,
    null, { timeout: STEP_MS });
  const drawn = await page.evaluate(() => {
    const c = document.getElementById("map");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let ink = 0; // pixels darker than the background (#eef3ef)
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 600) ink++;
    return { segments: Number(c.dataset.drawn), ink, pixels: d.length / 4 };
  });
  expect(drawn.ink > drawn.pixels * 0.02, "the map canvas is not blank: " + JSON.stringify(drawn));
  await page.waitForFunction(() => document.getElementById("place").dataset.grid !== "",
    null, { timeout: STEP_MS });
  const located = await page.evaluate(() => ({ ...document.getElementById("place").dataset }));
  expect(/^\d{15}$/.test(located.grid), "the rider's own position is named: " + JSON.stringify(located));

  // ---- 2. a tap on the map names the grid the point falls in ----------------------------
  const box = await page.locator("#map").boundingBox();
  await page.locator("#map").click({ position: { x: box.width / 2 + 70, y: box.height / 2 + 45 } });
  await page.waitForFunction(() => document.getElementById("loc-text").textContent === "已手动定位",
    null, { timeout: STEP_MS });
  const place = await page.evaluate(() => ({ ...document.getElementById("place").dataset }));
  expect(/^\d{15}$/.test(place.grid), "a grid is named: " + JSON.stringify(place));
  expect(place.grid.startsWith(place.community) && place.community.startsWith(place.street), "codes nest");
  expect(place.grid !== located.grid, "the tap moved the point to another grid");
  const placeText = await page.textContent("#place");
  expect(placeText.includes(place.grid), "the grid code is shown: " + placeText);
  result.place = place;

  // ---- 3. a photo: generated, with GPS EXIF; the page downscales and uploads it ---------
  const dataUrl = await page.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 2400; c.height = 1800;
    const g = c.getContext("2d");
    g.fillStyle = "#7a8a80"; g.fillRect(0, 0, 2400, 1800);
    g.fillStyle = "#222"; g.beginPath(); g.arc(1200, 900, 500, 0, Math.PI * 2); g.fill();
    g.fillStyle = "#c33"; g.font = "200px sans-serif"; g.fillText("井盖", 980, 960);
    return c.toDataURL("image/jpeg", 0.9);
  });
  const plain = Buffer.from(dataUrl.split(",")[1], "base64");
  const photo = Buffer.concat([plain.subarray(0, 2), exifSegment(), plain.subarray(2)]);
  expect(photo.includes("GPS 31.2N"), "the generated photo carries a GPS position");
  await page.setInputFiles("#photo-input", { name: "manhole.jpg", mimeType: "image/jpeg", buffer: photo });
  await page.waitForSelector("#photo-preview:not([hidden])", { timeout: STEP_MS });
  await page.waitForFunction(() => {
    const img = document.getElementById("photo-preview");
    return img.complete && img.naturalWidth > 0;
  }, null, { timeout: STEP_MS });
  const previewBytes = Number(await page.getAttribute("#photo-preview", "data-bytes"));
  expect(previewBytes > 0 && previewBytes < photo.length, "the kept photo is smaller than the original");
  await page.tap('.cat[data-code="manhole_cover"]');
  await page.fill("#note", "井盖破损");
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.tap("#submit");
  await page.waitForSelector('body[data-sent="1"][data-queue="0"]', { timeout: STEP_MS });
  expect(uploads.length === 1 && uploads[0].status === 201, "one photo uploaded: " + JSON.stringify(uploads));
  const uploaded = uploads[0].body;
  expect(/^sha256:[0-9a-f]{64}$/.test(uploaded.photo), "its content address");
  expect(uploaded.content_type === "image/jpeg", "re-encoded as JPEG");
  expect(batches.length === 1, "one clue sent");
  const clue = batches[0];
  expect(Array.isArray(clue.photos) && clue.photos.length === 1 && clue.photos[0] === uploaded.photo,
    "the report carries the photo's sha256: " + JSON.stringify(clue));
  expect(clue.photo_key === undefined, "the page's own bookkeeping stays local");
  result.clue_id = clue.clue_id;
  result.photo = uploaded.photo;
  result.lat = clue.lat;
  result.lon = clue.lon;
  // The stored photo: 1600 px wide (downscaled from 2400), and the rider may read it.
  const stored = await page.evaluate(async ([photoId, tok]) => {
    const r = await fetch("/v1/photos/" + photoId.slice(7), { headers: { Authorization: "Bearer " + tok } });
    const blob = await r.blob();
    const bmp = await createImageBitmap(blob);
    return { status: r.status, type: r.headers.get("content-type"), width: bmp.width, height: bmp.height };
  }, [uploaded.photo, token]);
  expect(stored.status === 200 && stored.type === "image/jpeg", "the photo reads back: " + JSON.stringify(stored));
  expect(stored.width === 1600 && stored.height === 1200, "downscaled to 1600 px: " + JSON.stringify(stored));
  // IndexedDB holds no photo any more once it is uploaded.
  const leftover = await page.evaluate(() => new Promise((resolve) => {
    const open = indexedDB.open("gridclue-report", 1);
    open.onsuccess = () => {
      const req = open.result.transaction("photos").objectStore("photos").count();
      req.onsuccess = () => resolve(req.result);
    };
  }));
  expect(leftover === 0, "uploaded photos leave IndexedDB");

  // ---- 4. my reports: the sent report, once the pipeline has it ---------------------------
  await page.tap("#tab-mine");
  const row = `#my-list li[data-clue="${clue.clue_id}"]:not(.pending)`;
  const deadline = Date.now() + PIPELINE_MS;
  while (!(await page.$(row))) {
    expect(Date.now() < deadline, "the sent report is listed within a minute");
    await page.waitForTimeout(500);
    if (!(await page.$(row))) await page.tap("#mine-refresh");
  }
  const mine = await page.evaluate((sel) => {
    const li = document.querySelector(sel);
    return { status: li.dataset.status, light: li.dataset.light, text: li.textContent,
      balance: document.getElementById("points-balance").textContent };
  }, row);
  expect(mine.text.includes("井盖"), "the category is named: " + mine.text);
  result.mine = mine;
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-mine.png"), fullPage: true });
  expect(pageErrors.length === 0, "no script errors: " + pageErrors.join("; "));
  await context.close();
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  for (const ctx of browser.contexts()) {
    for (const p of ctx.pages()) {
      await p.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png"), fullPage: true }).catch(() => {});
      console.error("page text:", await p.textContent("body").catch(() => "?"));
    }
  }
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(result));
