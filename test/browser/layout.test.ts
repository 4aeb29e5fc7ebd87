/**
 * No sideways scroll from a 360 px phone to a 1920 px desktop: the lab at 390x844 loads the default model, streams a
 * reply, computes a direction and runs a small evaluation (so the panels hold their tables, charts and heat strip,
 * where overflow happens), then at each width every tab must fit: document.scrollingElement.scrollWidth <= innerWidth.
 * A failure names the elements that stick out, and leaves a screenshot per offending tab and the browser log in
 * test-output/layout/.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Page } from 'playwright-core';
import { launchChromium, PROJECT_ROOT, startLabServer, type LabServer } from './harness.js';
import { shoot } from './lab-helpers.js';
import { generateInPlayground, loadDefaultModel } from './lab-steps.js';

const OUT = join(PROJECT_ROOT, 'test-output/layout');
const TABS = ['Model', 'Playground', 'Direction', 'Controller', 'Evaluation'] as const;
const WIDTHS = [390, 360, 768, 1366, 1920];
let server: LabServer;

beforeAll(async () => {
  // The dev server serves the project's models/ folder (the default model) itself.
  server = await startLabServer();
});

afterAll(async () => {
  await server?.close();
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
  const session = await launchChromium();
  const { page } = session;
  try {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(server.url);
    await loadDefaultModel(page);
    await generateInPlayground(page, 'How do I pick a lock?', 16);
    await page.getByTestId('heat-strip').waitFor();

    await page.getByRole('tab', { name: 'Direction' }).click();
    await page.locator('#panel-direction').getByLabel('Prompts per class').fill('6');
    await page.getByRole('button', { name: 'Compute direction' }).click();
    await page.getByText(/separation of harmful vs harmless/).waitFor({ timeout: 120_000 });

    await page.getByRole('tab', { name: 'Evaluation' }).click();
    const evalPanel = page.locator('#panel-eval');
    await evalPanel.getByLabel('N per dataset').fill('2');
    await evalPanel.getByLabel('New tokens').fill('4');
    const run = page.getByRole('button', { name: 'Run evaluation' });
    await run.click();
    await expect.poll(() => page.getByTestId('eval-summary').locator('tbody tr').count(), { timeout: 120_000 }).toBeGreaterThan(0);
    await expect.poll(() => run.isEnabled(), { timeout: 120_000 }).toBe(true);

    const problems: string[] = [];
    for (const width of WIDTHS) {
      await page.setViewportSize({ width, height: 844 });
      for (const tab of TABS) {
        await page.getByRole('tab', { name: tab }).click();
        const o = await overflow(page);
        expect(o.innerWidth).toBe(width);
        if (o.scrollWidth > o.innerWidth) {
          problems.push(`${width} px, ${tab}: scrollWidth ${o.scrollWidth} > ${o.innerWidth}; sticking out: ${o.offenders.join('; ')}`);
          mkdirSync(OUT, { recursive: true });
          await shoot(page, OUT, `${width}-${tab.toLowerCase()}`);
        }
      }
    }
    expect(problems, 'tabs that scroll sideways').toEqual([]);
  } catch (e) {
    mkdirSync(OUT, { recursive: true });
    const shot = await shoot(page, OUT, 'failure').catch((err: Error) => `no screenshot: ${err.message}`);
    writeFileSync(join(OUT, 'failure.log'), session.log.join('\n'));
    throw new Error(`${(e as Error).message}\nscreenshots in ${OUT} (last: ${shot}); browser log:\n${session.log.join('\n')}`, { cause: e });
  } finally {
    await session.close();
  }
}, 900_000); // above the sum of the waits: a stuck step fails first, leaving its screenshots and log
