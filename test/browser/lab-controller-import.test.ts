/**
 * The lab's Controller tab in headless Chromium (WASM): importing a controller file made for another model. The
 * shipped controller, stamped for another model of the same shape (so only the identity check can trip), is refused
 * by name while "allow a file made for another model" is unticked, and leaves the active controller as it was; ticked,
 * the same file is let in with a warning and becomes the active controller; saved with that choice, "Use" on it later
 * works without ticking the box again. No training: the file is built here.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Locator } from 'playwright-core';
import { decodeController, encodeController } from '../../src/core/controller/format.js';
import { PROJECT_ROOT } from './harness.js';
import { GUARD_MS, TEST_GUARD_MS, idle, labFixture, loadDefaultModel, withLab, type LabFixture } from './lab-helpers.js';

const OTHER_ID = 'sha256:0123456789abcdef';

/**
 * The text of what a locator matches now ('' when nothing does), without Playwright's wait for the element: a poll on
 * an element that never appears then fails at its own timeout instead of hanging on the page's default timeout.
 */
const text = (l: Locator): Promise<string> => l.allTextContents().then((t) => t.join('\n'));

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture();
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: Controller tab import', () => {
  test('a controller file made for another model is refused, and let in with a warning when allowed', async () => {
    // The shipped controller (its layers, width and weights fit the organism), stamped for another model.
    const shipped = decodeController(new Uint8Array(readFileSync(join(PROJECT_ROOT, 'models/organism/controller.safetensors'))));
    expect(shipped.metadata.model_id, 'the stamp differs from the model the file was made for').not.toBe(OTHER_ID);
    const foreign = Buffer.from(encodeController({ ...shipped, metadata: { ...shipped.metadata, model_id: OTHER_ID, model_name: 'another-model' } }));
    const pick = { name: 'foreign.safetensors', mimeType: 'application/octet-stream', buffer: foreign };

    await withLab(fixture, 'lab-controller-other-model', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Controller' }).click();
      const panel = page.locator('#panel-controller');
      const active = panel.getByTestId('controller-active').locator('h3');
      const list = page.getByTestId('controller-list');
      const allow = panel.getByTestId('controller-allow-other');
      await expect.poll(() => text(active), { timeout: GUARD_MS }).toBe('Active: shipped controller');
      expect(await allow.isChecked(), 'the box starts unticked').toBe(false);
      const input = panel.getByLabel(/^Import a controller file/);

      // Unticked: refused, naming both models; nothing changes and nothing is saved.
      await input.setInputFiles(pick);
      await expect.poll(() => text(panel.getByRole('alert')), { timeout: GUARD_MS }).toMatch(/was made for model/);
      const refusal = await text(panel.getByRole('alert'));
      expect(refusal).toContain('controller foreign.safetensors was made for model another-model (sha256:0123456789abcdef)');
      expect(refusal).toMatch(/but the loaded model is .*organism/i);
      expect(refusal).toMatch(/allow-other-model/);
      await idle(page);
      expect(await text(active), 'the refused file is not active').toBe('Active: shipped controller');
      expect(await panel.getByTestId('controller-message').count(), 'no success message for a refused file').toBe(0);
      expect(await list.getByRole('button', { name: 'use foreign.safetensors' }).count(), 'the refused file is not saved').toBe(0);
      await shoot('refused');

      // Ticked: the same file is let in, with a warning that names the other model, and is the active controller.
      await allow.check();
      await input.setInputFiles(pick);
      await expect.poll(() => text(panel.getByTestId('controller-message')), { timeout: GUARD_MS }).toMatch(/^imported foreign\.safetensors/);
      const note = await text(panel.getByTestId('controller-message'));
      expect(note, 'the allowed file is warned about').toContain('was made for model another-model (sha256:0123456789abcdef)');
      expect(note).toMatch(/accepted: allow other model/);
      expect(await panel.getByRole('alert').count(), 'no error once allowed').toBe(0);
      await idle(page);
      expect(await text(active)).toBe('Active: foreign.safetensors');
      expect(await text(panel.getByTestId('controller-active'))).toContain(`made for ${OTHER_ID}`);
      await expect.poll(() => text(list.locator('tr.active')), { timeout: GUARD_MS }).toMatch(/^foreign\.safetensors.*active/);
      await shoot('allowed');

      // Saved with the choice: with the box unticked again, "Use" on it still works.
      await allow.uncheck();
      await list.getByRole('button', { name: 'use shipped controller' }).click();
      await expect.poll(() => text(active), { timeout: GUARD_MS }).toBe('Active: shipped controller');
      await idle(page);
      await list.getByRole('button', { name: 'use foreign.safetensors' }).click();
      await expect.poll(() => text(list.locator('tr.active')), { timeout: GUARD_MS }).toMatch(/^foreign\.safetensors.*active · starts with/);
      await idle(page);
      expect(await text(active)).toBe('Active: foreign.safetensors');
      expect(await panel.getByRole('alert').count(), 'the saved file is used without a refusal').toBe(0);

      // Picked with "Use", it is what the model starts with after a reload (restored with the saved choice, not
      // refused and replaced by the shipped one).
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="saved"]').allTextContents(), { timeout: GUARD_MS }).toContain('controller: loaded');
      await page.getByRole('tab', { name: 'Controller' }).click();
      await expect.poll(() => text(active), { timeout: GUARD_MS }).toBe('Active: foreign.safetensors');
    });
  }, TEST_GUARD_MS);
});
