// The dashboard's end-to-end test in headless Chromium against a running local stack
// (scripts/ui-test.sh starts one and runs this). It submits jobs through the API, then drives
// the pages as a user would: jobs list with filters and cursor paging, a job's tasks reaching
// Started, a task's history and placement, why an unplaceable task waits, agents' allocation,
// the live event feed, the API's refusals (400 on a bad scale, 403 on another identity's job)
// and a kill from the page until the tasks are Finished and no container of the job runs.
//
// Environment: TITUS_UI_URL (the stack's base URL), TITUS_UI_TOKEN (an identity's token),
// TITUS_UI_OTHER_TOKEN (a second identity's, for the 403; empty skips that case),
// TITUS_UI_CHROMIUM (default /usr/bin/chromium), TITUS_UI_SCREENSHOTS (a directory),
// TITUS_UI_DOCS_SCREENSHOT (where the job page's screenshot is copied), TITUS_UI_RUN (a tag
// making this run's names unique).

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.TITUS_UI_URL || 'http://127.0.0.1:7001').replace(/\/+$/, '');
const TOKEN = process.env.TITUS_UI_TOKEN || 'local-dev-token';
const OTHER_TOKEN = process.env.TITUS_UI_OTHER_TOKEN ?? '';
const CHROMIUM = process.env.TITUS_UI_CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.TITUS_UI_SCREENSHOTS || 'localstack/.run/ui-screenshots';
const DOCS_SHOT = process.env.TITUS_UI_DOCS_SCREENSHOT || '';
const RUN = process.env.TITUS_UI_RUN || String(process.pid);
const IMAGE = { name: 'titus-demo/busybox', tag: 'latest' };
const TEAM = `ui-${RUN}@titus.local`;

