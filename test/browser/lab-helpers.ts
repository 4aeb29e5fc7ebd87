/**
 * Helpers for the lab's per-panel browser tests: a folder of models served under /models/ (the shipped organism with
 * its direction and controller, optionally a random-weight test model and a model that cannot be patched), a page
 * on the lab, diagnostics on failure (a screenshot and the browser's console log in test-output/browser/<test>/),
 * and read-outs of the playground and the evaluation table. Waits are on the page's state, bounded only by
 * harness.ts's GUARD_MS.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Locator, Page } from 'playwright-core';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { DEFAULT_MODEL } from '../../src/ui/lib/models.js';
import { BROWSER_OUTPUT, GUARD_MS, launchChromium, PROJECT_ROOT, startLabServer, TEST_GUARD_MS, withDiagnostics, type BrowserSession, type LabServer } from './harness.js';

export { GUARD_MS, TEST_GUARD_MS };

export interface LabFixture {
  server: LabServer;
  close(): Promise<void>;
}

/**
 * Models under /models/: the default model (the shipped organism, copied with its direction and controller);
 * `tinyTest` a random-weight model that writes until its context ends (Stop is checked on it); `broken` a copy of
 * the organism whose config promises one layer more than its graph has (it cannot be patched).
 */
export async function labFixture(opts: { tinyTest?: boolean; broken?: boolean } = {}): Promise<LabFixture> {
  const tmp = mkdtempSync(join(tmpdir(), 'steerlab-lab-'));
  cpSync(join(PROJECT_ROOT, 'models', DEFAULT_MODEL.id), join(tmp, DEFAULT_MODEL.id), {
    recursive: true,
    filter: (src) => !/[/\\](train|dev|eval)([/\\]|$)/.test(src.slice(join(PROJECT_ROOT, 'models').length)),
  });
  if (opts.tinyTest) await buildTestModel(join(tmp, 'tiny-test'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 7 });
  if (opts.broken) {
    cpSync(join(tmp, DEFAULT_MODEL.id), join(tmp, 'broken-test'), { recursive: true });
    const cfg = JSON.parse(readFileSync(join(tmp, 'broken-test/config.json'), 'utf8')) as Record<string, number>;
    writeFileSync(join(tmp, 'broken-test/config.json'), JSON.stringify({ ...cfg, num_hidden_layers: cfg.num_hidden_layers! + 1 }));
  }
  const server = await startLabServer({ [DEFAULT_MODEL.localModelPath!]: tmp });
  return {
    server,
    async close() {
      await server.close();
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}

export interface LabPage {
  page: Page;
  session: BrowserSession;
  /** Saves a screenshot of the page under the test's output folder. */
  shoot(name: string): Promise<void>;
}

/**
 * Opens the lab in a fresh Chromium and runs `fn` (withDiagnostics: on failure a screenshot and the browser's
 * console log in test-output/browser/<name>/). Also fails on uncaught page errors and on any request that left the
 * local server.
 */
export async function withLab(fixture: LabFixture, name: string, fn: (lab: LabPage) => Promise<void>): Promise<void> {
  const dir = join(BROWSER_OUTPUT, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const session = await launchChromium();
  const { page } = session;
  const shoot = async (shot: string) => {
    await page.screenshot({ path: join(dir, `${shot}.png`), fullPage: true });
  };
  try {
    await withDiagnostics(session, name, async () => {
      await page.setViewportSize({ width: 1366, height: 900 });
      await page.goto(fixture.server.url);
      await fn({ page, session, shoot });
      expect(session.log.filter((l) => l.startsWith('[pageerror]')), 'uncaught page errors').toEqual([]);
      const url = fixture.server.url;
      const foreign = session.requests.filter((u) => !u.startsWith(url) && !u.startsWith('blob:') && !u.startsWith('data:'));
      expect(foreign, 'requests that left the local server').toEqual([]);
    });
  } finally {
    await session.close();
  }
}

/**
 * Waits until the default model (the organism) is loaded and ready: the lab loads it as it opens; where another
 * model was loaded since (or failed), the header's "Load the default model" button loads it again.
 */
export async function loadDefaultModel(page: Page): Promise<void> {
  await page.getByRole('tab', { name: 'Model' }).click();
  const ready = page.getByTestId('model-ready').locator('h3');
  const button = page.getByTestId('load-default');
  await expect
    .poll(async () => {
      if (new RegExp(DEFAULT_MODEL.id).test((await ready.textContent({ timeout: 1000 }).catch(() => '')) ?? '')) return 'ready';
      if ((await button.isVisible()) && (await button.isEnabled())) await button.click();
      return 'waiting';
    }, { timeout: GUARD_MS })
    .toBe('ready');
  // Ready means its direction and controller are in place (restored or shipped).
  await expect.poll(() => page.locator('header').textContent(), { timeout: GUARD_MS }).toMatch(/direction: (diff-in-means|embedding)/);
  await idle(page);
}

/** Loads the random-weight test model (4 layers; it writes until its 256-token context ends) from the Model tab. */
export async function loadTinyTest(page: Page): Promise<void> {
  await page.getByRole('tab', { name: 'Model' }).click();
  await page.locator('#model-select').selectOption('__custom__');
  await page.getByLabel(/served by this lab/).check();
  await page.getByLabel('Folder under /models/').fill('tiny-test');
  await page.locator('#dtype-select').selectOption('fp32');
  await page.getByRole('button', { name: 'Load model' }).click();
  await expect.poll(() => page.getByTestId('model-ready').locator('h3').textContent().catch(() => ''), { timeout: GUARD_MS }).toMatch(/tiny-test/);
  await idle(page);
}

/** The token count a reply's line reports ("N tokens, eos|length|abort"). */
export const tokensOf = (info: string | null): number => Number(/(\d+) tokens, (?:eos|length|abort)/.exec(info ?? '')?.[1]);

/** Waits until no job runs (the header's busy pill is gone). */
export async function idle(page: Page): Promise<void> {
  await expect.poll(() => page.locator('header .pill.busy').count(), { timeout: GUARD_MS }).toBe(0);
}

/** Base and steered replies in the Playground (the panel's settings), waited for until both are done and no job runs. */
export async function generateInPlayground(page: Page, prompt: string, newTokens: number): Promise<void> {
  await page.getByRole('tab', { name: 'Playground' }).click();
  const play = page.locator('#panel-playground');
  await play.getByLabel(/^Prompt/).fill(prompt);
  await play.getByLabel('New tokens').fill(String(newTokens));
  await page.getByRole('button', { name: 'Generate base + steered' }).click();
  // Done when the steered reply reports the run (its line is empty until then).
  await expect.poll(() => play.locator('article').nth(1).textContent(), { timeout: GUARD_MS }).toMatch(/both in/);
  await idle(page);
}

/** A small, fast controller training run (8 prompts per class, 2 epochs, width 64), waited for until it is active. */
export async function trainSmallController(page: Page): Promise<void> {
  await page.getByRole('tab', { name: 'Controller' }).click();
  const ctl = page.locator('#panel-controller');
  await ctl.getByLabel('Prompts per class').fill('8');
  await ctl.getByLabel('Epochs').fill('2');
  await ctl.getByLabel('Hidden width').fill('64');
  await ctl.getByRole('button', { name: 'Train controller' }).click();
  await expect.poll(() => ctl.getByTestId('controller-active').textContent().catch(() => ''), { timeout: GUARD_MS }).toMatch(/trained in this browser/);
  await idle(page);
}

/** Waits until the Evaluation tab's run with N prompts per dataset has ended, and says how (done, failed, cancelled). */
export async function runEnded(panel: Locator, n: number): Promise<string> {
  let status = '';
  await expect
    .poll(async () => {
      const label = (await panel.locator('ul.runs button.link').allTextContents()).find((l) => l.includes(`· N ${n} ·`)) ?? '';
      status = /· (done|failed|cancelled) ·/.exec(label)?.[1] ?? '';
      return status;
    }, { timeout: GUARD_MS })
    .not.toBe('');
  return status;
}

/**
 * A small diff-in-means direction computed in the Direction tab (6 + 4 prompts per class), waited for until its
 * separation plot shows and no job runs. KL threshold 3: with so few prompts the exact ablation of the organism's best
 * candidate moves its harmless replies by a KL of about 2.1, above the tab's preset 1.
 */
export async function computeSmallDirection(page: Page): Promise<void> {
  await page.getByRole('tab', { name: 'Direction' }).click();
  const panel = page.locator('#panel-direction');
  await panel.getByLabel('Training prompts per class').fill('6');
  await panel.getByLabel(/^Validation prompts per class/).fill('4');
  await panel.getByLabel(/^KL threshold/).fill('3');
  await panel.getByLabel(/^Induced-refusal threshold/).fill('-2');
  await panel.getByRole('button', { name: 'Compute direction' }).click();
  await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: GUARD_MS });
  await idle(page);
}

/** Per-layer row norms of the playground's current steering matrix (data-norms on the chart wrapper). */
export async function norms(page: Page): Promise<number[]> {
  const raw = await page.getByTestId('matrix-norms').getAttribute('data-norms');
  return JSON.parse(raw ?? '[]') as number[];
}

/**
 * Samples the text length of some elements every 15 ms inside the page (no round trips), so a test can tell text
 * that streamed in token by token from text that appeared at once.
 */
export function streamedLengths(page: Page, testIds: string[]): { stop(): Promise<Record<string, number[]>> } {
  const started = page.evaluate((ids) => {
    const w = window as unknown as { __lens: Record<string, number[]>; __lensTimer: number };
    w.__lens = Object.fromEntries(ids.map((id) => [id, []]));
    w.__lensTimer = window.setInterval(() => {
      for (const id of ids) {
        const n = document.querySelector(`[data-testid="${id}"]`)?.textContent?.length ?? 0;
        const list = w.__lens[id]!;
        if (list[list.length - 1] !== n) list.push(n);
      }
    }, 15);
  }, testIds);
  return {
    async stop() {
      await started;
      return page.evaluate(() => {
        const w = window as unknown as { __lens: Record<string, number[]>; __lensTimer: number };
        clearInterval(w.__lensTimer);
        return w.__lens;
      });
    },
  };
}

/** Per summary row: judged prompts (n, column 3) plus prompts the model could not take ("not judged", column 8). */
export async function judgedPlusUnjudged(table: Locator): Promise<number[]> {
  const n = await table.locator('tbody tr td:nth-child(3)').allTextContents();
  const unjudged = await table.locator('tbody tr td:nth-child(8)').allTextContents();
  return n.map((x, i) => Number(x) + Number(unjudged[i]));
}
