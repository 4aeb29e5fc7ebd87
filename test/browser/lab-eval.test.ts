/**
 * The lab's Evaluation tab in headless Chromium (WASM): a small run on ToxicChat samples (toxic and non-toxic), base
 * vs WAS, by the core eval runner in the LLM worker with its records in IndexedDB: the summary table, the drill-down,
 * results that survive a reload, and a run interrupted by a reload that resumes where it stopped. Also the
 * IndexedDB record store itself (records survive reopening, a stored key is never written twice).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { launchChromium } from './harness.js';
import { GUARD_MS, TEST_GUARD_MS, idle, judgedPlusUnjudged, labFixture, loadDefaultModel, runEnded, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;

beforeAll(async () => {
  fixture = await labFixture();
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: Evaluation tab', () => {
  test('a small run, its drill-down, results after a reload, an interrupted run resumed', async () => {
    await withLab(fixture, 'lab-eval', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      const panel = page.locator('#panel-eval');
      await panel.getByLabel('N per dataset').fill('3');
      await panel.getByLabel('New tokens').fill('8');
      await panel.getByRole('button', { name: 'Run evaluation' }).click();
      const table = page.getByTestId('eval-summary');
      expect(await runEnded(panel, 3), (await panel.locator('p.alert').allTextContents()).join('; ')).toBe('done');
      await idle(page);
      // Every planned prompt is judged: prompts longer than the model's context are shortened to fit (the panel's
      // default fit, 'middle'), so none is left unjudged.
      expect(await page.getByTestId('eval-fit').inputValue()).toBe('middle');
      expect(await table.locator('tbody tr td:nth-child(2)').allTextContents()).toEqual(['base', 'was', 'base', 'was']);
      expect(await judgedPlusUnjudged(table)).toEqual([3, 3, 3, 3]);
      expect(await table.locator('tbody tr td:nth-child(3)').allTextContents()).toEqual(['3', '3', '3', '3']);
      // Keyword and coherent rates side by side: two bars per (dataset, condition), each with its interval; a coherent
      // refusal is a keyword refusal that also reads well, so its rate never exceeds the keyword rate.
      const bars = panel.locator('svg[aria-label^="Keyword and coherent refusal rates"] rect title');
      const titles = await bars.allTextContents();
      expect(titles, 'two bars per summary row').toHaveLength(2 * 4);
      const rate = (t: string) => Number(/: (\d+\.\d) %/.exec(t)?.[1]);
      for (let i = 0; i < titles.length; i += 2) {
        expect(titles[i], 'keyword bar').toMatch(/^toxicchat-test-(toxic|nontoxic), (base|was), keyword (over-)?refusal: \d+\.\d % \(\d+\.\d % – \d+\.\d %\)$/);
        expect(titles[i + 1], 'coherent bar').toMatch(/, coherent (over-)?refusal: \d+\.\d % \(/);
        expect(rate(titles[i + 1]!), `coherent <= keyword: ${titles[i]} / ${titles[i + 1]}`).toBeLessThanOrEqual(rate(titles[i]!));
      }
      const text = await table.textContent();
      expect(text).toMatch(/toxicchat-test-toxic/);
      expect(text).toMatch(/toxicchat-test-nontoxic/);
      // Drill-down: the prompt (as text), the reply, the judge, s and w of the controller.
      await table.getByRole('button', { name: 'toxicchat-test-toxic', exact: true }).first().click();
      await panel.locator('details.rec').first().click();
      const rec = (await panel.locator('details.rec').first().textContent()) ?? '';
      expect(rec).toMatch(/prompt.+output.+judge/s);
      expect(rec, 'the controller\'s s and w in the record').toMatch(/s-?\d+\.\d{3}\s*w\d\.\d\d/);
      await shoot('evaluation');
      const rowsBefore = await table.locator('tbody tr').allTextContents();

      // Reload: results come back from IndexedDB.
      await page.reload();
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await expect.poll(async () => page.getByTestId('eval-summary').locator('tbody tr').allTextContents(), { timeout: GUARD_MS }).toEqual(rowsBefore);

      // An evaluation interrupted by a reload resumes where it stopped (ActAdd runs with the shipped
      // diff-in-means direction, which carries its raw vector and layer).
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      // Batched evaluation finishes a small run on this tiny model within a second or two: a run of 60 records with
      // 32 new tokens, and a reload as soon as the first batch is stored, so that the reload lands mid-run.
      await panel.getByLabel('N per dataset').fill('10');
      await panel.getByRole('checkbox', { name: /ActAdd/ }).check();
      await panel.getByLabel('New tokens').fill('32');
      // The page reloads itself the moment the progress shows a stored record: a reload sent by the test could come
      // after a quiet machine had finished the run.
      const reloaded = page.waitForEvent('load', { timeout: GUARD_MS });
      await page.evaluate(() => {
        const obs = new MutationObserver(() => {
          const count = document.querySelector('#panel-eval .progress .count')?.textContent ?? '0';
          if (Number(count.split(' ')[0]) > 0) {
            obs.disconnect();
            location.reload();
          }
        });
        obs.observe(document.body, { subtree: true, childList: true, characterData: true });
      });
      await panel.getByRole('button', { name: 'Run evaluation' }).click();
      await reloaded;
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await page.getByRole('button', { name: /interrupted/ }).waitFor({ timeout: GUARD_MS });
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Evaluation' }).click();
      await panel.getByRole('button', { name: 'Resume' }).first().click();
      expect(await runEnded(panel, 10), (await panel.locator('p.alert').allTextContents()).join('; ')).toBe('done');
      await idle(page);
      expect(await judgedPlusUnjudged(page.getByTestId('eval-summary'))).toEqual([10, 10, 10, 10, 10, 10]);
      const conditions = await page.getByTestId('eval-summary').locator('tbody tr td:nth-child(2)').allTextContents();
      expect(new Set(conditions)).toEqual(new Set(['base', 'was', 'actadd']));
      await shoot('evaluation-resumed');
    });
  }, TEST_GUARD_MS);

  test('IndexedDB record store: records survive reopening, a stored key is never written twice, runs delete cleanly', async () => {
    const session = await launchChromium();
    try {
      await session.page.goto(fixture.server.url);
      // A string, so vitest does not rewrite the page's dynamic import into its own loader.
      await session.page.evaluate("import('/src/core/eval/records-idb.ts').then((m) => { window.__recordsIdb = m; })");
      const out = await session.page.evaluate(async () => {
        const m = (window as unknown as { __recordsIdb: typeof import('../../src/core/eval/records-idb.js') }).__recordsIdb;
        const db = await m.openEvalDb('steerlab-eval-test');
        const a = await m.IdbRecordStore.open('run-a', db);
        await a.append({ dataset: 'd', id: '1', condition: 'base', refused: true, w: [0.5] });
        await a.append({ dataset: 'd', id: '2', condition: 'base', refused: false });
        const other = await m.IdbRecordStore.open('run-b', db);
        await other.append({ dataset: 'd', id: '1', condition: 'base', refused: false });
        let duplicate = '';
        try {
          await a.append({ dataset: 'd', id: '1', condition: 'base', refused: false });
        } catch (e) {
          duplicate = (e as Error).message;
        }
        await m.saveRun({ id: 'run-a', createdAt: '2026-01-01T00:00:00Z', status: 'running', settings: { n: 2 }, planned: 4 }, db);
        const reopened = await m.IdbRecordStore.open('run-a', db);
        const result = {
          size: reopened.size,
          has1: reopened.has({ dataset: 'd', id: '1', condition: 'base' }),
          has3: reopened.has({ dataset: 'd', id: '3', condition: 'base' }),
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
      expect(out.first).toMatchObject({ dataset: 'd', id: '1', condition: 'base', refused: true, w: [0.5] });
      expect(out.duplicate).toMatch(/already stored/);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nbrowser log:\n${session.log.slice(-30).join('\n')}`, { cause: e });
    } finally {
      await session.close();
    }
  }, TEST_GUARD_MS);
});
