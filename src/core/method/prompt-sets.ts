/**
 * Which prompts the method's jobs use, chosen by seed (browser-safe; the CLI and the lab's LLM worker call these
 * same functions on the prompt lists they loaded, so the same sets and seed give the same prompts everywhere):
 *   - pick: n prompts of a dataset (evaluation);
 *   - directionPrompts: disjoint train and validation prompts per class (diff-in-means, Arditi's selection);
 *   - controllerPrompts: n prompts per class with their labels (the controller's training rows, before the split).
 * Only rows with the class's label are used (a mixed dataset such as toxicchat-test gives its harmful rows to the
 * harmful class).
 */
import { pick } from '../data/sample.js';
import type { Label, PromptRecord } from '../data/types.js';

export { pick };

/** A loaded prompt set and how to name it in an error ("--harmful harmful-train", "harmful set advbench"). */
export interface LabelledSet {
  name: string;
  prompts: readonly PromptRecord[];
}

function ofLabel(set: LabelledSet, label: Label, atLeast: number, why: string): PromptRecord[] {
  const prompts = set.prompts.filter((p) => p.label === label);
  if (prompts.length < atLeast) throw new Error(`${set.name}: ${prompts.length} ${label} prompts; at least ${atLeast} ${atLeast === 1 ? 'is' : 'are'} needed (${why})`);
  return prompts;
}

export interface TrainValidation {
  train: string[];
  val: string[];
}

/**
 * Per class, n + valN prompts by seed: the first n of the seeded sample train, the rest validate (disjoint). A class
 * with fewer prompts keeps at least one for validation.
 */
export function directionPrompts(
  harmful: LabelledSet,
  harmless: LabelledSet,
  n: number,
  valN: number,
  seed: number,
): { harmful: TrainValidation; harmless: TrainValidation } {
  for (const [what, v] of [['training prompts per class', n], ['validation prompts per class', valN]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${what} must be a whole number >= 1, got ${v}`);
  }
  const take = (set: LabelledSet, label: Label): TrainValidation => {
    const picked = pick(ofLabel(set, label, 2, 'training and validation'), n + valN, seed);
    const k = Math.min(n, picked.length - 1);
    return { train: picked.slice(0, k).map((p) => p.text), val: picked.slice(k).map((p) => p.text) };
  };
  return { harmful: take(harmful, 'harmful'), harmless: take(harmless, 'benign') };
}

/** n prompts per class by seed, harmful first, with the controller's labels (1 = harmful, 0 = benign). */
export function controllerPrompts(
  harmful: LabelledSet,
  benign: LabelledSet,
  n: number,
  seed: number,
): { prompts: string[]; labels: Uint8Array; counts: { harmful: number; benign: number } } {
  if (!Number.isInteger(n) || n < 1) throw new Error(`prompts per class must be a whole number >= 1, got ${n}`);
  const h = pick(ofLabel(harmful, 'harmful', 1, 'the controller learns s = 1 on them'), n, seed);
  const b = pick(ofLabel(benign, 'benign', 1, 'the controller learns s = 0 on them'), n, seed);
  return {
    prompts: [...h, ...b].map((p) => p.text),
    labels: Uint8Array.from([...h.map(() => 1), ...b.map(() => 0)]),
    counts: { harmful: h.length, benign: b.length },
  };
}
