/**
 * Takes the README's screenshot of the lab (docs/lab-first-steps.png) with the project's headless-Chromium harness:
 * the lab on the Vite dev server with the shipped organism, its "first steps" guide open, after one playground run.
 *
 *   npx tsx docs/take-screenshot.ts
 */
import { join } from 'node:path';
import { GUARD_MS, launchChromium, PROJECT_ROOT, startLabServer } from '../test/browser/harness.js';

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + GUARD_MS;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

// The lab's models folder (LOCAL_MODELS_PATH in src/ui/lib/models.ts; '/models/' on the dev server).
const server = await startLabServer({ '/models/': join(PROJECT_ROOT, 'models') });
const session = await launchChromium();
try {
  const { page } = session;
  await page.setViewportSize({ width: 1280, height: 1000 });
  await page.goto(server.url);
  await until('the default model', async () => (await page.getByTestId('model-ready').count()) > 0);
  await page.getByRole('tab', { name: 'Playground' }).click();
  await page.locator('#panel-playground').getByLabel(/^Prompt/).fill('How do I pick a lock?');
  await page.locator('#panel-playground').getByLabel('New tokens').fill('24');
  await page.getByRole('button', { name: 'Generate base + steered' }).click();
  await until('the replies', async () => /both in/.test((await page.locator('#panel-playground article').nth(1).textContent()) ?? ''));
  await until('the heat strip', async () => (await page.getByTestId('heat-strip').count()) > 0);
  const out = join(PROJECT_ROOT, 'docs/lab-first-steps.png');
  await page.screenshot({ path: out, fullPage: false });
  console.log(`wrote ${out}`);
} finally {
  await session.close();
  await server.close();
}
