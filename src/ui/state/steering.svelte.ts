/**
 * The steering options of the lab's forms (the CLI's --mode, --layer-range, positions, --alpha-scale and
 * --allow-special-tokens), shared by the playground and the eval panel, and how they go to the LLM worker
 * (SteeringRequest). The worker turns them into the core's settings; nothing here computes a patch.
 */
import type { SteerPositions, SteeringMode, SteeringSettings } from '../../core/steering/modes.js';
import { fetchDataset } from '../../core/data/index.js';
import type { PromptSetData, SteeringRequest } from '../../../workers/protocol.js';

/** The CLI's --norm-set default: relative alpha is a fraction of the residual norms measured on these prompts. */
export const NORM_SET = 'harmless-train';

export const steering = $state({
  mode: 'add' as SteeringMode,
  /** Layer range on/off and its inclusive decoder layers. */
  ranged: false,
  first: 0,
  last: 0,
  positions: 'last' as SteerPositions,
  alphaScale: 'absolute' as 'absolute' | 'relative',
  normN: 32,
  /** --allow-special-tokens: special-token strings in user text become real tokens (default: they stay text). */
  allowSpecialTokens: false,
});

export const POSITION_LABELS: Record<SteerPositions, string> = {
  last: 'last prompt token + new tokens',
  all: 'all prompt positions + new tokens',
  new: 'new tokens only',
};

let normSet: PromptSetData | null = null;

/** The request for the worker (plain data); relative alpha carries its calibration prompts, fetched once. */
export async function steeringRequest(numLayers: number): Promise<SteeringRequest> {
  const req = steeringRequestNow(numLayers);
  if (req.alphaScale === 'relative') {
    const set: PromptSetData = normSet ?? (await fetchDataset(NORM_SET, { baseUrl: `${import.meta.env.BASE_URL}data/` }).then((d) => ({ name: d.name, prompts: d.prompts })));
    normSet = set;
    req.normSet = set;
  }
  return req;
}

/** The request without calibration prompts (for previews: the worker uses norms it has already measured). */
export function steeringRequestNow(numLayers: number): SteeringRequest {
  const clamp = (v: number) => Math.min(Math.max(0, Math.trunc(v)), Math.max(0, numLayers - 1));
  return {
    mode: steering.mode,
    layerRange: steering.ranged ? { first: clamp(steering.first), last: clamp(steering.last) } : null,
    positions: steering.positions,
    alphaScale: steering.alphaScale,
    normN: steering.normN,
    ...(steering.alphaScale === 'relative' && normSet ? { normSet } : {}),
  };
}

/** The settings a run used, in words, with the CLI's flag names (shown on reply boxes and runs). */
export function describeSteering(s: SteeringSettings): string {
  const layers = s.layers ? `${s.layers.first}-${s.layers.last}` : 'all';
  const alpha = s.alpha.scale === 'relative' ? `relative (norms of ${s.alpha.calibration.set}, n=${s.alpha.calibration.n})` : 'absolute';
  return `--mode ${s.mode} · --layer-range ${layers} · positions: ${POSITION_LABELS[s.positions]} · --alpha-scale ${alpha}`;
}

/** Loads a sweep row's steering settings into the form (the Sweep view's click). */
export function loadSteering(s: SteeringSettings): void {
  steering.mode = s.mode;
  steering.ranged = s.layers !== null;
  if (s.layers) {
    steering.first = s.layers.first;
    steering.last = s.layers.last;
  }
  steering.positions = s.positions;
  steering.alphaScale = s.alpha.scale;
  if (s.alpha.scale === 'relative') steering.normN = s.alpha.calibration.n;
}
