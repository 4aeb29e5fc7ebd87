/**
 * The playground's steering options reach the core through the protocol: on the shipped organism (WAS, greedy),
 * ablate gives another steered reply than add, and the reply box says which settings ran (the worker's settings, with
 * the CLI's flag names); the layer range zeroes the rows outside it; the special-token toggle makes "<|im_end|>" in
 * the user's text a real token and the reply box says so (text by default); relative alpha scales each layer's row
 * by its own mean residual norm.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GUARD_MS, TEST_GUARD_MS, generateInPlayground, labFixture, loadDefaultModel, norms, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture();
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: steering mode, layer range, positions, special tokens', () => {
  test('ablate changes the steered reply vs add and the reply box says so; layer range; special tokens; relative alpha', async () => {
    await withLab(fixture, 'lab-steering-modes', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      const prompt = 'How do I make a pipe bomb at home?';
      await generateInPlayground(page, prompt, 16);
      const settings = page.getByTestId('steered-settings');
      expect(await settings.textContent()).toMatch(/--mode add · --layer-range all · positions: last prompt token \+ new tokens · --alpha-scale absolute · special tokens: text/);
      const added = await page.getByTestId('steered-output').textContent();

      await page.getByTestId('play-mode').selectOption('ablate');
      await generateInPlayground(page, prompt, 16);
      expect(await settings.textContent()).toMatch(/--mode ablate/);
      const ablated = await page.getByTestId('steered-output').textContent();
      expect(ablated, 'ablating the direction gives another reply than adding it').not.toBe(added);
      await shoot('ablate');

      // Layer range 2-3: the rows outside are zero in the matrix the worker computes for the next run.
      await page.getByTestId('play-mode').selectOption('add');
      await page.getByTestId('play-ranged').check();
      const play = page.locator('#panel-playground');
      await play.getByLabel('first steered layer').fill('2');
      await play.getByLabel('last steered layer').fill('3');
      await expect.poll(() => norms(page).then((n) => n.map((v) => v > 0)), { timeout: GUARD_MS }).toEqual([false, false, true, true, false, false]);
      await page.getByTestId('play-ranged').uncheck();

      // Special tokens: text by default; opted in, the string becomes the model's token and the box says so.
      const special = 'Say hi<|im_end|>';
      await generateInPlayground(page, special, 4);
      expect(await settings.textContent()).toMatch(/special tokens: text \(prompt holds <\|im_end\|>\)/);
      await page.getByTestId('play-special-tokens').check();
      await generateInPlayground(page, special, 4);
      expect(await settings.textContent()).toMatch(/special tokens: allowed \(strings became tokens\) \(prompt holds <\|im_end\|>\)/);
      await page.getByTestId('play-special-tokens').uncheck();

      // Relative alpha: each layer's row is scaled by that layer's mean residual norm (measured on 4 calibration
      // prompts by the worker), so the row norms stop being proportional to the absolute ones, and the box says so.
      await generateInPlayground(page, prompt, 4);
      const absolute = await norms(page);
      await page.getByTestId('play-alpha-scale').selectOption('relative');
      await play.getByLabel(/^calibration prompts/).fill('4');
      await generateInPlayground(page, prompt, 4);
      expect(await settings.textContent()).toMatch(/--alpha-scale relative \(norms of harmless-train, n=4\)/);
      // the preview asks the worker again after the run, which now holds the measured norms
      await expect.poll(() => norms(page).then((n) => n.length === absolute.length && n.join() !== absolute.join()), { timeout: GUARD_MS }).toBe(true);
      const relative = await norms(page);
      const ratios = relative.map((v, l) => v / absolute[l]!).filter((r) => Number.isFinite(r));
      expect(ratios.length, 'every layer steered').toBe(absolute.length);
      expect(Math.max(...ratios) / Math.min(...ratios), `per-layer ratios ${ratios.map((r) => r.toFixed(2)).join(', ')}`).toBeGreaterThan(1.05);
      await shoot('relative-alpha');
    });
  }, TEST_GUARD_MS);
});
