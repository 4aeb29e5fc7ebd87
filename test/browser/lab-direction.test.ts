/**
 * The lab's Direction tab in headless Chromium (WASM): difference in means with Arditi's selection (the CLI's
 * builder, run in the LLM worker) shows its progress, the chosen layer, a per-layer separation plot and a fitted
 * CAST condition, and becomes the active direction (CAST is then offered in the playground); the paper's embedding
 * direction comes from the unembedding matrix; the computed direction is saved and comes back after a reload.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GUARD_MS, TEST_GUARD_MS, idle, labFixture, loadDefaultModel, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture();
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: Direction tab', () => {
  test('diff-in-means with plot and CAST, the embedding direction, saved across a reload', async () => {
    await withLab(fixture, 'lab-direction', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.getByRole('radio', { name: /CAST/ }).isDisabled(), 'no CAST condition before one is fitted').toBe(true);

      await page.getByRole('tab', { name: 'Direction' }).click();
      const panel = page.locator('#panel-direction');
      await panel.getByLabel('Training prompts per class').fill('6');
      await panel.getByLabel(/^Validation prompts per class/).fill('4');
      // Exact ablation (the projection input): with 6 + 4 prompts the organism's best candidate has an ablation KL of
      // 2.1 on harmless prompts, above Arditi's 0.1.
      await panel.getByLabel(/^KL threshold/).fill('3');
      await panel.getByRole('button', { name: 'Compute direction' }).click();
      await panel.locator('.progress').waitFor({ timeout: GUARD_MS });
      await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: GUARD_MS });
      await idle(page);
      const note = (await panel.locator('p.note').textContent()) ?? '';
      expect(note).toMatch(/chose residual index \d \(the output of layer \d\), post-instruction position \d of \d/);
      const active = (await panel.locator('.card').first().textContent()) ?? '';
      expect(active).toMatch(/diff-in-means, layer \d/);
      expect(active).toMatch(/id diff-in-means:[0-9a-f]{16}/);
      expect(active).toMatch(/CAST condition: residual index \d, steer when similarity [≥≤]/);
      await shoot('direction');
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.getByRole('radio', { name: /CAST/ }).isEnabled(), 'CAST offered once its condition is fitted').toBe(true);

      // The paper's embedding direction, from the unembedding matrix of the graph (the organism's is untied).
      await page.getByRole('tab', { name: 'Direction' }).click();
      await panel.getByRole('button', { name: /Embedding direction only/ }).click();
      await expect.poll(() => page.locator('header').textContent(), { timeout: GUARD_MS }).toMatch(/direction: embedding/);
      expect(await panel.locator('.card').first().textContent()).toMatch(/id embedding:[0-9a-f]{16}/);
      expect(await panel.locator('.card').first().textContent()).toMatch(/unembedding/);

      // The saved diff-in-means direction (with its CAST condition) is restored with the model after a reload.
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="saved"]').first().textContent(), { timeout: GUARD_MS }).toMatch(/direction: diff-in-means/);
      await page.getByRole('tab', { name: 'Direction' }).click();
      expect(await panel.locator('.card').first().textContent()).toMatch(/CAST condition: residual index \d/);
      await shoot('direction-restored');
    });
  }, TEST_GUARD_MS);
});
