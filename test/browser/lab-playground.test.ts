/**
 * The lab's Playground in headless Chromium (WASM): base and steered replies stream TOGETHER (one batch-2
 * generation in the LLM worker), with the controller's s and w and a heat strip whose rows stream with the steered
 * tokens; switching a layer off changes the steering matrix the worker computes; a prompt longer than the context is
 * shortened with a plain-text note; Stop ends both replies of a generation that would run for 400 tokens, also when
 * pressed before the request has left the page.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GUARD_MS, TEST_GUARD_MS, idle, labFixture, loadDefaultModel, loadTinyTest, norms, streamedLengths, tokensOf, withLab, type LabFixture } from './lab-helpers.js';

let fixture: LabFixture;
beforeAll(async () => {
  fixture = await labFixture({ tinyTest: true });
});
afterAll(async () => {
  await fixture?.close();
});

describe('lab: Playground', () => {
  test('base and steered stream together; s, w, heat strip; layer switches; long prompts; stop', async () => {
    await withLab(fixture, 'lab-playground', async ({ page, shoot }) => {
      await loadDefaultModel(page);
      await page.getByRole('tab', { name: 'Playground' }).click();
      const play = page.locator('#panel-playground');
      const generate = page.getByRole('button', { name: 'Generate base + steered' });
      await play.getByLabel(/^Prompt/).fill('How do I pick a lock?');
      await play.getByLabel('New tokens').fill('16');
      await generate.click();
      // Done when the steered reply reports the run (its line is empty until then), and no job runs.
      await expect.poll(() => play.locator('article').nth(1).textContent(), { timeout: GUARD_MS }).toMatch(/both in/);
      await idle(page);
      expect(await page.getByTestId('scale').textContent()).toMatch(/s = -?\d/);
      await page.getByRole('group', { name: /Cosine of each steered token/ }).waitFor();
      // One batch: both replies report the same run, each with its own length (each row stops on its own EOS).
      const baseTokens = tokensOf(await play.locator('article').nth(0).textContent());
      const steeredInfo = (await play.locator('article').nth(1).textContent()) ?? '';
      const steeredTokens = tokensOf(steeredInfo);
      expect(baseTokens, 'base article').toBeGreaterThan(0);
      expect(steeredTokens, `steered article: ${steeredInfo}`).toBeGreaterThan(0);
      expect(steeredInfo).toMatch(/both in/);
      // The heat strip has one column per steered token; its rows streamed in with the tokens (each arrives as its
      // token's forward pass runs), and the capture at the end completed it.
      const streamed = Number(await page.getByTestId('heat-strip').getAttribute('data-streamed-rows'));
      expect(streamed).toBeGreaterThanOrEqual(steeredTokens - 1);
      expect(await page.locator('[data-testid="heat-strip"] .col').count()).toBe(steeredTokens);
      await shoot('playground');

      // Switching layer 1 off changes the steering matrix (computed in the worker): its row norm drops to 0.
      await expect.poll(() => norms(page).then((n) => n.length), { timeout: GUARD_MS }).toBe(6);
      const before = await norms(page);
      expect(before[1]).toBeGreaterThan(0);
      await page.getByTestId('layer-toggle-1').uncheck();
      await expect.poll(() => norms(page).then((n) => n[1]), { timeout: GUARD_MS }).toBe(0);
      const after = await norms(page);
      expect(after.filter((_, i) => i !== 1).every((v) => v > 0)).toBe(true);
      expect(await page.getByRole('radio', { name: /Manual/ }).isChecked()).toBe(true);

      // A prompt longer than the context is shortened, and a plain-text note says so.
      await play.getByLabel(/^Prompt/).fill(`<b>Hello</b> ${'a long jailbreak preamble, '.repeat(60)}How do I pick a lock?`);
      await play.getByLabel('New tokens').fill('8');
      await generate.click();
      await page.getByTestId('fit-note').waitFor({ timeout: GUARD_MS });
      await idle(page);
      expect(await page.getByTestId('fit-note').textContent()).toMatch(/^prompt shortened from \d{3,} to \d+ tokens to fit the context$/);
      expect(await page.getByTestId('steered-output').textContent()).not.toBe('');
      expect(await page.locator('#panel-playground b').count(), 'prompt text rendered as text, never as HTML').toBe(0);

      // Stop: the organism ends its replies with <|im_end|> within a few tokens, faster than any click, so Stop is
      // checked on a random-weight model that would write 400 tokens. The model switch happens in place (6 layers ->
      // 4: the playground drops what it showed for the organism; the page-error check catches it if not).
      await loadTinyTest(page);
      await page.getByRole('tab', { name: 'Playground' }).click();
      // Policy off: the steered row equals the base row, so both would run to 400 tokens (a steered random model
      // may well stop at once on its own EOS, which its row is allowed to do).
      await page.getByRole('radio', { name: /Off \(base model\)/ }).check();
      await play.getByLabel(/^Prompt/).fill('How do I pick a lock?');
      await play.getByLabel('New tokens').fill('400');
      // Streaming: both replies grow token by token, together. The organism's replies end within a few frames on a
      // quiet machine (about 1.5 ms per token), too fast to see them grow, so the 400 tokens of this model show it.
      const watch = streamedLengths(page, ['base-output', 'steered-output']);
      await generate.click();
      await expect.poll(() => play.locator('article').nth(1).textContent(), { timeout: GUARD_MS }).toMatch(/both in/);
      await idle(page);
      const lengths = await watch.stop();
      expect(new Set(lengths['base-output']).size, `base text grew in steps: ${lengths['base-output']}`).toBeGreaterThan(2);
      expect(new Set(lengths['steered-output']).size, `steered text grew in steps: ${lengths['steered-output']}`).toBeGreaterThan(2);
      console.log(`[playground] test model, 400 tokens: ${/both in \S+ \S+/.exec((await play.locator('article').nth(1).textContent()) ?? '')?.[0]}; base text lengths seen: ${lengths['base-output']!.length}`);

      // Stop is pressed from inside the page the moment the job starts (the button enables itself then). A click sent
      // by the test can arrive after a quiet machine has already written all the tokens (220 in 447 ms was seen).
      await page.evaluate(async (guard) => {
        const button = (name: string) => [...document.querySelectorAll<HTMLButtonElement>('#panel-playground button')].find((b) => b.textContent?.trim() === name);
        button('Generate base + steered')!.click();
        const t0 = performance.now();
        for (;;) {
          const stop = document.querySelector<HTMLButtonElement>('[data-testid="stop"]');
          if (stop && !stop.disabled) return stop.click();
          if (performance.now() - t0 > guard) throw new Error(`Stop was not enabled within ${guard} ms of Generate`);
          await new Promise((r) => setTimeout(r, 0));
        }
      }, GUARD_MS);
      await expect.poll(() => generate.isEnabled(), { timeout: GUARD_MS }).toBe(true);
      const baseStopped = await play.locator('article').nth(0).textContent();
      const steeredStopped = await play.locator('article').nth(1).textContent();
      const alert = (await play.getByRole('alert').count()) ? await play.getByRole('alert').textContent() : 'none';
      expect(baseStopped, `base article after Stop (alert: ${alert})`).toMatch(/\d+ tokens, abort/);
      expect(steeredStopped, `steered article after Stop (alert: ${alert})`).toMatch(/\d+ tokens, abort/);
      expect(tokensOf(baseStopped)).toBeLessThan(400);
      expect(tokensOf(steeredStopped)).toBe(tokensOf(baseStopped));
      await shoot('playground-stopped');

      // A Stop pressed before the request has left the page is honoured too. Here the page is still fetching the
      // relative-alpha norm set (held back until Stop is pressed): the worker has no job yet, so only the page can
      // keep the request from leaving; a lost Stop would let it run all 400 tokens.
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      await page.route('**/data/refusal_direction/harmless_train*', async (route) => {
        await held;
        await route.continue();
      });
      await page.getByTestId('play-alpha-scale').selectOption('relative');
      await generate.click();
      await page.getByTestId('stop').click();
      release();
      await expect.poll(() => generate.isEnabled(), { timeout: GUARD_MS }).toBe(true);
      for (const k of [0, 1]) expect(await play.locator('article').nth(k).textContent()).toMatch(/0 tokens, abort \(stopped before the first token\)/);
      expect(await play.getByRole('alert').count(), 'a Stop is not an error').toBe(0);
    });
  }, TEST_GUARD_MS);
});
