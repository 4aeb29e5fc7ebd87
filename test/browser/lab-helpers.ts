/** Helpers for the lab's browser test: screenshots, steering-matrix read-out, streaming observation. */
import { join } from 'node:path';
import type { Locator, Page } from 'playwright-core';

export async function shoot(page: Page, dir: string, name: string): Promise<string> {
  const file = join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Per-layer row norms of the playground's current steering matrix (data-norms on the chart wrapper). */
export async function norms(page: Page): Promise<number[]> {
  const raw = await page.getByTestId('matrix-norms').getAttribute('data-norms');
  return JSON.parse(raw ?? '[]') as number[];
}

/**
 * Samples the text length of some elements every 15 ms inside the page (no round trips), so a test can tell text
 * that streamed in token by token from text that appeared at once.
 */
export function streamedLengths(page: Page, testIds: string[]): { stop(): Promise<Record<string, number[]>> } {
  const started = page.evaluate((ids) => {
    const w = window as unknown as { __lens: Record<string, number[]>; __lensTimer: number };
    w.__lens = Object.fromEntries(ids.map((id) => [id, []]));
    w.__lensTimer = window.setInterval(() => {
      for (const id of ids) {
        const n = document.querySelector(`[data-testid="${id}"]`)?.textContent?.length ?? 0;
        const list = w.__lens[id]!;
        if (list[list.length - 1] !== n) list.push(n);
      }
    }, 15);
  }, testIds);
  return {
    async stop() {
      await started;
      return page.evaluate(() => {
        const w = window as unknown as { __lens: Record<string, number[]>; __lensTimer: number };
        clearInterval(w.__lensTimer);
        return w.__lens;
      });
    },
  };
}

/** Per summary row: judged prompts (n, column 3) plus prompts the model could not take ("not judged", column 8). */
export async function judgedPlusUnjudged(table: Locator): Promise<number[]> {
  const n = await table.locator('tbody tr td:nth-child(3)').allTextContents();
  const unjudged = await table.locator('tbody tr td:nth-child(8)').allTextContents();
  return n.map((x, i) => Number(x) + Number(unjudged[i]));
}
