/**
 * Per-prompt targets for the controller's layer weights (the 'learned' recipe of src/core/controller/train.ts): the
 * LEAST patch per layer that still turns a harmful prompt's first reply token into a refusal.
 *
 * For one harmful prompt, with the unit direction d and the controller's alpha, row l of the patch is g_l * alpha * d
 * (s = 1, the harmful target of s), applied as the flow applies it (positions 'last' by default). Whether the patched
 * prompt "refuses" is one of two criteria:
 *   'first-token' (default): the first reply token's refusal score (Arditi: log p - log(1 - p), p = total probability
 *                 of the refusal tokens, e.g. "I") is above `margin` (0: refusal more likely than not). One pass.
 *   'keyword':    the keyword judge finds a refusal phrase in the first `tokens` greedy reply tokens (a refusal that
 *                 does not start the reply counts too). One short generation per probe.
 *   1. g = 1 at every layer (the grid's top). If the prompt is not a refusal even then, it gets no targets (NaN: no w
 *      term for it): no gain the controller can ask for turns it, and asking for the most wrecks the text (measured on
 *      the organism: a full patch at alpha 14 turned 15 of 839 unrefused prompts into a first-token refusal, and
 *      training towards 1s there doubled the patch on jailbreaks and left no refusal words at all).
 *   2. Greedy, one layer at a time from the LAST layer to the first: lower g_l through the grid while the first reply
 *      token stays a refusal; stop at the first grid value that breaks it. Late layers go first because a patch there
 *      reaches the logits almost directly (the refusal phrase followed by token soup that the issue measured); a patch
 *      in earlier layers is processed by the rest of the model.
 * A prompt the model already refuses unpatched ends with every g_l = 0: it needs no patch (WAS would otherwise turn
 * some of those clean refusals into soup). Benign prompts' targets are 0 at every layer: the best patch for them is
 * none. Cost: at most 2 + L * (grid size - 1) probes per harmful prompt (a forward pass of the last prompt token on a
 * cached prefix, or a short generation with 'keyword').
 */
import type { LayerTargetInfo } from '../controller/metadata.js';
import type { SteerableModel } from '../model/steerable.js';
import { refusalScore } from '../steering/selection.js';
import { checkVector, norm } from '../steering/vector.js';
import type { Progress } from './activations.js';
import { getJudge } from '../eval/judges.js';

export const DEFAULT_TARGET_GRID = [1, 0.75, 0.5, 0.25, 0];

export interface LayerTargetOptions {
  /** Unit steering direction d [hidden]. */
  direction: Float32Array;
  alpha: number;
  refusalTokenIds: number[];
  /** Gains tried per layer, strictly descending from 1 to 0 (default 1, 0.75, 0.5, 0.25, 0). */
  grid?: number[];
  margin?: number;
  positions?: 'last' | 'all' | 'new';
  /** 'first-token' (default) or 'keyword' (see the module comment). */
  criterion?: 'first-token' | 'keyword';
  /** 'keyword': reply tokens generated per probe (default 8) and the judge id (default arditi-keywords). */
  tokens?: number;
  judge?: string;
}

export interface PromptTargets {
  targets: Float32Array;
  refusedUnpatched: boolean;
  refusedWithFullPatch: boolean;
  passes: number;
}

function checkOptions(model: { numLayers: number; hiddenSize: number }, o: LayerTargetOptions): Required<LayerTargetOptions> {
  const criterion = o.criterion ?? 'first-token';
  if (criterion !== 'first-token' && criterion !== 'keyword') throw new RangeError(`layer-target criterion must be 'first-token' or 'keyword', got ${String(criterion)}`);
  const tokens = o.tokens ?? 8;
  if (!Number.isSafeInteger(tokens) || tokens < 1) throw new RangeError(`layer-target tokens must be a whole number >= 1, got ${tokens}`);
  const judge = o.judge ?? 'arditi-keywords';
  getJudge(judge);
  const d = checkVector(o.direction, model.hiddenSize, 'layer-target direction');
  if (Math.abs(norm(d) - 1) > 1e-3) throw new RangeError(`layer-target direction must be a unit vector, its norm is ${norm(d)}`);
  if (!Number.isFinite(o.alpha) || o.alpha <= 0) throw new RangeError(`layer-target alpha must be a positive number, got ${o.alpha}`);
  const grid = o.grid ?? DEFAULT_TARGET_GRID;
  if (grid.length < 2 || grid[0] !== 1 || grid[grid.length - 1] !== 0 || grid.some((g, i) => i > 0 && !(g < grid[i - 1]!))) {
    throw new RangeError(`layer-target grid must descend strictly from 1 to 0, got [${grid.join(', ')}]`);
  }
  if (o.refusalTokenIds.length === 0) throw new RangeError('layer targets need at least one refusal token id');
  const positions = o.positions ?? 'last';
  if (positions === 'new') throw new RangeError("layer targets need the patch on the last prompt token ('last' or 'all'): with 'new' the first reply token is never patched");
  return { direction: d, alpha: o.alpha, refusalTokenIds: o.refusalTokenIds, grid, margin: o.margin ?? 0, positions, criterion, tokens, judge };
}

