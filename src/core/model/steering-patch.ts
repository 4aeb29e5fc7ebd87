/**
 * The instance patch: wraps `forward` of ONE transformers.js model object (never its class: subclassing breaks
 * transformers.js's class-to-type lookup) so that every forward pass, including each step of generate(), receives
 * the current `steering` and `projection` tensors, and the `residual_stream` output is taken out before transformers.js sees it
 * (it would otherwise travel through generate's output handling; only `present*` outputs feed the KV cache).
 *
 * transformers.js facts this relies on (4.3.1, src/models/modeling_utils.js):
 * - generate() calls `this.forward(model_inputs)` at every step, so an own property `forward` on the instance wins;
 * - decoder_forward passes `pick(inputs, session.inputNames)` to the session, so an extra `steering` key reaches
 *   the graph as long as the graph declares it;
 * - use_cache_branch (merged graphs), position_ids and the empty past (from session input metadata) are all
 *   filled in by decoder_forward, so the wrapper touches nothing but `steering`, `projection`, `logits_from` (0 =
 *   the head on every position, unless the caller set it: lastLogitsOnly) and `residual_stream`.
 */
import { Tensor } from '@huggingface/transformers';
import type { Dense } from './types.js';
import { checkProjectionRows } from './projection-rows.js';
import { LOGITS_FROM_INPUT } from '../onnx/patcher.js';

/** The parts of a transformers.js tensor this module uses. */
export interface TjsTensor {
  type: string;
  data: ArrayLike<number | bigint> & { length: number };
  dims: number[];
  location?: string;
  to(type: string): TjsTensor;
  dispose(): void;
}

export type ModelInputs = Record<string, unknown> & { input_ids?: TjsTensor };
export type ModelOutputs = Record<string, TjsTensor>;

/** The parts of a transformers.js causal-LM object this module uses. */
export interface TjsModel {
  forward(inputs: ModelInputs): Promise<ModelOutputs>;
  generate(opts: Record<string, unknown>): Promise<unknown>;
  dispose(): Promise<unknown>;
  config: Record<string, unknown>;
  generation_config: Record<string, unknown> | null;
  sessions: Record<string, { inputNames: readonly string[]; outputNames: readonly string[] }>;
}

/** What one patched forward pass asks for and reports. Set for the duration of one operation. */
export interface ForwardHooks {
  /** Steering for this pass, [L*H] or [B*L*H]; null = zero steering. */
  steering(inputs: ModelInputs): Float32Array | null;
  /**
   * Projection rows for this pass (u_l: unit or zero, the residual after layer l becomes x - (x.u_l)u_l + steering_l),
   * [L*H] or [B*L*H]; null or absent = none.
   */
  projection?(inputs: ModelInputs): Float32Array | null;
  /** The full residual stream of this pass, [B, L+1, S, H]. */
  residual?(res: Dense): void;
}

/**
 * Internal to src/core/model: SteerableModel holds it privately and sets `hooks` for the duration of one queued
 * operation (forward or generate), then clears them; outside an operation every pass runs with zero steering.
 */
export class SteeringPatch {
  /** Hooks of the operation in progress; null = zero steering. */
  hooks: ForwardHooks | null = null;
  private zeros = new Map<number, TjsTensor>();
  /** logits_from = 0 (every position) when the graph has that input, else null. */
  private readonly fromAll: TjsTensor | null;

  constructor(
    readonly model: TjsModel,
    readonly numLayers: number,
    readonly hiddenSize: number,
  ) {
    const session = model.sessions['model'];
    if (!session) throw new Error(`the loaded model has no 'model' session (sessions: ${Object.keys(model.sessions).join(', ')})`);
    if (!session.inputNames.includes('steering')) {
      throw new Error(`the loaded graph has no 'steering' input (inputs: ${session.inputNames.join(', ')}); was the patched file used?`);
    }
    if (!session.inputNames.includes('projection')) {
      throw new Error(`the loaded graph has no 'projection' input (inputs: ${session.inputNames.join(', ')}); was it patched by an older Steerlab?`);
    }
    if (!session.outputNames.includes('residual_stream')) {
      throw new Error(`the loaded graph has no 'residual_stream' output (outputs: ${session.outputNames.join(', ')})`);
    }
    const original = model.forward.bind(model);
    // A graph patched with logits_from (the head's first position) gets 0 here unless the caller set it: every
    // position, as transformers.js expects its logits.
    this.fromAll = session.inputNames.includes(LOGITS_FROM_INPUT) ? (new Tensor('int64', BigInt64Array.of(0n), [1]) as unknown as TjsTensor) : null;
    model.forward = async (inputs: ModelInputs) => {
      const batch = inputs.input_ids?.dims[0] ?? 1;
      const matrix = this.hooks ? this.hooks.steering(inputs) : null;
      const projection = this.hooks?.projection?.(inputs) ?? null;
      const from = this.fromAll && !inputs[LOGITS_FROM_INPUT] ? { [LOGITS_FROM_INPUT]: this.fromAll } : {};
      const out = await original({ ...inputs, ...from, steering: this.tensorFor(matrix, batch), projection: this.projectionTensorFor(projection, batch) });
      const rs = out['residual_stream'];
      delete out['residual_stream'];
      if (!rs) throw new Error('the patched graph returned no residual_stream output');
      const res = toDense(rs);
      this.hooks?.residual?.(res);
      return out;
    };
  }

