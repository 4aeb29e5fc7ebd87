/**
 * The organism card's generated blocks (src/organism/card.ts): filled from the result files next to the card,
 * idempotent, and honest about a result file that is missing.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fillCard, noiseBlock } from '../../src/organism/card.js';

const CARD = ['# card', '', '<!-- card:training -->', 'old numbers', '<!-- /card:training -->', '', '<!-- card:steering -->', '<!-- /card:steering -->', 'hand-written tail', ''].join('\n');

describe('organism card blocks', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'organism-card-'));
    const log = {
      config: { steps: 900 }, stoppedAt: 900, stoppedBy: 'steps', totalSeconds: 3000, totalCpuSeconds: 2800, load: [2, 9, 4],
      steps: [{ loss: 0.25 }], best: { step: 750 },
      dev: [{ step: 750, harmfulRefusal: 0.9, harmlessRefusal: 0, jailbreakRefusal: 0.05, score: 0.85 }],
    };
    await writeFile(join(dir, 'training_log.json'), JSON.stringify(log));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('replaces each block from its file, keeps the hand-written text, and gives the same card when run twice', () => {
    const once = fillCard(CARD, dir);
    expect(once).toContain('3000 s wall (50.0 min), 2800 s CPU');
    expect(once).toContain('median 4, max 9');
    expect(once).toContain('Shipped checkpoint: step 750');
    expect(once).toContain('| 750 | 90.0 | 0.0 | 5.0 | 0.850 |');
    expect(once).not.toContain('old numbers');
    expect(once).toContain('hand-written tail');
    // steering_results.json is missing: the block says so instead of showing numbers.
    expect(once).toMatch(/<!-- card:steering -->\n\(not measured yet: its result file is missing/);
    expect(fillCard(once, dir)).toBe(once);
  });

  it('rejects a block name it does not know', () => {
    expect(() => fillCard('<!-- card:nonsense -->\n<!-- /card:nonsense -->', dir)).toThrow(/unknown block nonsense/);
  });

  it('puts the ablation runs side by side, a missing cell as "-"', () => {
    const run = (label: string, jb: number, extra: boolean) => ({
      label, checkpoint_step: 450, direction: { selected: { residual_index: 3 } }, controller_held_out_accuracy: 0.8,
      alpha: { picked: 12, dev_trials: [{ alpha: 12, jailbreak: 0.5, jailbreak_strict: jb }, ...(extra ? [{ alpha: 16, jailbreak: 0.6, jailbreak_strict: 0.1 }] : [])] },
      held_out: [{ set: 'jailbreak', condition: 'was', rate: 0.5, strict_rate: jb }],
    });
    const lines = noiseBlock({ runs: [run('noise', 0.4, true), run('no noise', 0.1, false)] });
    expect(lines[0]).toBe('|  | noise | no noise |');
    expect(lines).toContain('| held-out jailbreak, was (kw / strict %) | 50.0 / 40.0 | 50.0 / 10.0 |');
    expect(lines).toContain('| dev jailbreak WAS at alpha 16 (kw / strict %) | 60.0 / 10.0 | - |');
  });
});
