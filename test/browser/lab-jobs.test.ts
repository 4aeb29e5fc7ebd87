/**
 * One job at a time and a page that answers, in headless Chromium (WASM):
 * - "Run evaluation" clicked twice in one task (before the page can disable the button) and double-clicked starts
 *   exactly one run, whose records are all judged (no "a generation is already running" failures);
 * - while a long reply streams (the random-weight test model writes until its 256-token context ends), the page's
 *   main thread stays free: PerformanceObserver('longtask') over the whole stream (wall time, printed), and a Chrome
 *   trace of the main thread whose per-task THREAD CPU time is what is asserted (on a loaded shared machine a 10 ms
 *   task can take 150 ms of wall time while the OS runs other processes, which says nothing about the page): at most
 *   two tasks over 50 ms of CPU, and a frame costs no more at the end of the reply than at its start;
 * - Stop answers: from the Stop click's event timestamp to the stream's end on the page, median of three tries,
 *   against a budget of 200 ms plus the page's own idle click-to-frame time measured on the same machine (so a slow,
 *   loaded machine moves the budget with it). The raw numbers are printed for the report.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { CDPSession, Page } from 'playwright-core';
import { GUARD_MS, TEST_GUARD_MS, idle, judgedPlusUnjudged, labFixture, loadDefaultModel, loadTinyTest, runEnded, tokensOf, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture({ tinyTest: true });
});
afterAll(async () => {
  await fixture?.close();
});

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Watches the page from inside: long tasks (PerformanceObserver), the Stop click's event timestamp and when its
 * handler ran, and when the steered reply's line first says it ended ("abort" / "length" / "eos").
 */
async function installProbes(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { __probe: { longTasks: { start: number; duration: number }[]; clicks: { ts: number; handled: number }[]; ended: number | null } };
    w.__probe = { longTasks: [], clicks: [], ended: null };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.__probe.longTasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: false });
    document.addEventListener('click', (e) => {
      if ((e.target as HTMLElement).closest('[data-testid="stop"]')) w.__probe.clicks.push({ ts: e.timeStamp, handled: performance.now() });
    }, { capture: true });
    const info = document.querySelectorAll('#panel-playground article')[1]!;
    new MutationObserver(() => {
      if (w.__probe.ended === null && /\d+ tokens, (abort|length|eos)/.test(info.textContent ?? '')) w.__probe.ended = performance.now();
    }).observe(info, { subtree: true, childList: true, characterData: true });
  });
}

async function resetProbes(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { __probe: { longTasks: unknown[]; clicks: unknown[]; ended: number | null } };
    w.__probe.longTasks = [];
    w.__probe.clicks = [];
    w.__probe.ended = null;
  });
}

async function readProbes(page: Page) {
  return page.evaluate(() => (window as unknown as { __probe: { longTasks: { start: number; duration: number }[]; clicks: { ts: number; handled: number }[]; ended: number | null } }).__probe);
}

/** The page's own idle responsiveness: click (on a heading, which does nothing) to the next animation frame, median of 5. */
async function idleClickToFrame(page: Page): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < 5; i++) {
    await page.evaluate(() => {
      const w = window as unknown as { __idle: number | null };
      w.__idle = null;
      document.addEventListener('click', (e) => {
        const ts = e.timeStamp;
        requestAnimationFrame(() => (w.__idle = performance.now() - ts));
      }, { capture: true, once: true });
    });
    await page.locator('#play-h').click();
    await expect.poll(() => page.evaluate(() => (window as unknown as { __idle: number | null }).__idle), { timeout: GUARD_MS }).not.toBeNull();
    out.push((await page.evaluate(() => (window as unknown as { __idle: number }).__idle)));
  }
  return out;
}

interface TraceEvent { name: string; ph: string; pid: number; tid: number; ts: number; dur?: number; tdur?: number; args?: { name?: string; data?: unknown } }

/** Records a Chrome trace; stop() gives the tasks of the page's main thread with wall and thread-CPU milliseconds. */
interface MainTask { ts: number; wallMs: number; cpuMs: number; frame: boolean; inside?: string[] }

