/**
 * Identity check: the patched graph with zero steering must compute what the original graph computes. Loads the
 * ORIGINAL graph through plain transformers.js (same device, dtype and file resolution), runs both on a probe and
 * reports max |logits difference|. Costs a second session, so it is opt-in (verify --identity, tests).
 */
import { AutoModelForCausalLM, Tensor } from '@huggingface/transformers';
import { maxLogitDiff, probeIds } from './self-check.js';
import type { SteerableModel } from './steerable.js';
import { disposeOutputs, toDense, type TjsModel, type TjsTensor } from './steering-patch.js';
import type { Dense } from './types.js';

/** Logits [1, S, V] of the unpatched model on `ids`. */
export async function unpatchedLogits(sm: SteerableModel, idsList: number[][]): Promise<Dense[]> {
  const model = (await AutoModelForCausalLM.from_pretrained(sm.source, {
    dtype: sm.dtype,
    device: sm.device,
    model_file_name: sm.modelFileName,
  } as never)) as unknown as TjsModel;
  try {
    const out: Dense[] = [];
    for (const ids of idsList) {
      const S = ids.length;
      const o = await model.forward({
        input_ids: new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, S]) as unknown as TjsTensor,
        attention_mask: new Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]) as unknown as TjsTensor,
      });
      out.push(toDense(o['logits']!));
      disposeOutputs(o);
    }
    return out;
  } finally {
    await model.dispose();
  }
}

/** max |logits(patched, zero steering) - logits(original)| on the probe; also recorded in sm.selfCheck. */
export async function checkIdentity(sm: SteerableModel, ids: number[] = probeIds(sm.vocabSize)): Promise<number> {
  const [ref] = await unpatchedLogits(sm, [ids]);
  const mine = (await sm.forward([ids], { steering: null })).logits;
  const diff = maxLogitDiff(mine, ref!);
  if (sm.selfCheck) sm.selfCheck.identity_max_logit_diff = diff;
  return diff;
}
