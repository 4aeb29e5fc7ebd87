/**
 * SteerableModel: one patched decoder inside transformers.js, with the operations the lab needs: a forward pass
 * with a steering matrix (logits + every layer's residual), steered generation (generate.ts) and chat formatting
 * (prompt.ts). Operations on one model run one at a time (a queue), because the instance patch carries the
 * steering of the operation in progress.
 */
import { Tensor } from '@huggingface/transformers';
import type { PatchReport } from '../onnx/patcher.js';
import { checkContext, checkIds, generateSteered } from './generate.js';
import { formatChat, type ChatOptions, type ChatPrompt, type TjsTokenizer } from './prompt.js';
import { nextTokenLogits, type NextTokenPatch } from './next-token.js';
import { disposeOutputs, SteeringPatch, toDense, type TjsModel, type TjsTensor } from './steering-patch.js';
import type { Dense, Device, Dtype, ForwardResult, GenerateOptions, GenerateResult, SelfCheckResult } from './types.js';

export interface SteerableModelInit {
  id: string;
  /** Where the model was loaded from (hub id or folder): what to fetch its files by. `id` is only its identity. */
  source: string;
  model: TjsModel;
  tokenizer: TjsTokenizer;
  report: PatchReport;
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  device: Device;
  dtype: Dtype;
  /** The original graph's transformers.js model_file_name ('model' | 'decoder_model_merged'). */
  modelFileName: string;
}

export class SteerableModel {
  /** The model's identity in artefacts and records (a hub id, or a local folder's name). */
  readonly id: string;
  /** Where it was loaded from (hub id or folder path): files are fetched by this, never by `id`. */
  readonly source: string;
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  readonly report: PatchReport;
  readonly tokenizer: TjsTokenizer;
  readonly device: Device;
  readonly dtype: Dtype;
  readonly modelFileName: string;
  /** config.max_position_embeddings: the longest sequence (prompt + reply) the model takes; null when unknown. */
  readonly contextLength: number | null;
  /** The load-time self-check (null when it was switched off). */
  selfCheck: SelfCheckResult | null = null;
  /** The transformers.js model object (patched instance). Prefer the methods of this class. */
  readonly model: TjsModel;
  private readonly patch: SteeringPatch;
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;

  constructor(init: SteerableModelInit) {
    this.id = init.id;
    this.source = init.source;
    this.model = init.model;
    this.tokenizer = init.tokenizer;
    this.report = init.report;
    this.numLayers = init.numLayers;
    this.hiddenSize = init.hiddenSize;
    this.vocabSize = init.vocabSize;
    this.device = init.device;
    this.dtype = init.dtype;
    this.modelFileName = init.modelFileName;
    const maxPos = (init.model.config as { max_position_embeddings?: unknown }).max_position_embeddings;
    this.contextLength = Number.isInteger(maxPos) && (maxPos as number) > 0 ? (maxPos as number) : null;
    this.patch = new SteeringPatch(init.model, init.numLayers, init.hiddenSize);
  }

  /** Token ids that end a reply (generation_config, else config). */
  get eosTokenIds(): number[] {
    const g = (this.model.generation_config ?? {}) as { eos_token_id?: number | number[] | null };
    const c = this.model.config as { eos_token_id?: number | number[] | null };
    const e = g.eos_token_id ?? c.eos_token_id ?? null;
    return e === null ? [] : Array.isArray(e) ? e : [e];
  }

  private run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.disposed) return Promise.reject(new Error(`model ${this.id} was disposed`));
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Persistent steering for later forward() / generate() calls that do not pass their own:
   * [L*H] (every batch row) or [B*L*H]; null = none. Mutates this model's state.
   */
  setSteering(matrix: Float32Array | null): void {
    if (matrix !== null) this.patch.checkSteering(matrix, Math.max(1, Math.floor(matrix.length / (this.numLayers * this.hiddenSize))));
    this.patch.defaultSteering = matrix;
  }

  /** Chat-formats one user message with the generation prompt and reports the positions WAS reads. */
  formatChat(user: string, opts?: ChatOptions): ChatPrompt {
    return formatChat(this.tokenizer, user, opts);
  }

  /**
   * One forward pass over B equal-length rows (no cache). steering: undefined = setSteering's matrix, null = none.
   * projection: [L*H] or [B*L*H] rows u_l (unit or zero), the residual after layer l becomes x - (x.u_l)u_l +
   * steering_l at every position; null/absent = none. Returns logits [B, S, V] and residuals [B, L+1, S, H].
   */
  forward(inputIds: number[][], opts: { steering?: Float32Array | null; projection?: Float32Array | null } = {}): Promise<ForwardResult> {
    return this.run(async () => {
      if (!Array.isArray(inputIds) || inputIds.length === 0) throw new Error('forward: inputIds must be a non-empty array of rows of token ids');
      const S = inputIds[0]!.length;
      inputIds.forEach((row, b) => {
        checkIds(row, this.vocabSize, `forward inputIds[${b}]`);
        checkContext(row.length, this.contextLength, `forward inputIds[${b}]`);
        if (row.length !== S) throw new Error(`forward: all rows must have the same length (row 0 has ${S}, row ${b} has ${row.length}); pad or call per row`);
      });
      const B = inputIds.length;
      const steering = opts.steering === undefined ? this.patch.defaultSteering : opts.steering;
      if (steering !== null) this.patch.checkSteering(steering, B);
      const projection = opts.projection ?? null;
      if (projection !== null) this.patch.checkProjection(projection, B);
      const flat = new BigInt64Array(B * S);
      inputIds.forEach((row, b) => row.forEach((id, i) => (flat[b * S + i] = BigInt(id))));
      let residuals: Dense | null = null;
      this.patch.hooks = { steering: () => steering, projection: () => projection, residual: (r) => (residuals = r) };
      try {
        const out = await this.model.forward({
          input_ids: new Tensor('int64', flat, [B, S]) as unknown as TjsTensor,
          attention_mask: new Tensor('int64', new BigInt64Array(B * S).fill(1n), [B, S]) as unknown as TjsTensor,
        });
        const logits = toDense(out['logits']!);
        disposeOutputs(out);
        return { logits, residuals: residuals! };
      } finally {
        this.patch.hooks = null;
      }
    });
  }

  /**
   * Logits [V] of the first reply token after `ids` under a patch, as a generation with the same `positions` computes
   * them ('last' default: prefix unsteered, last prompt token patched; 'all'; 'new' = unpatched). See next-token.ts.
   */
  nextTokenLogits(ids: number[], patch: NextTokenPatch = {}): Promise<Float32Array> {
    return this.run(() => {
      checkContext(ids.length, this.contextLength, 'nextTokenLogits ids');
      return nextTokenLogits(this.model, this.patch, this.vocabSize, ids, patch);
    });
  }

  /** Steered generation (see generate.ts for the flow). steering: undefined = setSteering's matrix. */
  generate(opts: GenerateOptions): Promise<GenerateResult> {
    return this.run(() =>
      generateSteered(
        {
          model: this.model,
          patch: this.patch,
          numLayers: this.numLayers,
          hiddenSize: this.hiddenSize,
          vocabSize: this.vocabSize,
          contextLength: this.contextLength,
          eosTokenIds: this.eosTokenIds,
          decode: (ids) => this.tokenizer.decode(ids, { skip_special_tokens: true }),
          chatIds: (p) => this.formatChat(p).ids,
        },
        { ...opts, steering: opts.steering === undefined ? this.patch.defaultSteering : opts.steering },
      ),
    );
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    await this.queue;
    this.disposed = true;
    await this.model.dispose();
  }
}
