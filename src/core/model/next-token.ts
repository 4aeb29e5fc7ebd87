/**
 * The logits of the FIRST reply token (the next token after a formatted prompt) under a patch, exactly as a
 * generation with the same positions setting computes them:
 *   'all'  every prompt position carries the patch: one pass over the prompt;
 *   'last' the prompt minus its last token unsteered (KV cache), then the last token with the patch on that cache,
 *          the WAS flow of generate.ts;
 *   'new'  the new tokens only: the first reply token is predicted unpatched.
 * Used for the KL divergence of the first reply token's distribution, steered vs unsteered (Arditi et al.).
 *
 * replyLogits: the unsteered logits that score a reply (reply_nll) and, from the same unsteered prefix cache, the
 * first reply token's logits under a patch. The prefix pass is shared, so an eval record that measures both pays for
 * the prompt once, not twice.
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

/** What replyLogits returns: row t of `rows` ([T', V], T' = max(1, T)) predicts reply token t (row 0: the first). */
export interface ReplyLogits {
  rows: Float32Array;
  /** The first reply token's logits under the patch asked for (null when none was). */
  steeredFirst: Float32Array | null;
}

/**
 * Unsteered logits over a reply after its prompt, all batch 1: the prompt minus its last token (one pass, its KV
 * cache kept), then the last prompt token and the reply's tokens but its last on that cache. With `steer`, the first
 * reply token's logits under that patch too, as nextTokenLogits computes them: 'last' runs the last prompt token
 * patched on the same cache (bit for bit nextTokenLogits's flow), 'all' a patched pass over the whole prompt, and
 * 'new' (prompt unpatched) is row 0 itself.
 */
export async function replyLogits(model: TjsModel, patch: SteeringPatch, vocabSize: number, promptIds: number[], replyIds: number[], steer: NextTokenPatch | null): Promise<ReplyLogits> {
  checkIds(promptIds, vocabSize, 'replyLogits prompt ids');
  if (replyIds.length > 0) checkIds(replyIds, vocabSize, 'replyLogits reply ids');
  const positions = steer ? (steer.positions ?? 'last') : null;
  if (positions !== null && positions !== 'last' && positions !== 'all' && positions !== 'new') throw new Error(`positions must be 'last', 'all' or 'new', got ${String(positions)}`);
  const steering = steer?.steering ?? null;
  const projection = steer?.projection ?? null;
  if (steering) patch.checkSteering(steering, 1);
  if (projection) patch.checkProjection(projection, 1);
  const n = promptIds.length;
  const tail = [promptIds[n - 1]!, ...replyIds.slice(0, -1)];
  let cache: Awaited<ReturnType<typeof cacheFrom>> | undefined;
  try {
    patch.hooks = { steering: () => null };
    if (n > 1) {
      const out = await model.forward({ input_ids: int64([promptIds.slice(0, -1)]), attention_mask: ones(1, n - 1) });
      cache = cacheFrom(out);
      disposeOutputs(out, new Set(Object.values(cache)));
    }
    const feeds = { input_ids: int64([tail]), attention_mask: ones(1, n - 1 + tail.length) };
    const out = await model.forward(cache ? { ...feeds, past_key_values: cache } : feeds);
    const rows = toDense(out['logits']!).data.slice();
    disposeOutputs(out);
    let steeredFirst: Float32Array | null = null;
    if (positions === 'new') steeredFirst = rows.slice(0, vocabSize);
    else if (positions !== null) {
      patch.hooks = { steering: () => steering, projection: () => projection };
      const last = positions === 'last' && cache
        ? await model.forward({ input_ids: int64([[promptIds[n - 1]!]]), attention_mask: ones(1, n), past_key_values: cache })
        : await model.forward({ input_ids: int64([promptIds]), attention_mask: ones(1, n) });
      const logits = toDense(last['logits']!);
      const S = logits.dims[1]!;
      steeredFirst = logits.data.slice((S - 1) * vocabSize, S * vocabSize);
      disposeOutputs(last);
    }
    return { rows, steeredFirst };
  } finally {
    patch.hooks = null;
    if (cache) await (cache as unknown as { dispose(): Promise<void> }).dispose();
  }
}
