/**
 * The per-layer residual norms that relative alpha is measured against (steering settings, src/core/steering/
 * modes.ts): n_l = mean over a calibration prompt set of ||x_{l+1}||, the unsteered residual after decoder layer l at
 * the last token of the chat-formatted prompt (with the generation prompt: the token the controller reads and the
 * patch first reaches). One unsteered forward pass per prompt.
 */
import type { SteerableModel } from '../model/steerable.js';
import type { ResidualNormCalibration } from '../steering/modes.js';
import { lastTokenResidual, type Progress } from './activations.js';

export async function residualNorms(
  model: SteerableModel,
  prompts: readonly string[],
  opts: { set: string; onProgress?: Progress },
): Promise<ResidualNormCalibration> {
  if (prompts.length === 0) throw new Error(`residual norms: the calibration set ${opts.set} has no prompts`);
  const L = model.numLayers;
  const H = model.hiddenSize;
  const sums = new Float64Array(L);
  for (let i = 0; i < prompts.length; i++) {
    const r = await lastTokenResidual(model, prompts[i]!);
    for (let l = 0; l < L; l++) {
      let ss = 0;
      for (let h = 0; h < H; h++) ss += r[(l + 1) * H + h]! ** 2;
      sums[l]! += Math.sqrt(ss);
    }
    opts.onProgress?.(i + 1, prompts.length);
  }
  return { norms: Array.from(sums, (s) => s / prompts.length), position: 'last-prompt-token', set: opts.set, n: prompts.length, model_id: model.id };
}
