/**
 * The Sweep view in headless Chromium: a sweep JSON (the `lab sweep` shape) is imported and drawn with Chart.js;
 * hovering a point shows its settings and sample replies as text (an HTML payload stays text); clicking the
 * operating point loads its policy, alpha and steering settings into the playground; at 390 px wide the chart fits.
 * A sweep run in the lab (the core sweep runner in the LLM worker) is drawn the same way, saves as lab sweep's files,
 * refuses a bad alpha list by name, and a second run with the same settings resumes from IndexedDB to the same report.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Page } from 'playwright-core';
import { GUARD_MS, TEST_GUARD_MS, idle, labFixture, loadDefaultModel, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture();
});
afterAll(async () => {
  await fixture?.close();
});

const m = (harmful: number, wrapped: number, over: number, nll = 2) => ({ coherent_refusal_harmful: harmful, coherent_refusal_wrapped: wrapped, coherent_over_refusal: over, mean_reply_nll: nll });
const SWEEP = {
  format: 'steerlab-sweep',
  version: 1,
  rows: [
    { id: 'base', split: 'dev', base: true, settings: { policy: 'off', alpha: null, mode: null, layers: null, positions: null }, metrics: m(0.4, 0.1, 0.02), samples: [] },
    { id: 'was-a2-add', split: 'dev', settings: { policy: 'was', alpha: 2, mode: 'add', layers: null, positions: 'last' }, metrics: m(0.42, 0.3, 0.03),
      samples: [{ dataset: 'wrapped-dev', prompt: 'p', output: '<img src=x onerror="document.title=1">I cannot help with that.' }] },
    { id: 'was-a4-clamp', split: 'dev', settings: { policy: 'was', alpha: 4, mode: 'clamp', layers: { first: 2, last: 3 }, positions: 'all' }, metrics: m(0.45, 0.6, 0.04), samples: [] },
    { id: 'uniform-a4-add', split: 'dev', settings: { policy: 'uniform', alpha: 4, mode: 'add', layers: null, positions: 'last' }, metrics: m(0.41, 0.5, 0.05, 3), samples: [] },
  ],
};

async function pointXY(page: Page, id: string): Promise<{ x: number; y: number }> {
  const chart = page.getByTestId('sweep-chart');
  await chart.scrollIntoViewIfNeeded();
  await expect.poll(() => chart.getAttribute('data-points'), { timeout: GUARD_MS }).toMatch(new RegExp(id));
  const pts = JSON.parse((await chart.getAttribute('data-points'))!) as { id: string; x: number; y: number }[];
  const box = (await chart.boundingBox())!;
  const p = pts.find((q) => q.id === id)!;
  return { x: box.x + p.x, y: box.y + p.y };
}

describe('lab: Sweep view', () => {
  test('import, hover shows settings and replies as text, click loads the playground, fits 390 px', async () => {
    await withLab(fixture, 'lab-sweep', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Sweep' }).click();
      await page.getByTestId('sweep-file').setInputFiles({ name: 'sweep.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(SWEEP)) });
      await expect.poll(() => page.getByTestId('sweep-summary').textContent(), { timeout: GUARD_MS }).toMatch(/4 rows, 2 on the Pareto frontier; operating point\s+was-a4-clamp/);

      const a2 = await pointXY(page, 'was-a2-add');
      await page.mouse.move(a2.x, a2.y);
      const detail = page.getByTestId('sweep-detail');
      await expect.poll(() => detail.locator('h3').textContent(), { timeout: GUARD_MS }).toMatch(/was-a2-add \(on the frontier\)/);
      expect(await detail.textContent()).toContain('<img src=x onerror="document.title=1">I cannot help with that.');
      expect(await detail.locator('img').count(), 'model output rendered as text, never HTML').toBe(0);
      expect(await detail.textContent()).toMatch(/policy: was · alpha: 2 · mode: add · positions: last/);
      await shoot('sweep');

      const op = await pointXY(page, 'was-a4-clamp');
      await page.mouse.click(op.x, op.y);
      await expect.poll(() => page.getByRole('tab', { name: 'Playground' }).getAttribute('aria-selected'), { timeout: GUARD_MS }).toBe('true');
      expect(await page.getByTestId('play-mode').inputValue()).toBe('clamp');
      expect(await page.getByTestId('play-positions').inputValue()).toBe('all');
      expect(await page.getByTestId('play-ranged').isChecked()).toBe(true);
      expect(await page.locator('#panel-playground').getByLabel('first steered layer').inputValue()).toBe('2');
      expect(await page.locator('#panel-playground').getByLabel('last steered layer').inputValue()).toBe('3');
      expect(await page.locator('#panel-playground label.alpha output').textContent()).toBe('4.0');

      // 390 px wide: the chart fits the page (no sideways scrolling) and keeps a usable size.
      await page.setViewportSize({ width: 390, height: 800 });
      await page.getByRole('tab', { name: 'Sweep' }).click();
      await expect.poll(() => page.getByTestId('sweep-chart').boundingBox().then((b) => Math.round(b?.width ?? 0)), { timeout: GUARD_MS }).toBeLessThanOrEqual(390);
      expect((await page.getByTestId('sweep-chart').boundingBox())!.width).toBeGreaterThan(280);
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
      await shoot('sweep-390');
    });
  }, TEST_GUARD_MS);

  test('run a sweep in the lab: drawn, saved as sweep.json, bad alphas named, a rerun resumes to the same report', async () => {
    await withLab(fixture, 'lab-sweep-run', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Sweep' }).click();
      const form = page.getByTestId('sweep-run-form');
      await form.getByLabel('Prompts per dataset').fill('2');
      await form.getByLabel('New tokens', { exact: true }).fill('6');
      await form.getByLabel(/^Alphas/).fill('2, x');
      await expect.poll(() => form.getByTestId('sweep-row-count').textContent()).toMatch(/not a list of numbers/);
      await form.getByRole('button', { name: 'Run sweep' }).click();
      await expect.poll(() => page.locator('#panel-sweep p.alert').textContent(), { timeout: GUARD_MS }).toMatch(/alphas: "x" is not a number/);

      await form.getByLabel(/^Alphas/).fill('2, 8');
      // The shipped controller makes WAS and uniform available: base + 2 policies x 2 alphas.
      await expect.poll(() => form.getByTestId('sweep-row-count').textContent()).toMatch(/^5 rows/);
      await form.getByRole('button', { name: 'Run sweep' }).click();
      const note = page.getByTestId('sweep-run-note');
      await expect.poll(() => note.textContent(), { timeout: GUARD_MS }).toMatch(/: 5 rows, \d on the Pareto frontier; operating point/);
      await idle(page);
      await expect.poll(() => page.getByTestId('sweep-summary').textContent(), { timeout: GUARD_MS }).toMatch(/lab sweep [0-9a-f]{16}: 5 rows/);
      const first = (await note.textContent())!;
      await shoot('sweep-run');

      const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('sweep-downloads').getByRole('button', { name: 'sweep.json' }).click()]);
      const file = JSON.parse(readFileSync((await download.path())!, 'utf8')) as { format: string; rows: { id: string; samples: { output: string }[]; metrics: Record<string, unknown> }[]; datasets: { role: string; n: number }[] };
      expect(file.format).toBe('steerlab-sweep');
      expect(file.rows.map((r) => r.id)).toEqual(['base', 'was_a2_add_Lall_last', 'was_a8_add_Lall_last', 'uniform_a2_add_Lall_last', 'uniform_a8_add_Lall_last']);
      expect(file.datasets.map((d) => [d.role, d.n])).toEqual([['harmful', 2], ['wrapped', 2], ['benign', 2]]);
      for (const r of file.rows) expect(r.samples.length, `sample replies of ${r.id}`).toBeGreaterThan(0);

      // Same settings again: the same sweep id, whose records IndexedDB already holds, and the same report. The form
      // folded away above the chart once the sweep was drawn.
      await page.locator('#panel-sweep summary', { hasText: 'Run a sweep here' }).click();
      await form.getByRole('button', { name: 'Run sweep' }).click();
      await idle(page);
      expect(await note.textContent()).toBe(first);
    });
  }, TEST_GUARD_MS);
});
