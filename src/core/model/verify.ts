/**
 * verifyModel: load a model steerable, run the injection self-check and (optionally) the identity check against the
 * unpatched graph, and report every number instead of throwing on a failed check (the CLI's `verify`).
 */
import { unpatchedLogits } from './identity.js';
import { loadSteerableModel } from './load.js';
import { maxLogitDiff, probeIds, RELATIVE_TOLERANCE, runSelfCheck } from './self-check.js';
import type { LoadOptions, SelfCheckResult } from './types.js';

export interface VerifyReport {
  ok: boolean;
  model: string;
  /** The model's identity (model-id.ts): hub id or content hash, display name, variant loaded. */
  model_id: string;
  model_name: string;
  model_variant: { dtype: string; graph: string };
  topology: string;
  num_layers: number;
  hidden_size: number;
  stream_dtype: string;
  dtype: string;
  device: string;
  model_file_name: string;
  layer: number;
  injection_max_error: number;
  upstream_max_error: number;
  tolerance: number;
  self_check_ok: boolean;
  /** The projection input's part of the self-check (ablation and clamping at the same layer). */
  projection: SelfCheckResult['projection'];
  identity_max_logit_diff: number | null;
  /** relative tolerance of the stream dtype x max(1, largest unpatched logit). */
  identity_tolerance: number | null;
  identity_ok: boolean | null;
}

export async function verifyModel(idOrPath: string, opts: Omit<LoadOptions, 'selfCheck'> & { identity?: boolean } = {}): Promise<VerifyReport> {
  const sm = await loadSteerableModel(idOrPath, { ...opts, selfCheck: false });
  try {
    const streamDtype = sm.report.stream_dtype;
    const ids = probeIds(sm.vocabSize);
    opts.progress?.({ stage: 'self-check' });
    const check = await runSelfCheck({ numLayers: sm.numLayers, hiddenSize: sm.hiddenSize, streamDtype, forward: (i, o) => sm.forward(i, o) }, ids);
    let diff: number | null = null;
    let idTol: number | null = null;
    if (opts.identity) {
      const [ref] = await unpatchedLogits(sm, [ids]);
      const mine = (await sm.forward([ids], { steering: null })).logits;
      diff = maxLogitDiff(mine, ref!);
      let big = 1;
      for (const v of ref!.data) big = Math.max(big, Math.abs(v));
      idTol = RELATIVE_TOLERANCE[streamDtype] * big;
    }
    const identityOk = diff === null ? null : diff <= idTol!;
    return {
      ok: check.ok && identityOk !== false,
      model: idOrPath,
      model_id: sm.identity.id,
      model_name: sm.identity.name,
      model_variant: { ...sm.identity.variant },
      topology: sm.report.topology,
      num_layers: sm.numLayers,
      hidden_size: sm.hiddenSize,
      stream_dtype: streamDtype,
      dtype: sm.dtype,
      device: sm.device,
      model_file_name: sm.modelFileName,
      layer: check.layer,
      injection_max_error: check.injection_max_error,
      upstream_max_error: check.upstream_max_error,
      tolerance: check.tolerance,
      self_check_ok: check.ok,
      projection: check.projection,
      identity_max_logit_diff: diff,
      identity_tolerance: idTol,
      identity_ok: identityOk,
    };
  } finally {
    await sm.dispose();
  }
}
