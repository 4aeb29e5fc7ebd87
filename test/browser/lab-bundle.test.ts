/**
 * Export then import round-trips everything the lab uses (headless Chromium, WASM): a diff-in-means direction (its
 * CAST condition, separation plot, and the raw per-layer vectors and layer ActAdd needs), a controller, an
 * evaluation run with its run.json (as `lab eval --out DIR` writes it) and records. The .tar is read back in Node
 * (the files a user and the CLI see), and the CLI resumes the exported run from its folder (`lab eval --out DIR` with
 * the same settings finds every record done); then the bundle is imported into a fresh browser profile, where every
 * piece comes back; a start choice the importing browser made itself is kept, not replaced by the bundle's.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTar } from 'nanotar';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeDirectionFile } from '../../src/core/steering/direction-file.js';
import { decodeController } from '../../src/core/controller/format.js';
import { parseRecordsJsonl } from '../../src/core/eval/summary.js';
import { runEvalCommand } from '../../src/cli/commands/eval.js';
import { PROJECT_ROOT } from './harness.js';
import { GUARD_MS, TEST_GUARD_MS, computeSmallDirection, idle, labFixture, loadDefaultModel, runEnded, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
let tmp: string;
beforeAll(async () => {
  fixture = await labFixture();
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-bundle-'));
});
afterAll(async () => {
  await fixture?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('lab: export everything, import it elsewhere', () => {
  test('direction (CAST, plot, ActAdd inputs), controller and an evaluation run survive export and import', async () => {
    const bundle = join(tmp, 'bundle.tar');
    let summaryBefore: string[] = [];
    await withLab(fixture, 'lab-bundle-export', async ({ page }) => {
      await loadDefaultModel(page);
      // A diff-in-means direction: active and saved, with its CAST condition and separation plot.
      await computeSmallDirection(page);
      // ... and the one this browser starts with (the bundle carries that choice).
      await page.getByTestId('direction-list').getByRole('button', { name: /^use diff-in-means/ }).click();
      await expect.poll(() => page.getByTestId('direction-list').locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/diff-in-means .*starts with/);
      await idle(page);
      // A controller, imported from a file (the shipped one): saved in this browser.
      await page.getByRole('tab', { name: 'Controller' }).click();
      await page.locator('#panel-controller input[type="file"]').setInputFiles(join(PROJECT_ROOT, 'models/organism/controller.safetensors'));
      await expect.poll(() => page.getByTestId('controller-list').locator('tbody tr').count(), { timeout: GUARD_MS }).toBe(3);
      await idle(page);
      // An evaluation run with the direction's ActAdd and CAST conditions.
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      const ev = page.locator('#panel-eval');
      await ev.getByLabel('N per dataset').fill('2');
      await ev.getByLabel('New tokens').fill('4');
      await ev.getByRole('checkbox', { name: /ActAdd/ }).check();
      await ev.getByRole('button', { name: 'Run evaluation' }).click();
      expect(await runEnded(ev, 2), (await ev.locator('p.alert').allTextContents()).join('; ')).toBe('done');
      await idle(page);
      summaryBefore = await page.getByTestId('eval-summary').locator('tbody tr').allTextContents();

      await page.getByRole('tab', { name: 'Model' }).click();
      const download = page.waitForEvent('download');
      await page.getByRole('button', { name: 'Export everything (.tar)' }).click();
      await (await download).saveAs(bundle);
      expect(await page.getByTestId('bundle-message').textContent()).toMatch(/exported 1 directions, 1 controllers and 1 evaluation runs/);
    });

    // The files, as a user or the CLI reads them.
    const files = new Map(parseTar(new Uint8Array(readFileSync(bundle))).map((f) => [f.name, f.data!]));
    const manifest = JSON.parse(new TextDecoder().decode(files.get('steerlab-bundle.json'))) as {
      format: string; directions: { file: string; extra: { cast: unknown; separation: unknown[] } }[]; controllers: { file: string }[];
      runs: { dir: string; has_run_json: boolean }[]; start_with: { direction: { source: string } | null };
    };
    expect(manifest.format).toBe('steerlab-lab-bundle');
    expect(manifest.start_with.direction, "the exporting browser's start choice").toMatchObject({ source: 'saved' });
    const direction = decodeDirectionFile(files.get(manifest.directions[0]!.file)!);
    expect(direction.metadata.method).toBe('diff-in-means');
    expect(direction.metadata.layer, 'ActAdd: the chosen layer').toBeTypeOf('number');
    expect(direction.rawDirection ?? direction.directions, 'ActAdd: the raw vector(s)').toBeDefined();
    expect(manifest.directions[0]!.extra.cast, 'the CAST condition').toMatchObject({ layer: expect.any(Number), threshold: expect.any(Number) });
    expect(manifest.directions[0]!.extra.separation.length, 'the separation plot').toBeGreaterThan(0);
    expect(decodeController(files.get(manifest.controllers[0]!.file)!).metadata.input_layers.length).toBeGreaterThan(0);
    const run = manifest.runs[0]!;
    expect(run.has_run_json).toBe(true);
    const runJson = JSON.parse(new TextDecoder().decode(files.get(`${run.dir}/run.json`))) as Record<string, unknown>;
    expect(runJson).toMatchObject({ format: 'steerlab-eval-run', version: 1, conditions: ['base', 'was', 'actadd'], judge: 'arditi-keywords', max_new_tokens: 4 });
    expect(runJson.direction_id).toMatch(/^diff-in-means:[0-9a-f]{16}$/);
    expect(parseRecordsJsonl(new TextDecoder().decode(files.get(`${run.dir}/records.jsonl`)))).toHaveLength(2 * 2 * 3);
    for (const f of ['summary.json', 'summary.csv', 'summary.md']) expect(files.has(`${run.dir}/${f}`), f).toBe(true);

    // The CLI resumes the lab's run from the exported folder: the same settings (the Evaluation tab's defaults, N 2,
    // 4 tokens, base + WAS + ActAdd, the exported direction and controller) pass its resume checks against run.json,
    // and every record is found done, so nothing is decoded again and nothing is lost.
    const out = join(tmp, 'cli-resume');
    mkdirSync(out);
    for (const f of ['run.json', 'records.jsonl']) writeFileSync(join(out, f), files.get(`${run.dir}/${f}`)!);
    const directionFile = join(tmp, 'direction.safetensors');
    const controllerFile = join(tmp, 'controller.safetensors');
    writeFileSync(directionFile, files.get(manifest.directions[0]!.file)!);
    writeFileSync(controllerFile, files.get(manifest.controllers[0]!.file)!);
    const resumed = await runEvalCommand({
      model: join(PROJECT_ROOT, 'models/organism'), dataset: ['toxicchat-test-toxic', 'toxicchat-test-nontoxic'], n: '2', seed: '0',
      conditions: 'base,was,actadd', direction: directionFile, controller: controllerFile, maxNewTokens: '4', judge: 'arditi-keywords', out,
    }, false);
    expect(resumed).toMatchObject({ total: 12, written: 0, skipped: 12, failed: 0 });
    expect(parseRecordsJsonl(readFileSync(join(out, 'records.jsonl'), 'utf8'))).toHaveLength(12);

    // A fresh browser profile: nothing saved until the bundle is imported; then everything is back.
    await withLab(fixture, 'lab-bundle-import', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      // This browser has chosen its start direction itself (the embedding direction): the bundle's choice does not
      // replace it.
      await page.getByRole('tab', { name: 'Direction' }).click();
      await page.getByTestId('direction-list').getByRole('button', { name: 'use embedding direction' }).click();
      await expect.poll(() => page.getByTestId('direction-list').locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/embedding direction.*starts with/);
      await idle(page);
      await page.getByRole('tab', { name: 'Model' }).click();
      await page.getByTestId('bundle-import').setInputFiles(bundle);
      await expect.poll(() => page.getByTestId('bundle-message').textContent(), { timeout: GUARD_MS }).toMatch(/imported 1 directions, 1 controllers and 1 evaluation runs/);
      expect(await page.getByTestId('bundle-message').textContent()).toMatch(/this browser keeps its own start choice for the direction/);
      await page.reload();
      await loadDefaultModel(page);
      await expect.poll(() => page.locator('header').textContent(), { timeout: GUARD_MS }).toMatch(/direction: embedding/);
      await page.getByRole('tab', { name: 'Direction' }).click();
      const list = page.getByTestId('direction-list');
      await list.getByRole('button', { name: /^use diff-in-means/ }).click();
      await expect.poll(() => list.locator('tr.active').textContent(), { timeout: GUARD_MS }).toMatch(/diff-in-means/);
      await idle(page);
      const card = (await page.locator('#panel-direction .card').first().textContent()) ?? '';
      expect(card).toMatch(/CAST condition: residual index \d/);
      await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: GUARD_MS });
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.getByRole('radio', { name: /ActAdd/ }).isEnabled(), 'ActAdd has what it needs').toBe(true);
      expect(await page.getByRole('radio', { name: /CAST/ }).isEnabled(), 'CAST has its condition').toBe(true);
      await page.getByRole('tab', { name: 'Controller' }).click();
      expect(await page.getByTestId('controller-list').locator('tbody tr').count(), 'shipped, none and the imported one').toBe(3);
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await page.locator('#panel-eval ul.runs button.link').first().click();
      await expect.poll(() => page.getByTestId('eval-summary').locator('tbody tr').allTextContents(), { timeout: GUARD_MS }).toEqual(summaryBefore);
      await shoot('imported');
    });
  }, TEST_GUARD_MS);
});
