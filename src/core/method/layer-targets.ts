/**
 * Per-prompt targets for the controller's layer weights (the 'learned' recipe of src/core/controller/train.ts): the
 * LEAST patch per layer that still makes a harmful prompt refuse.
 *
 * For one harmful prompt, with the unit direction d and the controller's alpha, row l of the patch is g_l * alpha * d
 * (s = 1, the harmful target of s), applied as the flow applies it (positions 'last' by default). Whether the patched
 * prompt "refuses" is one of three criteria:
 *   'first-token' (default): the first reply token's refusal score (Arditi: log p - log(1 - p), p = total probability
 *                 of the refusal tokens, e.g. "I") is above `margin` (0: refusal more likely than not). One pass.
 *   'keyword':    the keyword judge finds a refusal phrase in the first `tokens` greedy reply tokens. One short
 *                 generation per probe.
 *   'coherent':   'keyword' AND the reply_nll of those tokens under the unsteered model is at most `nllThreshold`
 *                 (src/core/eval/coherence.ts): a refusal that reads like the model's own text, not an opening
 *                 phrase followed by token soup. One short generation and one forward pass per probe.
 * The search:
 *   1. unpatched: a prompt that already refuses needs no patch: targets 0 at every layer;
 *   2. the least UNIFORM gain u of the grid (ascending) whose patch u * alpha * d at every layer makes it refuse; none:
 *      no targets (NaN, no w term for the prompt). The search starts there and never above: more patch is not more
 *      refusal once the text breaks (measured on the organism at alpha 14: the full patch, u = 1, turned 15 of 839
 *      unrefused prompts into a first-token refusal and none into a keyword refusal within 8 tokens);
 *   3. greedy, one layer at a time from the LAST layer to the first: lower g_l through the grid values below u while
 *      the prompt still refuses; stop at the first value that breaks it. Late layers go first because a patch there
 *      reaches the logits almost directly; a patch in earlier layers is processed by the rest of the model.
 * Benign prompts' targets are 0 at every layer: the best patch for them is none. Cost: at most 1 + (grid size - 1)
 * + L * (grid size - 2) probes per harmful prompt.
 */
import type { LayerTargetInfo } from '../controller/metadata.js';
import { replyNll, type NllCalibration } from '../eval/coherence.js';
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
  /** 'first-token' (default), 'keyword' or 'coherent' (see the module comment). */
  criterion?: 'first-token' | 'keyword' | 'coherent';
  /** 'keyword' / 'coherent': reply tokens generated per probe (default 8) and the judge id (default arditi-keywords). */
  tokens?: number;
  judge?: string;
  /** 'coherent': the reply_nll threshold (calibrateNllThreshold on unsteered replies of the same length). */
  nllCalibration?: NllCalibration;
}

export interface PromptTargets {
  /** [L]; NaN everywhere when no gain of the grid made the prompt refuse. */
  targets: Float32Array;
  refusedUnpatched: boolean;
  /** The least uniform gain that made it refuse (0 when it refused unpatched, null when none did). */
  uniformGain: number | null;
  passes: number;
}

function checkOptions(model: { numLayers: number; hiddenSize: number }, o: LayerTargetOptions): Required<LayerTargetOptions> {
  const criterion = o.criterion ?? 'first-token';
  if (criterion !== 'first-token' && criterion !== 'keyword' && criterion !== 'coherent') throw new RangeError(`layer-target criterion must be 'first-token', 'keyword' or 'coherent', got ${String(criterion)}`);
  const nllCalibration = o.nllCalibration ?? { value: NaN, quantile: NaN, n: 0, set: '', method: 'unsteered-replies-quantile-linear' as const };
  if (criterion === 'coherent' && !(Number.isFinite(nllCalibration.value) && nllCalibration.value > 0)) {
    throw new RangeError(`the 'coherent' layer-target criterion needs a reply_nll calibration with a positive value, got ${JSON.stringify(o.nllCalibration)}`);
  }
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
  return { direction: d, alpha: o.alpha, refusalTokenIds: o.refusalTokenIds, grid, margin: o.margin ?? 0, positions, criterion, tokens, judge, nllCalibration };
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
    if (o.criterion !== 'first-token') {
      const r = await model.generate({ inputIds: ids, maxNewTokens: o.tokens, steering, steerPromptPositions: o.positions });
      if (!(await getJudge(o.judge).judge(r.text)).refused) return false;
      if (o.criterion === 'keyword') return true;
      const { nll } = await replyNll(model, ids, r.tokenIds);
      return nll !== null && nll <= o.nllCalibration.value;
    }
    const logits = await model.nextTokenLogits(ids, { steering, positions: o.positions });
    return refusalScore(logits, o.refusalTokenIds) > o.margin;
  };
  const refusedUnpatched = await refuses(null);
  if (refusedUnpatched) return { targets: new Float32Array(L), refusedUnpatched, uniformGain: 0, passes };
  // the least uniform gain that refuses (grid ascending, 0 excluded: already tried)
  const ascending = [...o.grid].reverse().slice(1);
  let start = -1;
  for (const u of ascending) {
    if (await refuses(new Float32Array(L).fill(u))) {
      start = u;
      break;
    }
  }
  if (start < 0) return { targets: new Float32Array(L).fill(NaN), refusedUnpatched, uniformGain: null, passes };
  const g = new Float32Array(L).fill(start);
  const below = o.grid.filter((v) => v < start);
  for (let l = L - 1; l >= 0; l--) {
    for (const v of below) {
      const before = g[l]!;
      g[l] = v;
      if (!(await refuses(g))) {
        g[l] = before;
        break;
      }
    }
  }
  return { targets: g, refusedUnpatched, uniformGain: start, passes };
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
  let turned = 0;
  let unpatched = 0;
  let uniformSum = 0;
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
    if (t.refusedUnpatched) unpatched++;
    else if (t.uniformGain !== null) {
      turned++;
      uniformSum += t.uniformGain;
    }
    opts.onProgress?.(searched, harmfulTotal);
  }
  return {
    targets,
    info: {
      method: 'least-refusal-patch',
      criterion:
        o.criterion === 'first-token'
          ? { kind: 'first-token', margin: o.margin }
          : o.criterion === 'keyword'
            ? { kind: 'keyword', tokens: o.tokens, judge: o.judge }
            : { kind: 'coherent', tokens: o.tokens, judge: o.judge, calibration: o.nllCalibration },
      grid: [...o.grid],
      refusal_token_ids: [...o.refusalTokenIds],
      positions: o.positions as 'last' | 'all',
      alpha: o.alpha,
      order: 'least-uniform-gain, then last-to-first',
      benign_target: 0,
      harmful_rows: searched,
      refused_unpatched: unpatched,
      turned_by_patch: turned,
      no_target: searched - unpatched - turned,
      mean_uniform_gain: turned ? uniformSum / turned : null,
      probes: passes,
    },
  };
}
