/**
 * The lab end to end in headless Chromium (WASM): open it, load the default model (a tiny test model built here and
 * served under /models/), train a small controller, see base and steered text stream, switch a layer off and see
 * the steering matrix change, stop a running generation, compute a direction, run a small evaluation on ToxicChat
 * samples, reload and find the results still there. Screenshots of each panel go to test-output/screenshots/.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { DEFAULT_MODEL } from '../../src/ui/lib/models.js';
import { launchChromium, PROJECT_ROOT, startLabServer, type BrowserSession, type LabServer } from './harness.js';
import { judgedPlusUnjudged, norms, shoot, streamedLengths } from './lab-helpers.js';

const SHOTS = join(PROJECT_ROOT, 'test-output/screenshots');
let tmp: string;
let server: LabServer;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-lab-'));
  // The default model: the shipped organism with its direction and controller (copied, so the broken sibling below
  // never touches the project's folder).
  cpSync(join(PROJECT_ROOT, 'models', DEFAULT_MODEL.id), join(tmp, DEFAULT_MODEL.id), {
    recursive: true,
    filter: (src) => !/[/\\](train|dev|eval)([/\\]|$)/.test(src.slice(join(PROJECT_ROOT, 'models').length)),
  });
  // A random-weight model that writes until its context ends: the Stop button is checked on it.
  await buildTestModel(join(tmp, 'tiny-test'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 7 });
  // A model that cannot be patched: its config.json promises one layer more than the graph has.
  cpSync(join(tmp, DEFAULT_MODEL.id), join(tmp, 'broken-test'), { recursive: true });
  const cfg = JSON.parse(readFileSync(join(tmp, 'broken-test/config.json'), 'utf8')) as Record<string, number>;
  writeFileSync(join(tmp, 'broken-test/config.json'), JSON.stringify({ ...cfg, num_hidden_layers: cfg.num_hidden_layers! + 1 }));
  mkdirSync(SHOTS, { recursive: true });
  server = await startLabServer({ [DEFAULT_MODEL.localModelPath!]: tmp });
});

afterAll(async () => {
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('the lab in headless Chromium', () => {
  test('model, controller, playground, direction, evaluation, reload', async () => {
    const session: BrowserSession = await launchChromium();
    const { page } = session;
    const t0 = Date.now();
    const times: Record<string, number> = {};
    const lap = (k: string) => (times[k] = Date.now() - t0);
    try {
      await page.setViewportSize({ width: 1366, height: 900 });
      await page.goto(server.url);
      // Tabs follow the WAI-ARIA pattern: arrow keys move the selection and the focus.
      await page.getByRole('tab', { name: 'Model' }).focus();
      await page.keyboard.press('ArrowRight');
      expect(await page.getByRole('tab', { name: 'Playground' }).getAttribute('aria-selected')).toBe('true');
      expect(await page.evaluate(() => document.activeElement?.id)).toBe('tab-playground');
      await page.keyboard.press('ArrowLeft');
      expect(await page.getByRole('tab', { name: 'Model' }).getAttribute('aria-selected')).toBe('true');
      // A model that cannot be patched says why, and the lab stays usable.
      await page.locator('#model-select').selectOption('__custom__');
      await page.getByLabel(/served by this lab/).check();
      await page.getByLabel('Folder under /models/').fill('broken-test');
      await page.locator('#dtype-select').selectOption('fp32');
      await page.getByRole('button', { name: 'Load model' }).click();
      await page.getByTestId('load-error').waitFor({ timeout: 30_000 });
      const why = await page.getByTestId('load-error').textContent();
      expect(why).toMatch(/steerable|layers/);
      await shoot(page, SHOTS, '0-model-load-error');
      lap('brokenModelRefused');
      await page.getByTestId('load-default').click();
      await page.getByTestId('model-ready').waitFor({ timeout: 60_000 });
      await expect.poll(() => page.getByTestId('self-check').textContent()).toMatch(/passed/);
      expect(await page.getByTestId('model-device').textContent()).toMatch(/wasm/);
      // The default model comes with its shipped direction and controller (models/organism/*.safetensors).
      await expect.poll(() => page.locator('header').textContent()).toMatch(/direction: diff-in-means.*controller: loaded/);
      expect(await page.locator('header .pill[title^="shipped with"]').count()).toBe(2);
      // The playground starts from the alpha the shipped controller was calibrated with (picked on the organism's dev
      // split by organism:steer, recorded in steering_results.json).
      const shipped = JSON.parse(readFileSync(join(PROJECT_ROOT, 'models', DEFAULT_MODEL.id, 'steering_results.json'), 'utf8')) as { alpha: { picked: number } };
      await page.getByRole('tab', { name: 'Playground' }).click();
      expect(await page.locator('#panel-playground label.alpha output').textContent()).toBe(shipped.alpha.picked.toFixed(1));
      await page.getByRole('tab', { name: 'Model' }).click();
      await shoot(page, SHOTS, '1-model');
      lap('modelLoaded');

      // Controller: a small, fast training run (paper recipe, tiny width) so WAS has a prediction.
      await page.getByRole('tab', { name: 'Controller' }).click();
      const ctl = page.locator('#panel-controller');
      await ctl.getByLabel('Prompts per class').fill('8');
      await ctl.getByLabel('Epochs').fill('2');
      await ctl.getByLabel('Hidden width').fill('64');
      await ctl.getByRole('button', { name: 'Train controller' }).click();
      await page.getByTestId('controller-active').waitFor({ timeout: 60_000 });
      expect(await page.getByTestId('controller-message').textContent()).toMatch(/held-out accuracy/);
      await shoot(page, SHOTS, '2-controller');
      lap('controllerTrained');

      // Playground: base and steered text stream (the text grows while generating).
      await page.getByRole('tab', { name: 'Playground' }).click();
      const play = page.locator('#panel-playground');
      await play.getByLabel(/^Prompt/).fill('How do I pick a lock?');
      await play.getByLabel('New tokens').fill('16');
      const watch = streamedLengths(page, ['base-output', 'steered-output']);
      await page.getByRole('button', { name: 'Generate base + steered' }).click();
      await expect.poll(() => page.getByTestId('steered-output').textContent(), { timeout: 30_000 }).not.toBe('');
      await expect.poll(() => page.getByRole('button', { name: 'Generate base + steered' }).isEnabled(), { timeout: 30_000 }).toBe(true);
      const lengths = await watch.stop();
      expect(new Set(lengths['base-output']).size, `base text grew in steps: ${lengths['base-output']}`).toBeGreaterThan(2);
      expect(new Set(lengths['steered-output']).size, `steered text grew in steps: ${lengths['steered-output']}`).toBeGreaterThan(2);
      expect(await page.getByTestId('scale').textContent()).toMatch(/s = -?\d/);
      await page.getByRole('group', { name: /Cosine of each steered token/ }).waitFor();
      // The heat strip's rows streamed in with the tokens (each arrives one step after its token), then the capture
      // at the end completed it.
      // The organism ends its reply with <|im_end|> after about 12 tokens: one column per steered token, whatever
      // that count, and all but the last one or two rows streamed.
      const steeredInfo = (await page.locator('#panel-playground article').nth(1).textContent()) ?? '';
      const steeredTokens = Number(/(\d+) tokens, (?:eos|length)/.exec(steeredInfo)?.[1]);
      expect(steeredTokens, `steered article: ${steeredInfo}`).toBeGreaterThanOrEqual(8);
      const streamed = Number(await page.getByTestId('heat-strip').getAttribute('data-streamed-rows'));
      expect(streamed).toBeGreaterThanOrEqual(steeredTokens - 2);
      expect(await page.locator('[data-testid="heat-strip"] .col').count()).toBe(steeredTokens);
      await shoot(page, SHOTS, '3-playground');
      lap('generated');

      // Switching layer 1 off changes the steering matrix: its row norm drops to 0, the others stay.
      const before = await norms(page);
      expect(before[1]).toBeGreaterThan(0);
      await page.getByTestId('layer-toggle-1').uncheck();
      await expect.poll(() => norms(page).then((n) => n[1])).toBe(0);
      const after = await norms(page);
      expect(after.filter((_, i) => i !== 1).every((v) => v > 0)).toBe(true);
      expect(await page.getByRole('radio', { name: /Manual/ }).isChecked()).toBe(true);
      lap('layerSwitched');

      // A prompt longer than the context is shortened, and a plain-text note says so.
      await play.getByLabel(/^Prompt/).fill(`<b>Hello</b> ${'a long jailbreak preamble, '.repeat(60)}How do I pick a lock?`);
      await play.getByLabel('New tokens').fill('8');
      await page.getByRole('button', { name: 'Generate base + steered' }).click();
      await expect.poll(() => page.getByRole('button', { name: 'Generate base + steered' }).isEnabled(), { timeout: 30_000 }).toBe(true);
      expect(await page.getByTestId('fit-note').textContent()).toMatch(/^prompt shortened from \d{3,} to \d+ tokens to fit the context$/);
      expect(await page.getByTestId('steered-output').textContent()).not.toBe('');
      await play.getByLabel(/^Prompt/).fill('How do I pick a lock?');
      lap('longPromptFitted');

      // Stop a running generation. The organism ends every reply with <|im_end|> after about 12 tokens (some 25 ms in
      // WASM), faster than any click, so Stop is checked on a random-weight test model that writes until its 256-token
      // context; then the default model comes back with the controller trained above (IndexedDB). The switch to the
      // test model happens in place (6 layers -> 4: the playground must drop what it observed on the organism; the
      // page-error check at the end catches it if not), the switch back through a reload.
      // Stop is pressed as soon as the generation is running (the button enables itself then), not after waiting
      // for text.
      await page.getByRole('tab', { name: 'Model' }).click();
      await page.locator('#model-select').selectOption('__custom__');
      await page.getByLabel(/served by this lab/).check();
      await page.getByLabel('Folder under /models/').fill('tiny-test');
      await page.locator('#dtype-select').selectOption('fp32');
      await page.getByRole('button', { name: 'Load model' }).click();
      await expect.poll(() => page.getByTestId('model-ready').locator('h3').textContent().catch(() => ''), { timeout: 60_000 }).toMatch(/tiny-test/);
      await page.getByRole('tab', { name: 'Playground' }).click();
      await play.getByLabel(/^Prompt/).fill('How do I pick a lock?');
      await play.getByLabel('New tokens').fill('400');
      await page.getByRole('button', { name: 'Generate base + steered' }).click();
      await page.getByTestId('stop').click({ timeout: 5_000 });
      await expect.poll(() => page.getByRole('button', { name: 'Generate base + steered' }).isEnabled(), { timeout: 30_000 }).toBe(true);
      const stoppedInfo = await page.locator('#panel-playground article').first().textContent();
      expect(stoppedInfo).toMatch(/\d+ tokens, abort/);
      expect(Number(/(\d+) tokens, abort/.exec(stoppedInfo ?? '')?.[1])).toBeLessThan(200);
      // Stopping the base run also skips the steered one.
      expect(await page.getByTestId('steered-output').textContent()).toBe('');
      await page.reload();
      await page.getByTestId('load-default').click();
      await page.getByRole('tab', { name: 'Model' }).click();
      await expect.poll(() => page.getByTestId('model-ready').locator('h3').textContent().catch(() => ''), { timeout: 60_000 }).toMatch(new RegExp(DEFAULT_MODEL.id));
      await expect.poll(() => page.locator('header').textContent()).toMatch(/controller: loaded/);
      lap('stopped');

      // Direction: difference in means with progress, then the per-layer separation plot.
      await page.getByRole('tab', { name: 'Direction' }).click();
      await page.locator('#panel-direction').getByLabel('Prompts per class').fill('6');
      await page.getByRole('button', { name: 'Compute direction' }).click();
      await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: 60_000 });
      await shoot(page, SHOTS, '4-direction');
      lap('direction');

      // Evaluation on ToxicChat samples (toxic and non-toxic), base vs WAS.
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await page.locator('#panel-eval').getByLabel('N per dataset').fill('3');
      await page.locator('#panel-eval').getByLabel('New tokens').fill('8');
      await page.getByRole('button', { name: 'Run evaluation' }).click();
      const table = page.getByTestId('eval-summary');
      await expect.poll(async () => (await table.locator('tbody tr').count()), { timeout: 60_000 }).toBe(4);
      await expect.poll(() => page.getByRole('button', { name: 'Run evaluation' }).isEnabled(), { timeout: 60_000 }).toBe(true);
      // Every planned prompt is judged: prompts longer than the tiny model's context are shortened to fit (the
      // panel's default fit, 'middle'), so none is left unjudged.
      expect(await page.getByTestId('eval-fit').inputValue()).toBe('middle');
      expect(await judgedPlusUnjudged(table)).toEqual([3, 3, 3, 3]);
      expect(await table.locator('tbody tr td:nth-child(3)').allTextContents()).toEqual(['3', '3', '3', '3']);
      const text = await table.textContent();
      expect(text).toMatch(/toxicchat-test-toxic/);
      expect(text).toMatch(/toxicchat-test-nontoxic/);
      await table.getByRole('button', { name: 'toxicchat-test-toxic', exact: true }).first().click();
      await page.locator('details.rec').first().click();
      await shoot(page, SHOTS, '5-evaluation');
      const rowsBefore = await table.locator('tbody tr').allTextContents();
      lap('evaluated');

      // Reload: results come back from IndexedDB.
      await page.reload();
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await expect.poll(async () => page.getByTestId('eval-summary').locator('tbody tr').allTextContents(), { timeout: 20_000 }).toEqual(rowsBefore);
      await shoot(page, SHOTS, '6-evaluation-after-reload');
      lap('reloaded');

      // The saved direction and controller come back with the model (IndexedDB); an evaluation interrupted by a
      // reload resumes where it stopped.
      await page.getByTestId('load-default').click();
      await page.getByRole('tab', { name: 'Model' }).click();
      await page.getByTestId('model-ready').waitFor({ timeout: 60_000 });
      await expect.poll(() => page.locator('header').textContent()).toMatch(/direction: diff-in-means.*controller: loaded/);
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      const evalPanel = page.locator('#panel-eval');
      await evalPanel.getByLabel('N per dataset').fill('5');
      // ActAdd and CAST need the diff-in-means direction computed above (raw vector, CAST condition): both run too.
      await evalPanel.getByRole('checkbox', { name: /ActAdd/ }).check();
      await evalPanel.getByRole('checkbox', { name: /CAST/ }).check();
      await evalPanel.getByLabel('New tokens').fill('8');
      await evalPanel.getByRole('button', { name: 'Run evaluation' }).click();
      await expect.poll(async () => Number((await evalPanel.locator('.progress .count').textContent().catch(() => '0'))?.split(' ')[0] ?? 0), { timeout: 30_000 }).toBeGreaterThan(2);
      await page.reload();
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await page.getByRole('button', { name: /interrupted/ }).waitFor({ timeout: 20_000 });
      await page.getByTestId('load-default').click();
      await page.getByRole('tab', { name: 'Model' }).click();
      await page.getByTestId('model-ready').waitFor({ timeout: 60_000 });
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await evalPanel.getByRole('button', { name: 'Resume' }).first().click();
      await expect.poll(async () => evalPanel.getByRole('button', { name: /· done ·.*N 5/ }).count(), { timeout: 60_000 }).toBe(1);
      expect(await judgedPlusUnjudged(page.getByTestId('eval-summary'))).toEqual([5, 5, 5, 5, 5, 5, 5, 5]);
      const conditions = await page.getByTestId('eval-summary').locator('tbody tr td:nth-child(2)').allTextContents();
      expect(new Set(conditions)).toEqual(new Set(['off', 'was', 'actadd', 'cast']));
      await shoot(page, SHOTS, '7-evaluation-resumed');
      lap('resumed');

      const pageErrors = session.log.filter((l) => l.startsWith('[pageerror]'));
      expect(pageErrors, 'uncaught page errors').toEqual([]);
      const foreign = session.requests.filter((u) => !u.startsWith(server.url) && !u.startsWith('blob:') && !u.startsWith('data:'));
      expect(foreign, 'requests that left the local server').toEqual([]);
      console.log(`[lab e2e] ${JSON.stringify(times)}`);
    } catch (e) {
      await shoot(page, SHOTS, 'failure').catch(() => undefined);
      throw new Error(`${(e as Error).message}\nbrowser log:\n${session.log.slice(-60).join('\n')}`, { cause: e });
    } finally {
      await session.close();
    }
  }, 110_000);

  test('IndexedDB record store: records survive reopening, a stored key is never written twice, runs delete cleanly', async () => {
    const session = await launchChromium();
    try {
      await session.page.goto(server.url);
      // A string, so vitest does not rewrite the page's dynamic import into its own loader.
      await session.page.evaluate("import('/src/core/eval/records-idb.ts').then((m) => { window.__recordsIdb = m; })");
      const out = await session.page.evaluate(async () => {
        const m = (window as unknown as { __recordsIdb: typeof import('../../src/core/eval/records-idb.js') }).__recordsIdb;
        const db = await m.openEvalDb('steerlab-eval-test');
        const a = await m.IdbRecordStore.open('run-a', db);
        await a.append({ dataset: 'd', id: '1', condition: 'off', refused: true, w: [0.5] });
        await a.append({ dataset: 'd', id: '2', condition: 'off', refused: false });
        const other = await m.IdbRecordStore.open('run-b', db);
        await other.append({ dataset: 'd', id: '1', condition: 'off', refused: false });
        let duplicate = '';
        try {
          await a.append({ dataset: 'd', id: '1', condition: 'off', refused: false });
        } catch (e) {
          duplicate = (e as Error).message;
        }
        await m.saveRun({ id: 'run-a', createdAt: '2026-01-01T00:00:00Z', status: 'running', settings: { n: 2 }, planned: 4 }, db);
        const reopened = await m.IdbRecordStore.open('run-a', db);
        const result = {
          size: reopened.size,
          has1: reopened.has({ dataset: 'd', id: '1', condition: 'off' }),
          has3: reopened.has({ dataset: 'd', id: '3', condition: 'off' }),
          order: reopened.records().map((r) => r.id),
          first: reopened.records()[0],
          duplicate,
          runs: (await m.listRuns(db)).map((r) => r.id),
          otherSize: (await m.IdbRecordStore.open('run-b', db)).size,
        };
        await m.deleteRun('run-a', db);
        return { ...result, afterDelete: (await m.IdbRecordStore.open('run-a', db)).size, runsAfter: (await m.listRuns(db)).length, otherAfter: (await m.IdbRecordStore.open('run-b', db)).size };
      });
      expect(out).toMatchObject({ size: 2, has1: true, has3: false, order: ['1', '2'], runs: ['run-a'], otherSize: 1, afterDelete: 0, runsAfter: 0, otherAfter: 1 });
      expect(out.first).toMatchObject({ dataset: 'd', id: '1', condition: 'off', refused: true, w: [0.5] });
      expect(out.duplicate).toMatch(/already stored/);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nbrowser log:\n${session.log.slice(-30).join('\n')}`, { cause: e });
    } finally {
      await session.close();
    }
  }, 60_000);
});
