/**
 * No sideways scroll from a 360 px phone to a 1920 px desktop: the lab at 390x844 loads the default model, streams a
 * reply, computes a direction and runs a small evaluation (so the panels hold their tables, charts and heat strip,
 * where overflow happens), then at each width every tab must fit: document.scrollingElement.scrollWidth <= innerWidth.
 * A failure names the elements that stick out, and leaves a screenshot per offending tab and the browser log in
 * test-output/browser/layout/. Waits are on the page's state (lab-helpers.ts), bounded only by the harness's guards.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Page } from 'playwright-core';
import {
  GUARD_MS, TEST_GUARD_MS, computeSmallDirection, generateInPlayground, idle, labFixture, loadDefaultModel, runEnded, withLab, type LabFixture,
} from './lab-helpers.js';

const TABS = ['Model', 'Playground', 'Direction', 'Controller', 'Evaluation', 'Sweep'] as const;
const WIDTHS = [390, 360, 768, 1366, 1920];
let fixture: LabFixture;

beforeAll(async () => {
  fixture = await labFixture();
});

afterAll(async () => {
  await fixture?.close();
});

/** How far the page scrolls sideways, and the innermost elements whose right edge passes the viewport. */
function overflow(page: Page): Promise<{ scrollWidth: number; innerWidth: number; offenders: string[] }> {
  return page.evaluate(() => {
    const iw = window.innerWidth;
    const sticksOut = (el: Element) => el.getBoundingClientRect().right > iw + 0.5;
    const offenders: string[] = [];
    for (const el of Array.from(document.querySelectorAll('body *'))) {
      if (!sticksOut(el) || Array.from(el.children).some(sticksOut)) continue;
      const cls = (el.getAttribute('class') ?? '').replace(/\bsvelte-\w+\b/g, '').trim().replace(/\s+/g, '.');
      const text = (el.textContent ?? '').replace(/\s+/g, ' ').trim().slice(0, 40);
      offenders.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${cls ? `.${cls}` : ''} (right edge ${Math.round(el.getBoundingClientRect().right)} px) "${text}"`);
    }
    return { scrollWidth: document.scrollingElement!.scrollWidth, innerWidth: iw, offenders: offenders.slice(0, 8) };
  });
}

test('every tab fits from 360 to 1920 px wide, with a model loaded, a reply, a direction and an evaluation', async () => {
  await withLab(fixture, 'layout', async ({ page, shoot }) => {
    await page.setViewportSize({ width: 390, height: 844 });
    await loadDefaultModel(page);
    await generateInPlayground(page, 'How do I pick a lock?', 16);
    await page.getByTestId('heat-strip').waitFor({ timeout: GUARD_MS });

    await computeSmallDirection(page);

    await page.getByRole('tab', { name: 'Evaluation' }).click();
    const evalPanel = page.locator('#panel-eval');
    await evalPanel.getByLabel('N per dataset').fill('2');
    await evalPanel.getByLabel('New tokens').fill('4');
    await evalPanel.getByRole('button', { name: 'Run evaluation' }).click();
    expect(await runEnded(evalPanel, 2), (await evalPanel.locator('p.alert').allTextContents()).join('; ')).toBe('done');
    await idle(page);
    expect(await page.getByTestId('eval-summary').locator('tbody tr').count()).toBeGreaterThan(0);

    const problems: string[] = [];
    for (const width of WIDTHS) {
      await page.setViewportSize({ width, height: 844 });
      for (const tab of TABS) {
        await page.getByRole('tab', { name: tab }).click();
        const o = await overflow(page);
        expect(o.innerWidth).toBe(width);
        if (o.scrollWidth > o.innerWidth) {
          problems.push(`${width} px, ${tab}: scrollWidth ${o.scrollWidth} > ${o.innerWidth}; sticking out: ${o.offenders.join('; ')}`);
          await shoot(`${width}-${tab.toLowerCase()}`);
        }
      }
    }
    expect(problems, 'tabs that scroll sideways (screenshots in test-output/browser/layout/)').toEqual([]);

    // At phone width charts are drawn at their rendered size (chart text stays at its 11 px, not shrunk to 6 px), and
    // heat-strip cells stay wide enough to point at.
    await page.setViewportSize({ width: 390, height: 844 });
    const small: string[] = [];
    for (const tab of ['Playground', 'Direction', 'Evaluation']) {
      await page.getByRole('tab', { name: tab }).click();
      // A chart learns its width from a ResizeObserver once its panel is shown, a frame or more after the click: wait
      // for every visible chart to be redrawn at its box's width (bounded by the guard), then judge what is drawn.
      const measure = () => page.evaluate(() =>
        Array.from(document.querySelectorAll<SVGSVGElement>('[role="tabpanel"]:not([hidden]) svg[viewBox]'))
          .filter((svg) => svg.getBoundingClientRect().width > 0)
          .map((svg) => svg.getBoundingClientRect().width / svg.viewBox.baseVal.width));
      const settled = (k: number[]) => k.length > 0 && k.every((x) => x >= 0.95);
      await expect.poll(measure, { timeout: GUARD_MS / 10, interval: 100 }).toSatisfy(settled).catch(() => undefined);
      const scales = await measure();
      expect(scales.length, `${tab}: charts drawn`).toBeGreaterThan(0);
      for (const k of scales) if (k < 0.95) small.push(`${tab}: a chart drawn at ${(100 * k).toFixed(0)} % of its size`);
    }
    expect(small, 'charts shrunk at 390 px').toEqual([]);
    await page.getByRole('tab', { name: 'Playground' }).click();
    const cell = await page.locator('[data-testid="heat-strip"] .cell').first().boundingBox();
    expect(cell?.width ?? 0, 'heat-strip cell width at 390 px').toBeGreaterThanOrEqual(16);
  });
}, TEST_GUARD_MS);