const started = Date.now();
const log = (message) => console.error(`[ui-test +${((Date.now() - started) / 1000).toFixed(1)}s] ${message}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------- the API, from node ----------

async function call(method, path, { token = TOKEN, body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${BASE}/api/v3/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: response.status, json, text };
}

async function submit(descriptor, token = TOKEN) {
  const reply = await call('POST', 'jobs', { token, body: descriptor });
  if (reply.status !== 201 && reply.status !== 200) {
    throw new Error(`submitting ${descriptor.applicationName} answered ${reply.status}: ${reply.text}`);
  }
  return reply.json.id;
}

function descriptor(app, { service, batch, command, memoryMB = 512, cpu = 0.25 }) {
  return {
    owner: { teamEmail: TEAM },
    applicationName: app,
    container: {
      image: IMAGE,
      command,
      resources: { cpu, memoryMB },
      killGracePeriodSec: 2,
    },
    ...(service ? { service: { capacity: service } } : { batch: { size: batch } }),
  };
}

/** The running containers of a job, by the label the agent puts on every task container. */
function runningContainersOf(jobId) {
  const out = execFileSync('docker', ['ps', '-q', '--filter', `label=titus.job.id=${jobId}`], { encoding: 'utf8' });
  return out.split('\n').filter(Boolean);
}

// ---------- the browser ----------

class Failure extends Error {}

const consoleLines = [];
const cspViolations = [];

function watch(page, name) {
  page.on('console', (message) => {
    const line = `${name} console.${message.type()}: ${message.text()}`;
    consoleLines.push(line);
    if (/Content Security Policy|Refused to/i.test(message.text())) cspViolations.push(line);
  });
  page.on('pageerror', (error) => consoleLines.push(`${name} page error: ${error.message}`));
  page.on('requestfailed', (request) => {
    // Long polls cut short by navigation are expected; anything else is worth seeing.
    const failure = request.failure();
    if (!(failure && /ERR_ABORTED/.test(failure.errorText))) consoleLines.push(`${name} request failed: ${request.url()} ${failure && failure.errorText}`);
  });
}

async function describe(page) {
  try {
    const text = await page.evaluate(() => (document.querySelector('main') || document.body).innerText);
    return `page ${page.url()} shows:\n${text.slice(0, 4000)}`;
  } catch (error) {
    return `page ${page.url()} could not be read: ${error.message}`;
  }
}

/** Waits until `check()` returns something truthy; on time-out fails with what the page shows. */
async function until(page, what, check, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      await page.screenshot({ path: join(SHOTS, `failure-${Date.now()}.png`), fullPage: true }).catch(() => {});
      throw new Failure(
        `timed out after ${timeoutMs / 1000} s waiting for ${what}` +
          (last instanceof Error ? ` (last error: ${last.message})` : last !== undefined ? ` (last: ${JSON.stringify(last)})` : '') +
          `\n${await describe(page)}`,
      );
    }
    await sleep(250);
  }
}

const text = (page, selector) => page.locator(selector).first().innerText({ timeout: 2000 });
const states = (page, tableSelector) =>
  page.$$eval(`${tableSelector} tbody td [data-state]`, (cells) => cells.map((c) => c.getAttribute('data-state')));
const alertText = (page) => page.$$eval('[role="alert"]', (alerts) => alerts.map((a) => a.innerText).join('\n'));

async function open(page, hash) {
  await page.goto(`${BASE}/ui/${hash}`);
  await page.waitForSelector('main h1', { timeout: 15000 });
}

/** Types the token into the identity box, as a user does once per tab (sessionStorage). */
async function useToken(page) {
  await page.fill('#token', TOKEN);
  await page.click('button:has-text("Use token")');
  await until(page, 'the identity box to take the token', async () => /carry this token/.test(await text(page, '#identity-status')));
}

async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
  return path;
}

// ---------- the test ----------

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  const cleanups = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    const page = await context.newPage();
    watch(page, 'main');

    // The page without a token: no Authorization header, so the API refuses, shown as such.
    await open(page, '#/jobs');
    await until(page, 'the identity box to say no token is set', async () => /No token/.test(await text(page, '#identity-status')));
    await until(page, 'the jobs page to show the 401 of a request without a token', async () =>
      /Not authenticated \(401\)/.test(await alertText(page)),
    );

    await useToken(page);
    const stored = await page.evaluate(() => sessionStorage.getItem('titus.token'));
    if (stored !== TOKEN) throw new Failure(`the token is not in sessionStorage (found ${JSON.stringify(stored)})`);

    log('submitting the jobs through the API');
    const serviceApp = `ui-service-${RUN}`;
    const service = await submit(descriptor(serviceApp, { service: { min: 1, desired: 2, max: 3 }, command: ['sleep', '600'] }));
    cleanups.push(() => call('DELETE', `jobs/${service}`));
    const batch = await submit(descriptor(`ui-batch-${RUN}`, { batch: 2, command: ['sh', '-c', 'echo hello; sleep 3'] }));
    cleanups.push(() => call('DELETE', `jobs/${batch}`));
    // More memory than any agent offers: its task waits, and the pages say why.
    const unplaceable = await submit(descriptor(`ui-waits-${RUN}`, { batch: 1, command: ['true'], memoryMB: 64000 }));
    cleanups.push(() => call('DELETE', `jobs/${unplaceable}`));
    let others = null;
    if (OTHER_TOKEN) {
      others = await submit(descriptor(`ui-others-${RUN}`, { service: { min: 0, desired: 1, max: 1 }, command: ['sleep', '600'] }), OTHER_TOKEN);
      cleanups.push(() => call('DELETE', `jobs/${others}`, { token: OTHER_TOKEN }));
    }
    log(`service ${service}, batch ${batch}, unplaceable ${unplaceable}${others ? `, another identity's ${others}` : ''}`);

    // The jobs list, its filters, and paging through the API's cursor.
    await open(page, '#/jobs');
    await until(page, 'the service job in the jobs list', () => page.locator(`tr[data-job-id="${service}"]`).count());
    await open(page, `#/jobs?app=${serviceApp}`);
    await until(page, 'the application filter to leave only the service job', async () => {
      const ids = await page.$$eval('table.jobs tbody tr', (rows) => rows.map((r) => r.getAttribute('data-job-id')));
      return ids.length === 1 && ids[0] === service;
    });
    await page.selectOption('select[name="type"]', 'batch');
    await page.fill('input[name="app"]', '');
    await page.fill('input[name="owner"]', TEAM);
    await page.click('button:has-text("Apply filters")');
    await until(page, 'the owner and type filters to show the batch jobs only', async () => {
      const ids = await page.$$eval('table.jobs tbody tr', (rows) => rows.map((r) => r.getAttribute('data-job-id')));
      return ids.length === 2 && ids.includes(batch) && ids.includes(unplaceable) && !ids.includes(service);
    });
    const expected = new Set([service, batch, unplaceable, ...(others ? [others] : [])]);
    await open(page, `#/jobs?owner=${encodeURIComponent(TEAM)}&pageSize=1`);
    const seen = [];
    for (let n = 1; n <= expected.size; n += 1) {
      const id = await until(page, `page ${n} of the owner's jobs, one a page`, async () => {
        const ids = await page.$$eval('table.jobs tbody tr', (rows) => rows.map((r) => r.getAttribute('data-job-id')));
        const label = await text(page, '.pager span');
        return ids.length === 1 && label === `Page ${n}` && !seen.includes(ids[0]) ? ids[0] : null;
      });
      seen.push(id);
      if (n < expected.size) await page.click('button:has-text("Next page")');
    }
    if (!seen.every((id) => expected.has(id))) throw new Failure(`paging showed ${seen} but the owner's jobs are ${[...expected]}`);
    // A full last page may still say hasMore (DynamoDB's pages do); the page after it is empty.
    if (!(await page.locator('button:has-text("Next page")').isDisabled())) {
      await page.click('button:has-text("Next page")');
      await until(page, 'the page after the last to be empty', async () => /No jobs match/.test(await text(page, 'main')));
      await page.click('button:has-text("Previous page")');
    }
    await page.click('button:has-text("Previous page")');
    await until(page, 'Previous page to go back a page', async () => (await text(page, '.pager span')) === `Page ${expected.size - 1}`);
    await open(page, '#/jobs');
    await until(page, 'the service job in the unfiltered list', () => page.locator(`tr[data-job-id="${service}"]`).count());
    await shot(page, 'jobs');

    // A job: its tasks reach Started, in the page and as real containers.
    await page.click(`tr[data-job-id="${service}"] a`);
    await until(page, 'the job page', async () => (await text(page, 'h1')).includes(service));
    await until(page, "the service job's 2 tasks to show Started", async () => {
      const seenStates = await states(page, 'table.tasks');
      return seenStates.length === 2 && seenStates.every((s) => s === 'Started');
    }, 120000);
    await until(page, "the service's 2 containers to run", () => runningContainersOf(service).length === 2, 30000);
    const jobShot = await shot(page, 'job');
    if (DOCS_SHOT) {
      mkdirSync(dirname(DOCS_SHOT), { recursive: true });
      copyFileSync(jobShot, DOCS_SHOT);
      log(`copied to ${DOCS_SHOT}`);
    }

    // Scaling: the API's refusals with their field errors, in the page: 400 for a value that is
    // no count, 409 for one outside the job's bounds.
    await page.fill('form.scale input[name="desired"]', '-1');
    await page.click('form.scale button:has-text("Scale")');
    await until(page, 'the 400 of a negative desired count, with its field', async () => {
      const alerts = await alertText(page);
      return /Scaling failed: Invalid request \(400\)/.test(alerts) && /desired: must be an integer/.test(alerts);
    }, 15000);
    log(`a refused scale reads: ${(await alertText(page)).replace(/\s+/g, ' ')}`);
    await page.fill('form.scale input[name="desired"]', '9');
    await page.click('form.scale button:has-text("Scale")');
    await until(page, 'the 409 of a desired count above max, with its field', async () => {
      const alerts = await alertText(page);
      return /Scaling failed: Conflict \(409\)/.test(alerts) && /desired: must be at most max/.test(alerts);
    }, 15000);
    log(`a conflicting scale reads: ${(await alertText(page)).replace(/\s+/g, ' ')}`);
    await shot(page, 'job-scale-refused');
    await page.fill('form.scale input[name="desired"]', '2');
    await page.click('form.scale button:has-text("Scale")');
    await until(page, 'a scale within bounds to be taken', async () => /Capacity is now min 1, desired 2, max 3/.test(await text(page, 'form.scale [role="status"]')), 15000);

    // A task: its history and where it was placed.
    const firstTask = await page.$eval('table.tasks tbody tr', (row) => row.getAttribute('data-task-id'));
    await page.click(`tr[data-task-id="${firstTask}"] a`);
    await until(page, 'the task page with its full history', async () => {
      const history = await states(page, 'table.history');
      return ['Accepted', 'Launched', 'StartInitiated', 'Started'].every((s) => history.includes(s));
    });
    await until(page, 'the placement the scheduler made', async () => /placed on agent/i.test(await text(page, '.placement-success')));
    await shot(page, 'task');

    // A task's output: the batch job's task said hello, read from CloudWatch Logs on its page.
    await open(page, `#/jobs/${batch}`);
    await until(page, "the batch job's tasks in its page", async () => (await page.locator('table.tasks tbody tr').count()) === 2, 60000);
    const batchTask = await page.$eval('table.tasks tbody tr', (row) => row.getAttribute('data-task-id'));
    await open(page, `#/tasks/${batchTask}`);
    await until(page, "the batch task's output, hello, on its page", async () => {
      const output = (await page.locator('#task-logs').count()) ? await text(page, '#task-logs') : '';
      return /hello/.test(output);
    }, 60000);
    log(`the batch task's page shows its output: ${(await text(page, '.log-location')).replace(/\s+/g, ' ')}`);
    await shot(page, 'task-output');

    // Why a task waits: the scheduler's reasons, on the job page and the task's.
    await open(page, `#/jobs/${unplaceable}`);
    await until(page, 'the unplaceable job to say why its task waits', async () => /insufficient memory/i.test(await text(page, '.placement-failures')), 90000);
    const waiting = await page.$eval('table.tasks tbody tr', (row) => row.getAttribute('data-task-id'));
    await open(page, `#/tasks/${waiting}`);
    await until(page, 'the waiting task to say why it waits', async () => {
      const heading = await text(page, '#placement-title');
      return heading === 'Why it waits' && /insufficient memory/i.test(await text(page, '.placement-failures'));
    }, 30000);
    await shot(page, 'task-waiting');

    // Agents: what their tasks hold against what they offer.
    await open(page, '#/agents');
    await until(page, 'two agents with the service tasks allocated', async () => {
      const rows = await page.locator('table.agents tbody tr').count();
      const tasks = await page.$$eval('table.agents td[data-resource="tasks"]', (cells) => cells.map((c) => Number(c.innerText)));
      const cpu = await page.$$eval('table.agents td[data-resource="cpu"] meter', (meters) => meters.map((m) => Number(m.value)));
      return rows >= 2 && tasks.reduce((a, b) => a + b, 0) >= 2 && cpu.some((v) => v > 0);
    });
    log(`agents: ${await text(page, '#agent-totals')}`);
    await shot(page, 'agents');

    // The event feed of the service job, kept open in a second tab to see the kill arrive live.
    const feed = await context.newPage();
    watch(feed, 'feed');
    await open(feed, `#/events?jobId=${service}&since=1h`);
    await useToken(feed);
    await until(feed, "the service job's TaskStateChange events up to Started", async () => {
      const rows = await feed.$$eval('table.events tbody tr', (trs) =>
        trs.map((tr) => [tr.getAttribute('data-event-type'), tr.getAttribute('data-job-id'), tr.querySelector('[data-state]')?.getAttribute('data-state')]),
      );
      const started = rows.filter(([type, job, state]) => type === 'TaskStateChange' && job === service && state === 'Started');
      return started.length === 2 && rows.every(([, job]) => job === service);
    }, 60000);
    await until(feed, 'the feed to say it is live', async () => /^Live/.test(await text(feed, '#feed-status')));
    await shot(feed, 'events');

    // Another identity's job: the kill is refused with a 403, shown as such.
    if (others) {
      await open(page, `#/jobs/${others}`);
      await until(page, "the other identity's job page", async () => (await text(page, '#job-state')).includes('Accepted'));
      await page.click('button:has-text("Kill job")');
      await page.click('button:has-text("Yes, kill job")');
      await until(page, 'the 403 of killing a job of another identity', async () => {
        const alerts = await alertText(page);
        return /Kill job failed: Not allowed \(403\)/.test(alerts) && /may not change job/.test(alerts);
      }, 15000);
      log(`a refused kill reads: ${(await alertText(page)).replace(/\s+/g, ' ')}`);
      await shot(page, 'job-forbidden');
      const still = await call('GET', `jobs/${others}`);
      if (still.json.status.state !== 'Accepted') throw new Failure(`the refused kill changed job ${others}: ${still.text}`);
    } else {
      log('no second identity configured: the 403 case is skipped');
    }

    // The kill, from the job page, until every task is Finished and no container runs.
    await open(page, `#/jobs/${service}`);
    await until(page, 'the service job page with its Started tasks', async () => (await states(page, 'table.tasks')).filter((s) => s === 'Started').length === 2);
    await page.click('button:has-text("Kill job")');
    await page.click('button:has-text("Yes, kill job")');
    await until(page, 'the kill to be accepted', async () => /Kill requested/.test(await text(page, '[role="status"].ok')), 15000);
    const seenDuringKill = new Set();
    await until(page, "the service job's tasks to show Finished", async () => {
      const now = await states(page, 'table.tasks');
      now.forEach((s) => seenDuringKill.add(s));
      return now.length === 2 && now.every((s) => s === 'Finished');
    }, 90000);
    await until(page, 'the job to show Finished', async () => (await text(page, '#job-state')).includes('Finished'), 30000);
    log(`states seen during the kill: ${[...seenDuringKill].join(', ')}`);
    await until(page, 'no running container of the killed job', () => runningContainersOf(service).length === 0, 30000);
    await until(feed, 'the feed tab to show the kill live: KillInitiated and Finished of both tasks', async () => {
      const rows = await feed.$$eval('table.events tbody tr', (trs) =>
        trs.map((tr) => [tr.getAttribute('data-event-type'), tr.querySelector('[data-state]')?.getAttribute('data-state')]),
      );
      const count = (state) => rows.filter(([type, s]) => type === 'TaskStateChange' && s === state).length;
      return count('KillInitiated') === 2 && count('Finished') === 2;
    }, 60000);
    await page.click(`table.tasks tbody tr a`);
    await until(page, 'a killed task to show KillInitiated then Finished (killed) in its history', async () => {
      const history = await states(page, 'table.history');
      const reason = await text(page, '#task-state');
      return history.indexOf('KillInitiated') >= 0 && history.indexOf('KillInitiated') < history.lastIndexOf('Finished') && /killed/.test(reason);
    });

    // The batch job ran to completion meanwhile.
    await open(page, `#/jobs/${batch}`);
    await until(page, "the batch job's tasks to finish normally", async () => {
      const now = await states(page, 'table.tasks');
      return now.length === 2 && now.every((s) => s === 'Finished') && /normal/.test(await text(page, 'table.tasks tbody'));
    }, 90000);

    if (cspViolations.length) throw new Failure(`the page broke its Content-Security-Policy:\n${cspViolations.join('\n')}`);
    const pageErrors = consoleLines.filter((l) => / page error: /.test(l));
    if (pageErrors.length) throw new Failure(`the page threw:\n${pageErrors.join('\n')}`);
    log('passed');
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`[ui-test] FAILED: ${error instanceof Failure ? error.message : error.stack}`);
  if (consoleLines.length) console.error(`[ui-test] browser console (last 30 lines):\n${consoleLines.slice(-30).join('\n')}`);
  process.exit(1);
});