/** The least-patch targets of one harmful prompt (token ids of the chat-formatted prompt). */
export async function harmfulPromptTargets(model: SteerableModel, ids: number[], opts: LayerTargetOptions): Promise<PromptTargets> {
  const o = checkOptions(model, opts);
  const L = model.numLayers;
  const H = model.hiddenSize;
  let passes = 0;
  const refuses = async (g: Float32Array | null): Promise<boolean> => {
    passes++;
    let steering: Float32Array | null = null;
    if (g) {
      steering = new Float32Array(L * H);
      for (let l = 0; l < L; l++) if (g[l] !== 0) for (let h = 0; h < H; h++) steering[l * H + h] = g[l]! * o.alpha * o.direction[h]!;
    }
    if (o.criterion === 'keyword') {
      const r = await model.generate({ inputIds: ids, maxNewTokens: o.tokens, steering, steerPromptPositions: o.positions });
      return (await getJudge(o.judge).judge(r.text)).refused;
    }
    const logits = await model.nextTokenLogits(ids, { steering, positions: o.positions });
    return refusalScore(logits, o.refusalTokenIds) > o.margin;
  };
  const refusedUnpatched = await refuses(null);
  if (refusedUnpatched) return { targets: new Float32Array(L), refusedUnpatched, refusedWithFullPatch: true, passes };
  const g = new Float32Array(L).fill(1);
  const refusedWithFullPatch = await refuses(g);
  if (!refusedWithFullPatch) return { targets: new Float32Array(L).fill(NaN), refusedUnpatched, refusedWithFullPatch, passes };
  for (let l = L - 1; l >= 0; l--) {
    for (let i = 1; i < o.grid.length; i++) {
      const before = g[l]!;
      g[l] = o.grid[i]!;
      if (!(await refuses(g))) {
        g[l] = before;
        break;
      }
    }
  }
  return { targets: g, refusedUnpatched, refusedWithFullPatch, passes };
}

/**
 * Targets [rows, L] for labelled prompts (1 harmful: searched; 0 benign: zeros), and what the metadata records.
 * `search` limits the harmful rows searched (the others get NaN: no w term), in row order.
 */
export async function layerTargets(
  model: SteerableModel,
  prompts: readonly string[],
  labels: ArrayLike<number>,
  opts: LayerTargetOptions & { search?: number; onProgress?: Progress },
): Promise<{ targets: Float32Array; info: LayerTargetInfo }> {
  const o = checkOptions(model, opts);
  if (prompts.length !== labels.length) throw new Error(`layer targets: ${prompts.length} prompts but ${labels.length} labels`);
  const L = model.numLayers;
  const targets = new Float32Array(prompts.length * L);
  const limit = opts.search ?? Infinity;
  let searched = 0;
  let full = 0;
  let unpatched = 0;
  let passes = 0;
  const harmfulTotal = Math.min(limit, Array.from(labels).filter((y) => y === 1).length);
  for (let r = 0; r < prompts.length; r++) {
    if (labels[r] !== 1) continue; // benign: zeros
    if (searched >= limit) {
      targets.fill(NaN, r * L, (r + 1) * L);
      continue;
    }
    const t = await harmfulPromptTargets(model, model.formatChat(prompts[r]!).ids, o);
    targets.set(t.targets, r * L);
    searched++;
    passes += t.passes;
    if (t.refusedWithFullPatch) full++;
    if (t.refusedUnpatched) unpatched++;
    opts.onProgress?.(searched, harmfulTotal);
  }
  return {
    targets,
    info: {
      method: 'least-refusal-patch',
      criterion: o.criterion === 'keyword' ? { kind: 'keyword', tokens: o.tokens, judge: o.judge } : { kind: 'first-token', margin: o.margin },
      grid: [...o.grid],
      refusal_token_ids: [...o.refusalTokenIds],
      positions: o.positions as 'last' | 'all',
      alpha: o.alpha,
      order: 'last-to-first',
      benign_target: 0,
      harmful_rows: searched,
      refused_with_full_patch: full,
      refused_unpatched: unpatched,
      probes: passes,
    },
  };
}
