/**
 * The logits of the FIRST reply token (the next token after a formatted prompt) under a patch, exactly as a
 * generation with the same positions setting computes them:
 *   'all'  every prompt position carries the patch: one pass over the prompt;
 *   'last' the prompt minus its last token unsteered (KV cache), then the last token with the patch on that cache,
 *          the WAS flow of generate.ts;
 *   'new'  the new tokens only: the first reply token is predicted unpatched.
 * Used for the KL divergence of the first reply token's distribution, steered vs unsteered (Arditi et al.).
 */
import { cacheFrom, checkIds, int64, ones } from './generate.js';
import { disposeOutputs, toDense, type SteeringPatch, type TjsModel } from './steering-patch.js';

export interface NextTokenPatch {
  steering?: Float32Array | null;
  projection?: Float32Array | null;
  positions?: 'last' | 'all' | 'new';
}

export async function nextTokenLogits(model: TjsModel, patch: SteeringPatch, vocabSize: number, ids: number[], p: NextTokenPatch): Promise<Float32Array> {
  checkIds(ids, vocabSize, 'nextTokenLogits ids');
  const positions = p.positions ?? 'last';
  if (positions !== 'last' && positions !== 'all' && positions !== 'new') throw new Error(`positions must be 'last', 'all' or 'new', got ${String(positions)}`);
  const steering = positions === 'new' ? null : (p.steering ?? null);
  const projection = positions === 'new' ? null : (p.projection ?? null);
  if (steering) patch.checkSteering(steering, 1);
  if (projection) patch.checkProjection(projection, 1);
  const n = ids.length;
  const last = (logits: ReturnType<typeof toDense>) => {
    const V = logits.dims[2]!;
    const S = logits.dims[1]!;
    return logits.data.slice((S - 1) * V, S * V);
  };
  let cache: Awaited<ReturnType<typeof cacheFrom>> | undefined;
  try {
    if (positions !== 'all' && n > 1) {
      patch.hooks = { steering: () => null };
      const out = await model.forward({ input_ids: int64([ids.slice(0, -1)]), attention_mask: ones(1, n - 1) });
      cache = cacheFrom(out);
      disposeOutputs(out, new Set(Object.values(cache)));
    }
    patch.hooks = { steering: () => steering, projection: () => projection };
    const out = cache
      ? await model.forward({ input_ids: int64([ids.slice(-1)]), attention_mask: ones(1, n), past_key_values: cache })
      : await model.forward({ input_ids: int64([ids]), attention_mask: ones(1, n) });
    const logits = last(toDense(out['logits']!));
    disposeOutputs(out);
    return logits;
  } finally {
    patch.hooks = null;
    if (cache) await (cache as unknown as { dispose(): Promise<void> }).dispose();
  }
}
