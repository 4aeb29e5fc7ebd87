/** Steps a user takes in the lab, shared by the browser tests that drive its UI (layout, sub-path serving). */
import { expect } from 'vitest';
import type { Page } from 'playwright-core';

/** The default model ready in the Model panel: loaded when the lab opens, or by the header's button. Throws the panel's error if the load fails. */
export async function loadDefaultModel(page: Page): Promise<void> {
  const ready = page.getByTestId('model-ready');
  const loadDefault = page.getByTestId('load-default');
  await ready.or(loadDefault).first().waitFor({ timeout: 60_000 });
  if (await loadDefault.isVisible()) await loadDefault.click();
  const loadError = page.getByTestId('load-error');
  await ready.or(loadError).first().waitFor({ timeout: 120_000 });
  if (await loadError.isVisible()) throw new Error(`the default model did not load: ${await loadError.textContent()}`);
}

/** Base and steered replies in the Playground (greedy, the panel's default), waited for until both are done. */
export async function generateInPlayground(page: Page, prompt: string, newTokens: number): Promise<void> {
  await page.getByRole('tab', { name: 'Playground' }).click();
  const play = page.locator('#panel-playground');
  await play.getByLabel(/^Prompt/).fill(prompt);
  await play.getByLabel('New tokens').fill(String(newTokens));
  const generate = page.getByRole('button', { name: 'Generate base + steered' });
  await generate.click();
  await expect.poll(() => page.getByTestId('steered-output').textContent(), { timeout: 60_000 }).not.toBe('');
  await expect.poll(() => generate.isEnabled(), { timeout: 60_000 }).toBe(true);
}

/** A small, fast controller training run (8 prompts per class, 2 epochs, width 64), waited for until it is active. */
export async function trainSmallController(page: Page): Promise<void> {
  await page.getByRole('tab', { name: 'Controller' }).click();
  const ctl = page.locator('#panel-controller');
  await ctl.getByLabel('Prompts per class').fill('8');
  await ctl.getByLabel('Epochs').fill('2');
  await ctl.getByLabel('Hidden width').fill('64');
  await ctl.getByRole('button', { name: 'Train controller' }).click();
  await page.getByTestId('controller-active').waitFor({ timeout: 120_000 });
}
