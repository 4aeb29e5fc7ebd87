/**
 * SteerableModel: one patched decoder inside transformers.js, with the operations the lab needs: a forward pass
 * with a steering matrix (logits + every layer's residual), steered generation (generate.ts) and chat formatting
 * (prompt.ts). Operations on one model run one at a time (a queue), because the instance patch carries the
 * steering of the operation in progress.
 */
import { Tensor } from '@huggingface/transformers';
import type { PatchReport } from '../onnx/patcher.js';
import type { DecodeEngine, DecodeOptions, DecodeResult, DecodeRow, OrtSessionLike, PromptPrefix } from './decode.js';
import { engineFromTjs } from './decode-tjs.js';
import { checkContext, checkIds, compareSteered, generateSteered, type GenerateDeps } from './generate.js';
import { formatChat, type ChatOptions, type ChatPrompt, type TjsTokenizer } from './prompt.js';
import type { ModelIdentity } from './model-id.js';
import { nextTokenLogits, replyLogits, type NextTokenPatch, type ReplyLogits } from './next-token.js';
import { replyText } from './reply-text.js';
import { disposeOutputs, SteeringPatch, toDense, type TjsModel, type TjsTensor } from './steering-patch.js';
import type { CompareOptions, CompareResult, Dense, Device, Dtype, ForwardResult, GenerateOptions, GenerateResult, SelfCheckResult } from './types.js';

export interface SteerableModelInit {
  identity: ModelIdentity;
  /** Where the model was loaded from (hub id or folder): what to fetch its files by. `identity` only names it. */
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
  /** Makes the patched graph's session without residual_stream (load.ts), where one can be made. */
  leanSession?: () => Promise<OrtSessionLike>;
  /** onnxruntime-node's intra-op threads chosen for the sessions (session-threads.ts); null = onnxruntime's default. */
  intraOpThreads?: number | null;
}

export class SteerableModel {
  /** The model's identity (model-id.ts): id (hub id or a local folder's content hash), display name, variant loaded. */
  readonly identity: ModelIdentity;
  /** identity.id: what artefacts and records carry and loads compare. */
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
  /** onnxruntime-node's intra-op threads of the sessions (1 for a tiny model: session-threads.ts); null = onnxruntime's default. */
  readonly intraOpThreads: number | null;
  /** config.max_position_embeddings: the longest sequence (prompt + reply) the model takes; null when unknown. */
  readonly contextLength: number | null;
  /** The load-time self-check (null when it was switched off). */
  selfCheck: SelfCheckResult | null = null;
  /** The transformers.js model object (patched instance). Prefer the methods of this class. */
  readonly model: TjsModel;
  private readonly patch: SteeringPatch;
  private queue: Promise<unknown> = Promise.resolve();
  private engine: DecodeEngine | null = null;
  private readonly leanFactory: (() => Promise<OrtSessionLike>) | null;
  private lean: OrtSessionLike | null = null;
  private disposed = false;

  constructor(init: SteerableModelInit) {
    this.identity = init.identity;
    this.id = init.identity.id;
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
    this.intraOpThreads = init.intraOpThreads ?? null;
    const maxPos = (init.model.config as { max_position_embeddings?: unknown }).max_position_embeddings;
    this.contextLength = Number.isInteger(maxPos) && (maxPos as number) > 0 ? (maxPos as number) : null;
    this.patch = new SteeringPatch(init.model, init.numLayers, init.hiddenSize);
    this.leanFactory = init.leanSession ?? null;
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

  /** Chat-formats one user message with the generation prompt and reports the positions WAS reads. */
  formatChat(user: string, opts?: ChatOptions): ChatPrompt {
    return formatChat(this.tokenizer, user, opts);
  }

  /**
   * One forward pass over B equal-length rows (no cache). steering: [L*H] (every row) or [B*L*H]; absent or null =
   * none (the model keeps no steering between calls). projection: [L*H] or [B*L*H] rows u_l (unit or zero), the
   * residual after layer l becomes x - (x.u_l)u_l + steering_l at every position; null/absent = none.
   * Returns logits [B, S, V] and residuals [B, L+1, S, H].
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
      const steering = opts.steering ?? null;
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

  private generateDeps(): GenerateDeps {
    return {
      model: this.model,
      patch: this.patch,
      numLayers: this.numLayers,
      hiddenSize: this.hiddenSize,
      vocabSize: this.vocabSize,
      contextLength: this.contextLength,
      eosTokenIds: this.eosTokenIds,
      decode: (ids) => replyText(this.tokenizer, ids),
      chatIds: (p) => this.formatChat(p).ids,
    };
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

  /**
   * Unsteered logits scoring `replyIds` after `promptIds` (row t predicts reply token t), and optionally the first
   * reply token's logits under a patch, sharing one prefix pass (or none, given the prefix decode() kept for this
   * prompt: DecodeOptions.keepPrefix). See next-token.ts replyLogits.
   */
  replyLogits(promptIds: number[], replyIds: number[], steer: NextTokenPatch | null = null, prefix: PromptPrefix | null = null): Promise<ReplyLogits> {
    return this.run(() => {
      if (promptIds.length === 0) throw new Error('replyLogits: the prompt has no tokens (pass the chat-formatted prompt ids)');
      checkContext(promptIds.length + Math.max(0, replyIds.length - 1), this.contextLength, 'replyLogits prompt + reply');
      return replyLogits(this.model, this.patch, this.vocabSize, promptIds, replyIds, steer, prefix);
    });
  }

  /** Steered generation (see generate.ts for the flow). steering: absent or null = none. */
  generate(opts: GenerateOptions): Promise<GenerateResult> {
    return this.run(() => generateSteered(this.generateDeps(), opts));
  }

  /** Base (row 0, no patch) and steered (row 1) replies from one batch-2 generation (generate.ts compareSteered). */
  compare(opts: CompareOptions): Promise<CompareResult> {
    return this.run(() => compareSteered(this.generateDeps(), opts));
  }

  /**
   * Steered decoding of B prompts per forward pass on the lean engine (decode.ts): per-row matrices, sampling, stops
   * and captures; the same tokens as generate() row by row.
   */
  decode(rows: readonly DecodeRow[], opts: DecodeOptions = {}): Promise<DecodeResult[]> {
    return this.run(() => this.decodeEngine().decode(rows, opts));
  }

  /** The decode engine over this model's session (made on first use). */
  decodeEngine(): DecodeEngine {
    this.engine ??= engineFromTjs(this.model, {
      numLayers: this.numLayers,
      hiddenSize: this.hiddenSize,
      vocabSize: this.vocabSize,
      contextLength: this.contextLength,
      eosTokenIds: this.eosTokenIds,
      lean: this.lean,
      cacheOnDevice: this.device === 'webgpu',
    });
    return this.engine;
  }

  /**
   * Lets decode() run the passes that read no residual (prefills, most decode steps) on a second session of the graph
   * without residual_stream, which runs at the unpatched graph's speed. It holds a second copy of the weights, so it
   * is opt-in; only Node with the graph on local disk can make one (false elsewhere: decode() then runs those passes on
   * the capturing session without fetching the residual).
   */
  useLeanSession(): Promise<boolean> {
    return this.run(async () => {
      if (this.lean) return true;
      if (!this.leanFactory) return false;
      this.lean = await this.leanFactory();
      this.engine = null;
      return true;
    });
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    await this.queue;
    this.disposed = true;
    await (this.lean as { release?: () => Promise<void> } | null)?.release?.();
    await this.model.dispose();
  }
}
