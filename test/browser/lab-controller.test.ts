/**
 * The lab's Controller tab in headless Chromium (WASM): the LLM worker reads the training rows (the activations
 * `lab train-controller` caches), the controller worker trains on them with TensorFlow.js (live loss, held-out
 * accuracy), the LLM worker checks and uses the result (WAS predicts with it in the playground), and the trained
 * controller, recorded with the model's id and the active direction's content id, comes back after a reload.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GUARD_MS, TEST_GUARD_MS, idle, labFixture, loadDefaultModel, trainSmallController, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture();
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: Controller tab', () => {
  test('train a small controller, use it; the shipped one stays the start until the trained one is picked', async () => {
    await withLab(fixture, 'lab-controller', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      // A small, fast run (paper recipe, tiny width).
      await trainSmallController(page);
      const ctl = page.locator('#panel-controller');
      expect(await page.getByTestId('controller-message').textContent()).toMatch(/held-out accuracy \d/);
      const active = (await ctl.getByTestId('controller-active').textContent()) ?? '';
      expect(active).toMatch(/input layers 4, 5; hidden width 64/);
      expect(active).toMatch(/direction diff-in-means:[0-9a-f]{16}/);
      await expect.poll(() => ctl.locator('svg').count()).toBeGreaterThan(0);
      await shoot('controller');

      // WAS predicts with it: the playground shows s after a run.
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.getByRole('radio', { name: /WAS/ }).isChecked()).toBe(true);
      await page.locator('#panel-playground').getByLabel('New tokens').fill('4');
      await page.getByRole('button', { name: 'Generate base + steered' }).click();
      await idle(page);
      expect(await page.getByTestId('scale').textContent()).toMatch(/s = -?\d/);

      // Saved in IndexedDB and listed, but the model still starts with its shipped controller after a reload...
      expect(await page.getByTestId('controller-message').textContent()).toMatch(/the lab still starts with the shipped controller/);
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="shipped with"]').allTextContents(), { timeout: GUARD_MS }).toContain('controller: loaded');
      // ...until the user picks the trained one in the list: then it comes back after a reload.
      await page.getByRole('tab', { name: 'Controller' }).click();
      const list = page.getByTestId('controller-list');
      await list.getByRole('button', { name: /^use controller / }).click();
      await expect.poll(() => list.locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/active · starts with/);
      await idle(page);
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="saved"]').allTextContents(), { timeout: GUARD_MS }).toContain('controller: loaded');
      await page.getByRole('tab', { name: 'Controller' }).click();
      expect(await ctl.getByTestId('controller-active').textContent()).toMatch(/hidden width 64/);
    });
  }, TEST_GUARD_MS);
});
