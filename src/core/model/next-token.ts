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
 * the prompt once, not twice; and with the prefix the decode engine kept while generating the reply, not at all.
 */
import { cacheFrom, cacheFromPrefix, checkIds, int64, ones } from './generate.js';
import type { PromptPrefix } from './decode.js';
import { disposeOutputs, toDense, type SteeringPatch, type TjsModel } from './steering-patch.js';

export interface NextTokenPatch {
  steering?: Float32Array | null;
  projection?: Float32Array | null;
  positions?: 'last' | 'all' | 'new';
}

type Cache = ReturnType<typeof cacheFrom>;

/** The patch's positions and rows, checked against the model (rows for one sequence). */
function checkedPatch(patch: SteeringPatch, p: NextTokenPatch): { positions: 'last' | 'all' | 'new'; steering: Float32Array | null; projection: Float32Array | null } {
  const positions = p.positions ?? 'last';
  if (positions !== 'last' && positions !== 'all' && positions !== 'new') throw new Error(`positions must be 'last', 'all' or 'new', got ${String(positions)}`);
  const steering = positions === 'new' ? null : (p.steering ?? null);
  const projection = positions === 'new' ? null : (p.projection ?? null);
  if (steering) patch.checkSteering(steering, 1);
  if (projection) patch.checkProjection(projection, 1);
  return { positions, steering, projection };
}

/**
 * The KV cache of the prompt minus its last token, unsteered (undefined for a one-token prompt: no prefix). A prefix
 * the decode engine kept for exactly these ids is used as it is (the same bits a batch-1 pass gives), else one pass.
 */
async function unsteeredPrefix(model: TjsModel, patch: SteeringPatch, ids: number[], kept?: PromptPrefix | null): Promise<Cache | undefined> {
  if (ids.length < 2) return undefined;
  if (kept && kept.ids.length === ids.length - 1 && kept.ids.every((t, i) => t === ids[i])) return cacheFromPrefix(kept);
  patch.hooks = { steering: () => null };
  const out = await model.forward({ input_ids: int64([ids.slice(0, -1)]), attention_mask: ones(1, ids.length - 1), ...patch.lastLogitsOnly(ids.length - 1) });
  const cache = cacheFrom(out);
  disposeOutputs(out, new Set(Object.values(cache)));
  return cache;
}

/** Logits [V] after `ids` under the patch: the last token on the prefix cache when given, else the whole prompt. */
async function patchedLastRow(model: TjsModel, patch: SteeringPatch, ids: number[], cache: Cache | undefined, steering: Float32Array | null, projection: Float32Array | null): Promise<Float32Array> {
  const n = ids.length;
  patch.hooks = { steering: () => steering, projection: () => projection };
  const out = cache
    ? await model.forward({ input_ids: int64([ids.slice(-1)]), attention_mask: ones(1, n), past_key_values: cache })
    : await model.forward({ input_ids: int64([ids]), attention_mask: ones(1, n) });
  const logits = toDense(out['logits']!);
  disposeOutputs(out);
  const V = logits.dims[2]!;
  const S = logits.dims[1]!;
  return logits.data.slice((S - 1) * V, S * V);
}

async function disposeCache(cache: Cache | undefined): Promise<void> {
  if (cache) await (cache as unknown as { dispose(): Promise<void> }).dispose();
}

export async function nextTokenLogits(model: TjsModel, patch: SteeringPatch, vocabSize: number, ids: number[], p: NextTokenPatch): Promise<Float32Array> {
  checkIds(ids, vocabSize, 'nextTokenLogits ids');
  const { positions, steering, projection } = checkedPatch(patch, p);
  let cache: Cache | undefined;
  try {
    if (positions !== 'all') cache = await unsteeredPrefix(model, patch, ids);
    return await patchedLastRow(model, patch, ids, cache, steering, projection);
  } finally {
    patch.hooks = null;
    await disposeCache(cache);
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
export async function replyLogits(model: TjsModel, patch: SteeringPatch, vocabSize: number, promptIds: number[], replyIds: number[], steer: NextTokenPatch | null, prefix: PromptPrefix | null = null): Promise<ReplyLogits> {
  checkIds(promptIds, vocabSize, 'replyLogits prompt ids');
  if (replyIds.length > 0) checkIds(replyIds, vocabSize, 'replyLogits reply ids');
  const p = steer ? checkedPatch(patch, steer) : null;
  const n = promptIds.length;
  const tail = [promptIds[n - 1]!, ...replyIds.slice(0, -1)];
  let cache: Cache | undefined;
  try {
    cache = await unsteeredPrefix(model, patch, promptIds, prefix);
    patch.hooks = { steering: () => null };
    const feeds = { input_ids: int64([tail]), attention_mask: ones(1, n - 1 + tail.length) };
    const out = await model.forward(cache ? { ...feeds, past_key_values: cache } : feeds);
    const rows = toDense(out['logits']!).data.slice();
    disposeOutputs(out);
    let steeredFirst: Float32Array | null = null;
    if (p?.positions === 'new') steeredFirst = rows.slice(0, vocabSize);
    else if (p) steeredFirst = await patchedLastRow(model, patch, promptIds, p.positions === 'last' ? cache : undefined, p.steering, p.projection);
    return { rows, steeredFirst };
  } finally {
    patch.hooks = null;
    await disposeCache(cache);
  }
}