  /**
   * Inputs for a pass whose logits are not read but at its last position `seqLen - 1` (a prefill kept for its
   * cache): the head then runs on that position only, where the graph has the logits_from input; none otherwise.
   */
  lastLogitsOnly(seqLen: number): ModelInputs {
    if (!this.fromAll || seqLen < 2) return {};
    return { [LOGITS_FROM_INPUT]: new Tensor('int64', BigInt64Array.of(BigInt(seqLen - 1)), [1]) as unknown as TjsTensor };
  }

  /** Checks a steering matrix against [L*H] or [batch*L*H]; returns the steer_batch it implies. */
  checkSteering(m: Float32Array, batch: number): number {
    const lh = this.numLayers * this.hiddenSize;
    if (!(m instanceof Float32Array)) {
      throw new Error(`steering must be a Float32Array of ${lh} (= ${this.numLayers} layers x ${this.hiddenSize} hidden) values, got ${Object.prototype.toString.call(m)}`);
    }
    let sb: number;
    if (m.length === lh) sb = 1;
    else if (m.length === batch * lh) sb = batch;
    else {
      throw new Error(
        `steering has ${m.length} values; expected ${lh} (${this.numLayers} layers x ${this.hiddenSize} hidden)` +
          (batch > 1 ? ` or ${batch * lh} (batch ${batch} x layers x hidden)` : ''),
      );
    }
    for (let i = 0; i < m.length; i++) {
      if (!Number.isFinite(m[i]!)) throw new Error(`steering value ${i} (layer ${Math.floor((i % lh) / this.hiddenSize)}) is ${m[i]}; expected a finite number`);
    }
    return sb;
  }

  /**
   * Checks a projection matrix like a steering matrix, and each row: zero (off) or a unit vector (|norm - 1| <= 1e-3;
   * any other norm would scale the component instead of removing it). Returns the steer_batch it implies.
   */
  checkProjection(m: Float32Array, batch: number): number {
    return checkProjectionRows(m, this.numLayers, this.hiddenSize, batch);
  }

  tensorFor(matrix: Float32Array | null, batch: number): TjsTensor {
    if (matrix === null) return this.zeroTensor();
    const sb = this.checkSteering(matrix, batch);
    return new Tensor('float32', matrix, [sb, this.numLayers, this.hiddenSize]) as unknown as TjsTensor;
  }

  projectionTensorFor(matrix: Float32Array | null, batch: number): TjsTensor {
    if (matrix === null) return this.zeroTensor();
    const sb = this.checkProjection(matrix, batch);
    return new Tensor('float32', matrix, [sb, this.numLayers, this.hiddenSize]) as unknown as TjsTensor;
  }

  /** One shared zero [1, L, H] tensor (both inputs read it; the session never writes its inputs). */
  private zeroTensor(): TjsTensor {
    let z = this.zeros.get(1);
    if (!z) {
      z = new Tensor('float32', new Float32Array(this.numLayers * this.hiddenSize), [1, this.numLayers, this.hiddenSize]) as unknown as TjsTensor;
      this.zeros.set(1, z);
    }
    return z;
  }
}

/** A transformers.js tensor as float32 data + dims (fp16 outputs are converted). */
export function toDense(t: TjsTensor): Dense {
  const f = t.type === 'float32' ? t : t.to('float32');
  return { data: f.data as unknown as Float32Array, dims: [...f.dims] };
}

/** [L+1, H] slice of a residual stream [B, L+1, S, H] at (batch b, position p). */
export function residualAt(res: Dense, b: number, p: number): Float32Array {
  const [, L1, S, H] = res.dims as [number, number, number, number];
  const out = new Float32Array(L1 * H);
  for (let k = 0; k < L1; k++) {
    const off = ((b * L1 + k) * S + p) * H;
    out.set(res.data.subarray(off, off + H), k * H);
  }
  return out;
}

/** Frees GPU-resident outputs of a pass that are not kept (KV of an observation pass on WebGPU). */
export function disposeOutputs(out: ModelOutputs, keep: Set<unknown> = new Set()): void {
  for (const t of Object.values(out)) {
    if (t && t.location === 'gpu-buffer' && !keep.has(t)) t.dispose();
  }
}
