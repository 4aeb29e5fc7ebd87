/**
 * The lab's Direction tab in headless Chromium (WASM): difference in means with Arditi's selection (the CLI's
 * builder, run in the LLM worker) shows its progress, the chosen layer, a per-layer separation plot and a fitted
 * CAST condition, and becomes the active direction (CAST is then offered in the playground); the paper's embedding
 * direction comes from the unembedding matrix; the computed direction is saved and listed next to the shipped one
 * without replacing it; "Use" makes either the one the model starts with after a reload. A direction file made for
 * another model is refused by name, and let in with a warning when "allow a file made for another model" is ticked.
 * "Export llama.cpp GGUF" writes, value for value, the control vector `lab export-control-vector` writes for the
 * playground's manual settings and layer range, and refuses a mode llama.cpp cannot do.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runExportControlVector } from '../../src/cli/commands/export-control-vector.js';
import { decodeDirectionFile, encodeDirectionFile } from '../../src/core/steering/direction-file.js';
import { decodeGguf } from '../../src/core/steering/gguf.js';
import { PROJECT_ROOT } from './harness.js';
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
      // What a newcomer gets: the tab's own prompt counts (16 + 8) and the thresholds the default model presets, since
      // no candidate of the organism passes Arditi's (its refusal is one template; the exact ablation moves its
      // harmless replies by a KL of about 0.8).
      expect(await panel.getByLabel(/^KL threshold/).inputValue()).toBe('1');
      expect(await panel.getByLabel(/^Induced-refusal threshold/).inputValue()).toBe('-2');
      expect(await panel.getByTestId('selection-preset').textContent()).toMatch(/preset for Steerlab organism/);
      await panel.getByRole('button', { name: 'Compute direction' }).click();
      await panel.locator('.progress').waitFor({ timeout: GUARD_MS });
      await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: GUARD_MS });
      await idle(page);
      const note = (await panel.locator('p.note').textContent()) ?? '';
      expect(note).toMatch(/chose residual index \d \(the output of layer \d\), post-instruction position \d of \d/);
      expect(note).toMatch(/the lab still starts with the shipped direction/);
      // The step's words match its chart: the chosen layer is Arditi's selection, the plot's peak is named apart.
      expect(await panel.getByTestId('separation-note').textContent()).toMatch(/Chosen: residual index \d .*not the layer where the classes separate most.*Largest separation in the plot: residual index \d/s);
      const active = (await panel.locator('.card').first().textContent()) ?? '';
      expect(active).toMatch(/diff-in-means, layer \d/);
      expect(active).toMatch(/id diff-in-means:[0-9a-f]{16}/);
      expect(active).toMatch(/CAST condition: residual index \d, steer when similarity [≥≤]/);
      // The GGUF export says what a llama.cpp control vector cannot carry.
      expect(await panel.getByTestId('gguf-help').textContent()).toMatch(/clamp and\s+ablate modes have no llama\.cpp equivalent and are refused, and llama\.cpp steers every prompt position/);
      await shoot('direction');
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.getByRole('radio', { name: /CAST/ }).isEnabled(), 'CAST offered once its condition is fitted').toBe(true);

      // The paper's embedding direction, from the unembedding matrix of the graph (the organism's is untied).
      await page.getByRole('tab', { name: 'Direction' }).click();
      await panel.getByRole('button', { name: /Embedding direction only/ }).click();
      await expect.poll(() => page.locator('header').textContent(), { timeout: GUARD_MS }).toMatch(/direction: embedding/);
      expect(await panel.locator('.card').first().textContent()).toMatch(/id embedding:[0-9a-f]{16}/);
      expect(await panel.locator('.card').first().textContent()).toMatch(/unembedding/);

      // A direction the user makes is listed and saved, but never replaces what the model starts with: after a
      // reload the shipped direction is active again.
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="shipped with"]').first().textContent(), { timeout: GUARD_MS }).toMatch(/direction: diff-in-means/);
      // Picked in the list ("Use"), the saved one (with its CAST condition and separation plot) is what the model
      // starts with from then on.
      await page.getByRole('tab', { name: 'Direction' }).click();
      const list = page.getByTestId('direction-list');
      expect(await list.locator('tbody tr').count(), 'shipped, embedding and the saved one').toBe(3);
      await list.getByRole('button', { name: /^use diff-in-means/ }).click();
      await expect.poll(() => list.locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/diff-in-means .*active · starts with/);
      await idle(page);
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="saved"]').first().textContent(), { timeout: GUARD_MS }).toMatch(/direction: diff-in-means/);
      await page.getByRole('tab', { name: 'Direction' }).click();
      expect(await panel.locator('.card').first().textContent()).toMatch(/CAST condition: residual index \d/);
      await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: GUARD_MS });
      // The shipped direction is one click away, and stays chosen across a reload.
      await list.getByRole('button', { name: 'use shipped direction' }).click();
      await expect.poll(() => list.locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/shipped direction.*active · starts with/);
      await idle(page);
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header .pill[title^="shipped with"]').first().textContent(), { timeout: GUARD_MS }).toMatch(/direction: diff-in-means/);
      await shoot('direction-restored');
    });
  }, TEST_GUARD_MS);

  test("Export llama.cpp GGUF writes the control vector lab export-control-vector writes for the same settings", async () => {
    const weights = [0.9, 0.2, 0.4, 0.6, 0.8, 1];
    const files: Uint8Array[] = [];
    let alpha = '';
    let refusal = '';
    await withLab(fixture, 'lab-direction-gguf', async ({ page }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Playground' }).click();
      // the playground's manual settings: a scale, one weight per layer, layer 0 switched off (llama.cpp has none)
      await page.getByLabel('manual scale s').fill('3');
      for (const [l, w] of weights.entries()) await page.getByLabel(`weight of layer ${l} (number)`, { exact: true }).fill(String(w));
      await page.getByTestId('layer-toggle-0').uncheck();
      alpha = await page.getByLabel(/^alpha \(patch strength\)/).inputValue();
      const panel = page.locator('#panel-direction');
      const exportOnce = async (layers: string) => {
        await page.getByRole('tab', { name: 'Direction' }).click();
        const download = page.waitForEvent('download');
        await panel.getByRole('button', { name: 'Export llama.cpp GGUF' }).click();
        files.push(new Uint8Array(readFileSync(await (await download).path())));
        await expect.poll(() => panel.locator('p.note').textContent(), { timeout: GUARD_MS }).toBe(`GGUF control vector with layers ${layers}`);
        await page.getByRole('tab', { name: 'Playground' }).click();
      };
      await exportOnce('1, 2, 3, 4, 5');
      // the steering options' layer range goes into the file
      await page.getByTestId('play-ranged').check();
      const options = page.getByTestId('play-steering-options');
      await options.getByLabel('first steered layer').fill('2');
      await options.getByLabel('last steered layer').fill('4');
      await exportOnce('2, 3, 4');
      // a mode llama.cpp cannot do is refused, by name, and nothing is downloaded
      await page.getByTestId('play-mode').selectOption('clamp');
      await page.getByRole('tab', { name: 'Direction' }).click();
      await panel.getByRole('button', { name: 'Export llama.cpp GGUF' }).click();
      await expect.poll(() => panel.locator('p.alert').textContent(), { timeout: GUARD_MS }).toMatch(/only mode 'add' can be exported, got 'clamp'/);
      refusal = (await panel.locator('p.alert').textContent()) ?? '';
    });
    expect(files).toHaveLength(2);
    expect(refusal).toMatch(/llama\.cpp adds its vectors/);
    // The CLI on the same model, direction and numbers.
    const dir = mkdtempSync(join(tmpdir(), 'steerlab-lab-gguf-'));
    try {
      expect(Number(alpha)).toBeGreaterThan(0);
      const flags = {
        model: join(PROJECT_ROOT, 'models/organism'), policy: 'manual', direction: join(PROJECT_ROOT, 'models/organism/direction.safetensors'),
        alpha, scale: '3', layerWeights: weights.join(','), enabledLayers: '1,2,3,4,5',
      };
      for (const [i, extra] of [{}, { layerRange: '2-4' }].entries()) {
        const out = join(dir, `cli-${i}.gguf`);
        await runExportControlVector({ ...flags, ...extra, out });
        const [mine, cli] = [decodeGguf(files[i]!), decodeGguf(new Uint8Array(readFileSync(out)))];
        expect(mine.tensors.map((t) => t.name)).toEqual(i === 0 ? ['direction.1', 'direction.2', 'direction.3', 'direction.4', 'direction.5'] : ['direction.2', 'direction.3', 'direction.4']);
        expect(mine.tensors.map((t) => t.name)).toEqual(cli.tensors.map((t) => t.name));
        // every value bit for bit; the metadata too (the model hint comes from each side's model name)
        mine.tensors.forEach((t, k) => expect(Buffer.from(t.raw).equals(Buffer.from(cli.tensors[k]!.raw)), `${i}: ${t.name}`).toBe(true));
        expect(mine.metadata).toEqual(cli.metadata);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, TEST_GUARD_MS);

  test('a direction file made for another model is refused, and let in with a warning when allowed', async () => {
    // The shipped direction, stamped for another model of the same shape.
    const file = decodeDirectionFile(new Uint8Array(readFileSync(join(PROJECT_ROOT, 'models/organism/direction.safetensors'))));
    const foreign = Buffer.from(encodeDirectionFile({ ...file, metadata: { ...file.metadata, model_id: 'sha256:0123456789abcdef', model_name: 'another-model' } }));
    await withLab(fixture, 'lab-direction-other-model', async ({ page }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Direction' }).click();
      const panel = page.locator('#panel-direction');
      const input = panel.getByLabel(/^Import a direction file/);
      await input.setInputFiles({ name: 'foreign.safetensors', mimeType: 'application/octet-stream', buffer: foreign });
      await expect.poll(() => panel.locator('p.alert').textContent(), { timeout: GUARD_MS }).toMatch(/another model|made for/);
      const refusal = (await panel.locator('p.alert').textContent())!;
      expect(refusal).toContain('sha256:0123456789abcdef');
      await idle(page);
      expect(await panel.locator('.card').first().textContent(), 'the refused file is not active').not.toMatch(/foreign\.safetensors/);

      await panel.getByTestId('direction-allow-other').check();
      await input.setInputFiles({ name: 'foreign.safetensors', mimeType: 'application/octet-stream', buffer: foreign });
      await expect.poll(() => panel.locator('p.note').textContent(), { timeout: GUARD_MS }).toMatch(/imported foreign\.safetensors/);
      expect(await panel.locator('p.note').textContent(), 'the allowed file is warned about').toContain('sha256:0123456789abcdef');
      await idle(page);
      // Saved with the switch: "Use" on it later works without ticking it again.
      await panel.getByTestId('direction-allow-other').uncheck();
      const list = page.getByTestId('direction-list');
      await list.getByRole('button', { name: 'use shipped direction' }).click();
      await idle(page);
      await list.getByRole('button', { name: /^use foreign\.safetensors/ }).click();
      await expect.poll(() => list.locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/foreign\.safetensors/);
      expect(await panel.locator('p.alert').count()).toBe(0);
    });
  }, TEST_GUARD_MS);
});
