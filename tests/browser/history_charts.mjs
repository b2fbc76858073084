// Drives a real headless Chromium (Debian's) against Pylon's status page: the charts of
// the last 15 minutes. Usage: node history_charts.mjs URL PREFIX...
// Waits (up to 25 s) until the requests/s chart of each PREFIX has a point above zero, then
// prints "done <json>": each route's charts (points, top value, caption, how many pixels
// its canvas drew in each series' colour), the console's errors and warnings, and any
// request that left the page's origin.
import { chromium } from "playwright-core";

const [url, ...prefixes] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const problems = [];
const foreign = [];
try {
  const page = await browser.newPage();
  const origin = new URL(url).origin;
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") {
      problems.push(msg.text() + " (" + msg.location().url + ")");
    }
  });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("request", (req) => {
    if (new URL(req.url()).origin !== origin) foreign.push(req.url());
  });
  await page.goto(url);
  try {
    await page.waitForFunction(
      (prefixes) =>
        prefixes.every((p) => {
          const block = [...document.querySelectorAll("#charts .route-history")].find((b) => b.dataset.prefix === p);
          const fig = block && block.querySelector('figure[data-chart="rps"]');
          return fig && Number(fig.dataset.max) > 0;
        }),
      prefixes,
      { timeout: 25000, polling: 200 },
    );
  } catch (e) {
    problems.push("no chart with traffic: " + e.message);
  }
  const charts = await page.evaluate(() => {
    // pixels of a canvas within a small distance of each colour ("#rrggbb"), read once
    // from a copy made for reading (the page's own context is left alone)
    const drawn = (canvas, hexes) => {
      const copy = document.createElement("canvas");
      copy.width = canvas.width;
      copy.height = canvas.height;
      const ctx = copy.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(canvas, 0, 0);
      const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
      return hexes.map((hex) => {
        const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (data[i + 3] > 200 && Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40) n++;
        }
        return n;
      });
    };
    const colours = { rps: ["#0969da"], latency: ["#0969da", "#bc4c00"], errors: ["#9a6700", "#cf222e"] };
    return [...document.querySelectorAll("#charts .route-history")].map((block) => ({
      prefix: block.dataset.prefix,
      charts: Object.fromEntries(
        [...block.querySelectorAll("figure.chart")].map((fig) => [
          fig.dataset.chart,
          {
            points: Number(fig.dataset.points),
            max: Number(fig.dataset.max),
            caption: fig.querySelector("figcaption").textContent,
            width: fig.querySelector("canvas").width,
            pixels: drawn(fig.querySelector("canvas"), colours[fig.dataset.chart]),
          },
        ]),
      ),
    }));
  });
  const state = await page.evaluate(() => document.getElementById("history-state").textContent);
  console.log("done " + JSON.stringify({ charts, state, problems, foreign }));
} finally {
  await browser.close();
}
