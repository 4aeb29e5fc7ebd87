/**
 * The lab's Model tab in headless Chromium (WASM): keyboard tabs, a model that cannot be patched is refused with the
 * reason while the lab stays usable, and the default model (the shipped organism) loads, passes the patch
 * self-check and comes with its shipped direction and controller, whose alpha the playground starts from. The
 * first-steps guide greets a fresh profile, stays dismissed across a reload and reopens from the header.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeController } from '../../src/core/controller/format.js';
import { PROJECT_ROOT } from './harness.js';
import { GUARD_MS, TEST_GUARD_MS, labFixture, loadDefaultModel, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture({ broken: true });
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: Model tab', () => {
  test('tabs, a model that cannot be patched, the default model with its shipped artefacts', async () => {
    await withLab(fixture, 'lab-model', async ({ page, shoot }) => {
      // Tabs follow the WAI-ARIA pattern: arrow keys move the selection and the focus.
      await page.getByRole('tab', { name: 'Model' }).focus();
      await page.keyboard.press('ArrowRight');
      expect(await page.getByRole('tab', { name: 'Playground' }).getAttribute('aria-selected')).toBe('true');
      expect(await page.evaluate(() => document.activeElement?.id)).toBe('tab-playground');
      await page.keyboard.press('ArrowLeft');
      expect(await page.getByRole('tab', { name: 'Model' }).getAttribute('aria-selected')).toBe('true');

      // The lab loads its default model by itself once the device probe answers. Let that finish first: a click on
      // "Load model" that lands just as that load starts hits a button that has turned disabled, and is lost.
      await loadDefaultModel(page);

      // A model that cannot be patched says why, and the lab stays usable.
      await page.locator('#model-select').selectOption('__custom__');
      await page.getByLabel(/served by this lab/).check();
      await page.getByLabel('Folder under /models/').fill('broken-test');
      await page.locator('#dtype-select').selectOption('fp32');
      await page.getByRole('button', { name: 'Load model' }).click();
      await page.getByTestId('load-error').waitFor({ timeout: GUARD_MS });
      expect(await page.getByTestId('load-error').textContent()).toMatch(/steerable|layers/);
      await shoot('model-load-error');

      // A local model whose files are not there is reported as missing files, naming the file (not as invalid JSON).
      await page.getByLabel('Folder under /models/').fill('no-such-model');
      await page.getByRole('button', { name: 'Load model' }).click();
      await expect.poll(() => page.getByTestId('load-error').textContent(), { timeout: GUARD_MS }).toMatch(/the model's files are missing: \/models\/no-such-model\/config\.json is not served/);
      expect(await page.getByTestId('load-error').textContent()).not.toMatch(/JSON|WebGPU/);

      // The Model tab explains the device Auto picks (no WebGPU adapter in this browser: WASM), and how many threads
      // WASM runs: every logical core up to 4 (the harness serves the lab cross-origin isolated).
      expect(await page.getByTestId('device-why').textContent()).toMatch(/^Auto uses WASM/);
      const cores = await page.evaluate(() => navigator.hardwareConcurrency);
      const threads = Math.min(4, cores);
      expect(await page.getByTestId('wasm-threads').textContent()).toBe(`; WASM runs ${threads} thread${threads === 1 ? '' : 's'}`);

      await loadDefaultModel(page);
      await expect.poll(() => page.getByTestId('self-check').textContent()).toMatch(/passed/);
      expect(await page.getByTestId('model-device').textContent()).toMatch(/wasm/);
      // The default model comes with its shipped direction and controller (models/organism/*.safetensors), checked
      // against the loaded model by the LLM worker.
      await expect.poll(() => page.locator('header').textContent()).toMatch(/direction: diff-in-means.*controller: loaded/);
      expect(await page.locator('header .pill[title^="shipped with"]').count()).toBe(2);
      // The playground starts from the alpha the shipped controller was calibrated with.
      const shipped = decodeController(new Uint8Array(readFileSync(join(PROJECT_ROOT, 'models/organism/controller.safetensors'))));
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.locator('#panel-playground label.alpha output').textContent()).toBe(shipped.metadata.alpha.toFixed(1));
      await page.getByRole('tab', { name: 'Model' }).click();
      await shoot('model');

      // The first-steps guide: shown to a newcomer; dismissed, it stays closed across a reload; "Guide" reopens it.
      const guide = page.getByTestId('first-steps');
      expect(await guide.isVisible(), 'the guide greets a fresh profile').toBe(true);
      await page.getByTestId('guide-dismiss').click();
      await expect.poll(() => guide.count()).toBe(0);
      await page.reload();
      await page.getByTestId('guide-open').waitFor({ timeout: GUARD_MS });
      expect(await guide.count(), 'still dismissed after a reload').toBe(0);
      await page.getByTestId('guide-open').click();
      await expect.poll(() => guide.isVisible()).toBe(true);
    });
  }, TEST_GUARD_MS);
});
