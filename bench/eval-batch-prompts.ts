/**
 * The prompts of an eval_batch child (Node side of both children): the harmless-test split, or ToxicChat's test split
 * through the product's dataset loader (what `lab eval --dataset toxicchat-test` reads), first `n` in file order.
 * Kept out of eval-batch-common.ts, which the browser page imports.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDataset } from '../src/core/data/node.js';
import { harmlessPrompts, type EvalBatchArgs } from './eval-batch-common.js';

export async function evalBatchMessages(args: Pick<EvalBatchArgs, 'source' | 'prompts'>): Promise<string[]> {
  if (args.source === 'toxicchat-test') return (await loadDataset('toxicchat-test')).prompts.slice(0, args.prompts).map((p) => p.text);
  return harmlessPrompts(readFileSync(join(import.meta.dirname, '..', 'public', 'data', 'refusal_direction', 'harmless_test.jsonl'), 'utf8'), args.prompts);
}