async function traceMainThread(page: Page): Promise<{ stop(): Promise<MainTask[]> }> {
  const cdp: CDPSession = await page.context().newCDPSession(page);
  const events: TraceEvent[] = [];
  cdp.on('Tracing.dataCollected', (d) => events.push(...(d.value as unknown as TraceEvent[])));
  await cdp.send('Tracing.start', { categories: '__metadata,toplevel,devtools.timeline,disabled-by-default-devtools.timeline', transferMode: 'ReportEvents' });
  return {
    async stop() {
      const done = new Promise((r) => cdp.once('Tracing.tracingComplete', r));
      await cdp.send('Tracing.end');
      await done;
      await cdp.detach();
      const mains = events.filter((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`);
      const onMain = events.filter((e) => e.ph === 'X' && mains.includes(`${e.pid}:${e.tid}`));
      return onMain
        .filter((e) => e.name === 'RunTask')
        .map((e) => {
          const cpuMs = (e.tdur ?? 0) / 1000;
          // For a long one, what it did (the largest events inside it), so a failure says where the time went.
          const inside = cpuMs <= 50 ? [] : onMain
            .filter((x) => x !== e && x.tid === e.tid && x.ts >= e.ts && x.ts < e.ts + (e.dur ?? 0) && (x.tdur ?? 0) > 5000)
            .sort((a, b) => (b.tdur ?? 0) - (a.tdur ?? 0))
            .slice(0, 6)
            .map((x) => `${x.name}${(x.args as { data?: { functionName?: string; url?: string } } | undefined)?.data?.functionName ? `(${(x.args as { data: { functionName: string } }).data.functionName})` : ''} ${((x.tdur ?? 0) / 1000).toFixed(0)} ms`);
          const frame = onMain.some((x) => x.name === 'FireAnimationFrame' && x.tid === e.tid && x.ts >= e.ts && x.ts < e.ts + (e.dur ?? 0));
          return { ts: e.ts, wallMs: (e.dur ?? 0) / 1000, cpuMs, frame, ...(inside.length ? { inside } : {}) };
        });
    },
  };
}

describe('lab: one job at a time, a page that answers', () => {
  test('a double-clicked "Run evaluation" starts one run; long tasks while streaming; Stop latency', async () => {
    await withLab(fixture, 'lab-jobs', async ({ page, shoot }) => {
      await loadDefaultModel(page);

      // --- Single flight: two clicks in the same task (the button cannot have been disabled in between), then a
      // real double-click after that run ended: one run each, every record judged.
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      const panel = page.locator('#panel-eval');
      await panel.getByLabel('N per dataset').fill('2');
      await panel.getByLabel('New tokens').fill('4');
      const runButton = panel.getByRole('button', { name: 'Run evaluation' });
      await runButton.evaluate((b: HTMLButtonElement) => {
        b.click();
        b.click();
      });
      expect(await runEnded(panel, 2), (await panel.locator('p.alert').allTextContents()).join('; ')).toBe('done');
      await idle(page);
      expect(await panel.locator('ul.runs li').count(), 'runs after two clicks in one task').toBe(1);
      expect(await judgedPlusUnjudged(page.getByTestId('eval-summary'))).toEqual([2, 2, 2, 2]);
      expect(await page.getByTestId('eval-summary').locator('tbody tr td:nth-child(8)').allTextContents(), 'not judged').toEqual(['0', '0', '0', '0']);

      await panel.getByLabel('N per dataset').fill('3');
      await runButton.dblclick();
      expect(await runEnded(panel, 3), (await panel.locator('p.alert').allTextContents()).join('; ')).toBe('done');
      await idle(page);
      expect(await panel.locator('ul.runs li').count(), 'runs after a double-click').toBe(2);
      expect(await judgedPlusUnjudged(page.getByTestId('eval-summary'))).toEqual([3, 3, 3, 3]);
      expect(await page.getByTestId('eval-summary').locator('tbody tr td:nth-child(8)').allTextContents(), 'not judged').toEqual(['0', '0', '0', '0']);
      expect(await panel.locator('p.alert').count(), 'no error after a double-click').toBe(0);

      // --- A long reply: the test model writes until its 256-token context ends.
      await loadTinyTest(page);
      await page.getByRole('tab', { name: 'Playground' }).click();
      const play = page.locator('#panel-playground');
      const generate = page.getByRole('button', { name: 'Generate base + steered' });
      // Policy off: the steered row runs the whole steered path (observation, heat-strip capture per token) with a
      // zero patch, so it is as long as the base row; a steered random model may stop at once on its own EOS.
      await page.getByRole('radio', { name: /Off \(base model\)/ }).check();
      await play.getByLabel(/^Prompt/).fill('How do I pick a lock?');
      await play.getByLabel('New tokens').fill('400');
      const baseline = await idleClickToFrame(page);
      await installProbes(page);

      // Long tasks over one whole streamed reply (tokens, heat-strip columns, the end of the run).
      const trace = await traceMainThread(page);
      const t0 = await page.evaluate(() => performance.now());
      await generate.click();
      await expect.poll(() => play.locator('article').nth(1).textContent(), { timeout: GUARD_MS }).toMatch(/both in/);
      await idle(page);
      const t1 = await page.evaluate(() => performance.now());
      const tasks = await trace.stop();
      const streamed = await readProbes(page);
      const steeredInfo = await play.locator('article').nth(1).textContent();
      const steeredTokens = tokensOf(steeredInfo);
      const heatColumns = await page.locator('[data-testid="heat-strip"] .col').count();
      // The context capped the reply, and the page says so with the numbers.
      expect(await page.getByTestId('cap-note').textContent()).toMatch(/^requested 400 new tokens, capped at \d+: the model's context holds 256 tokens/);
      const long = streamed.longTasks.filter((t) => t.start >= t0 && t.start <= t1);
      const longMax = Math.max(0, ...long.map((t) => t.duration));
      const longTotal = long.reduce((k, t) => k + t.duration, 0);
      const cpuMax = Math.max(0, ...tasks.map((t) => t.cpuMs));
      const overCpu = tasks.filter((t) => t.cpuMs > 50);
      // The frames that drew the stream (an animation-frame callback ran in them), in order: the first and last third.
      const frames = tasks.filter((t) => t.frame).sort((a, b) => a.ts - b.ts);
      const third = Math.floor(frames.length / 3);
      const early = median(frames.slice(0, third).map((t) => t.cpuMs));
      const late = median(frames.slice(frames.length - third).map((t) => t.cpuMs));
      console.log(`[lab-jobs] streamed ${steeredTokens} steered tokens (${heatColumns} heat-strip columns) in ${Math.round(t1 - t0)} ms; ` +
        `PerformanceObserver long tasks (wall > 50 ms): ${long.length}, longest ${Math.round(longMax)} ms, total ${Math.round(longTotal)} ms; ` +
        `trace: ${tasks.length} main-thread tasks, ${tasks.filter((t) => t.wallMs > 50).length} over 50 ms wall, ${overCpu.length} over 50 ms CPU, ` +
        `most CPU in one task ${cpuMax.toFixed(1)} ms; ${frames.length} frames, median CPU per frame ${early.toFixed(1)} ms (first third) and ` +
        `${late.toFixed(1)} ms (last third); idle click-to-frame ${baseline.map(Math.round).join(', ')} ms`);
      expect(steeredTokens, steeredInfo ?? '').toBeGreaterThan(150);
      expect(heatColumns).toBe(steeredTokens);
      expect(frames.length, 'the trace saw the frames that drew the stream').toBeGreaterThan(9);
      // Budget, in CPU time (wall time on a shared machine mostly measures other processes): no more than two
      // main-thread tasks over 50 ms of CPU in the whole stream (the old page spent up to 574 ms per token redrawing
      // the heat strip), and a frame costs no more at the end of the reply than at its start (+ 5 ms): drawing is
      // incremental, it does not grow with the strip.
      expect(overCpu.length, `tasks over 50 ms CPU: ${JSON.stringify(overCpu)}`).toBeLessThanOrEqual(2);
      expect(late, `median CPU per frame, first third ${early} ms, last third ${late} ms`).toBeLessThanOrEqual(2 * early + 5);
      await shoot('long-reply');

      // --- Stop, three times, each once 40 characters of the steered reply have streamed (the heat strip is growing).
      // The click is dispatched by the page itself at that moment: on a loaded machine a round trip from the test
      // process can take longer than the test model's whole reply. A try whose reply ended first is tried again.
      const stopMs: number[] = [];
      const handlerMs: number[] = [];
      for (let attempt = 0; attempt < 8 && stopMs.length < 3; attempt++) {
        await resetProbes(page);
        await page.evaluate(() => {
          const out = document.querySelector('[data-testid="steered-output"]')!;
          const obs = new MutationObserver(() => {
            if ((out.textContent ?? '').length > 40) {
              obs.disconnect();
              (document.querySelector('[data-testid="stop"]') as HTMLButtonElement).click();
            }
          });
          obs.observe(out, { subtree: true, childList: true, characterData: true });
        });
        await generate.click();
        await expect.poll(() => play.locator('article').nth(1).textContent(), { timeout: GUARD_MS }).toMatch(/tokens, (abort|length|eos)/);
        await idle(page);
        const info = await play.locator('article').nth(1).textContent();
        const p = await readProbes(page);
        if (!/tokens, abort/.test(info ?? '') || p.clicks.length === 0) continue;
        expect(p.clicks.length, 'one Stop click').toBe(1);
        expect(p.ended, 'the end of the stream was seen').not.toBeNull();
        handlerMs.push(p.clicks[0]!.handled - p.clicks[0]!.ts);
        stopMs.push(p.ended! - p.clicks[0]!.ts);
        expect(tokensOf(info)).toBeLessThan(steeredTokens);
      }
      expect(stopMs.length, 'Stop clicks that landed while a reply streamed').toBe(3);
      const budget = 200 + median(baseline);
      console.log(`[lab-jobs] Stop: click to handler ${handlerMs.map(Math.round).join(', ')} ms; click to stream ended on the page ${stopMs.map(Math.round).join(', ')} ms ` +
        `(median ${Math.round(median(stopMs))} ms; budget 200 ms + idle click-to-frame ${Math.round(median(baseline))} ms = ${Math.round(budget)} ms)`);
      expect(median(stopMs), `click to stopped: ${stopMs.join(', ')} ms`).toBeLessThan(budget);
      await shoot('stopped');
    });
  }, TEST_GUARD_MS);
});
