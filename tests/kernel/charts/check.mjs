// Loads swoll's /metrics/charts pages in Debian's Chromium for tests/kernel/tests/charts.rs and
// prints one JSON report per page on stdout; the Rust test makes the assertions.
//
//   node check.mjs <chromium> <url> <screenshot.png> [<url> <screenshot.png>...]
//
// playwright-core drives the given Chromium binary (it downloads no browser of its own). Every
// request to another origin is recorded and refused: the page must work on a node with no way
// out. A report holds the page's console errors and warnings, uncaught exceptions, failed
// requests, HTTP errors, whether echarts finished drawing, and the rendered Sankey series as
// echarts.getInstanceByDom(...).getOption() returns it.
import { chromium } from 'playwright-core';

const [executablePath, ...pairs] = process.argv.slice(2);
if (!executablePath || pairs.length === 0 || pairs.length % 2 !== 0) {
  console.error('usage: node check.mjs <chromium> <url> <screenshot.png> [<url> <screenshot.png>...]');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 90_000,
  // As this machine's notes run it: no GPU, and none of Chromium's own network traffic.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const reports = [];
try {
  for (let i = 0; i < pairs.length; i += 2) {
    const url = pairs[i];
    const screenshot = pairs[i + 1];
    const origin = new URL(url).origin;
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const report = {
      url,
      screenshot,
      consoleErrors: [],
      consoleWarnings: [],
      pageErrors: [],
      failedRequests: [],
      foreignRequests: [],
      httpErrors: [],
    };
    page.on('console', (m) => {
      if (m.type() === 'error') report.consoleErrors.push(m.text());
      if (m.type() === 'warning') report.consoleWarnings.push(m.text());
    });
    page.on('pageerror', (e) => report.pageErrors.push(String(e)));
    page.on('requestfailed', (r) => {
      if (!report.foreignRequests.includes(r.url())) {
        report.failedRequests.push(`${r.url()}: ${r.failure()?.errorText}`);
      }
    });
    page.on('response', (r) => {
      if (r.status() >= 400) report.httpErrors.push(`${r.status()} ${r.url()}`);
    });
    await page.route('**/*', (route) => {
      const u = route.request().url();
      if (u.startsWith(`${origin}/`) || u.startsWith('data:')) return route.continue();
      report.foreignRequests.push(u);
      return route.abort();
    });

    const response = await page.goto(url, { waitUntil: 'load', timeout: 60_000 });
    report.status = response.status();
    report.csp = response.headers()['content-security-policy'] ?? null;
    try {
      await page.waitForSelector('body[data-chart="finished"]', { state: 'attached', timeout: 60_000 });
      report.finished = true;
    } catch {
      report.finished = false;
    }
    Object.assign(report, await page.evaluate(() => {
      const el = document.getElementById('sankey');
      const chart = el && window.echarts ? window.echarts.getInstanceByDom(el) : null;
      const series = chart ? chart.getOption().series[0] : null;
      let laidOut = null;
      try {
        // Nodes echarts placed with a height: the layout really ran.
        laidOut = chart.getModel().getSeriesByIndex(0).getGraph().nodes
          .filter((n) => n.getLayout() && n.getLayout().dy > 0).length;
      } catch {
        laidOut = null;
      }
      const canvas = el ? el.querySelector('canvas') : null;
      return {
        echartsVersion: window.echarts ? window.echarts.version : null,
        seriesType: series ? series.type : null,
        nodes: series ? series.data.map((n) => n.name) : [],
        links: series ? series.links.map((l) => [l.source, l.target, l.value]) : [],
        laidOut,
        canvas: canvas ? [canvas.width, canvas.height] : null,
        tables: [...document.querySelectorAll('table')].map((t) => ({
          id: t.id,
          rows: t.tBodies[0] ? t.tBodies[0].rows.length : 0,
        })),
      };
    }));
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.close();
    reports.push(report);
  }
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(reports)}\n`);
