/**
 * Public types of the steerable model. Kept in one small file so that workers and the UI can import them without
 * pulling in transformers.js.
 */
import type { PatchReport } from '../onnx/patcher.js';

export type Device = 'cpu' | 'wasm' | 'webgpu';
export type Dtype = 'fp32' | 'fp16' | 'q8' | 'q4' | 'q4f16';

/** One progress event of a load. `file` is the path inside the model folder (e.g. 'onnx/model.onnx'). */
export type LoadProgress =
  | { stage: 'download'; file: string; loaded: number; total: number | null; done: boolean; fromCache: boolean }
  | { stage: 'patch'; file: string }
  | { stage: 'session'; file: string }
  | { stage: 'self-check' }
  | { stage: 'ready' };

export interface LoadOptions {
  device?: Device;
  dtype?: Dtype;
  /** transformers.js model_file_name of the original graph ('model' or 'decoder_model_merged'); guessed when absent. */
  modelFileName?: string;
  progress?: (p: LoadProgress) => void;
  /** Run the injection self-check at load (default true). A failure rejects the load. */
  selfCheck?: boolean;
}

export interface SelfCheckResult {
  ok: boolean;
  /** The layer whose steering row was set to the probe vector. */
  layer: number;
  /** max |residual[layer+1] - (zero run + vector)| over positions and hidden units, absolute. */
  injection_max_error: number;
  /** max |residual[0..layer] - zero run| (must stay unchanged), absolute. */
  upstream_max_error: number;
  /** The bound both errors were held to: relative tolerance of the stream dtype times the residual scale. */
  tolerance: number;
  /** max |logits(patched, zero steering) - logits(unpatched)|; null when the unpatched model was not loaded. */
  identity_max_logit_diff: number | null;
  /** The projection input at the same layer (u: a unit probe vector); null when not checked. */
  projection: {
    /** max over positions |residual[layer+1] . u| with projection row u and zero steering (ablation). */
    ablation_max_error: number;
    /** max over positions |residual[layer+1] . u - clamp_target| with steering row clamp_target * u (clamping). */
    clamp_max_error: number;
    clamp_target: number;
    /** max elementwise |residual[layer+1] - (x - (x.u)u + t u)| over both runs, x = the zero run's residual. */
    projection_max_error: number;
    /** max over positions |x . u| in the zero run: the size of what the ablation removed. */
    removed_component: number;
  } | null;
}

/** A dense float32 array with its shape (row-major). */
export interface Dense {
  data: Float32Array;
  dims: number[];
}

export interface ForwardResult {
  /** [B, S, V], float32 (fp16 graphs are converted). */
  logits: Dense;
  /** [B, L+1, S, H]: index 0 = embedding output, index l+1 = residual after layer l including its steering row. */
  residuals: Dense;
}

/** What a per-pass steering callback sees before each forward pass of a generation. */
export interface StepContext {
  /** 0 = the pass that carries the last prompt token (or the whole prompt), t = the pass that feeds generated token t-1. */
  step: number;
  /** Unsteered residual of the last prompt token, [L+1, H] (observed before any steering), when it was observed. */
  promptResidual: Float32Array | null;
  /** Residual at the last position of the previous pass ([L+1, H]), as steered; null at step 0. */
  previousResidual: Float32Array | null;
  /** Token ids generated so far (not including the prompt). */
  generated: number[];
}

/**
 * A per-pass steering callback: the matrix [L*H] for the next forward pass, or null for none. (The method's named
 * policies, was / uniform / manual / ..., are SteeringPolicy in src/core/steering/policies.ts; runFlow turns one
 * into such a callback.)
 */
export type StepSteering = (ctx: StepContext) => Float32Array | null;

export interface SamplingOptions {
  temperature?: number;
  topP?: number;
  topK?: number;
  /** Seed of this generation's own random stream (does not touch transformers.js's global `random`). */
  seed?: number;
}

export interface GenerateOptions {
  prompt?: string;
  /** Token ids of an already formatted prompt (batch 1). */
  inputIds?: number[];
  maxNewTokens?: number;
  /** A [L*H] matrix applied to every steered pass, a policy called before each pass, or null (no steering). */
  steering?: Float32Array | StepSteering | null;
  /**
   * Which positions carry the patch: 'last' (default) the last prompt token and the new tokens; 'all' every prompt
   * token too; 'new' the new tokens only (the first reply token is predicted unsteered).
   */
  steerPromptPositions?: 'last' | 'all' | 'new';
  /**
   * Projection rows [L*H] (u_l unit or zero) applied on the same passes as the steering: the residual after layer l
   * becomes x - (x.u_l)u_l + steering_l. A function is asked on every such pass, right after `steering` (so a policy
   * that decides both at step 0 can hand over its projection). null/absent = none.
   */
  projection?: Float32Array | (() => Float32Array | null) | null;
  /** Absent = greedy. */
  sampling?: SamplingOptions | null;
  /** Called once per generated token with its id and the text it added. */
  onToken?: (tokenId: number, textDelta: string) => void;
  /** Any transformers.js-style streamer (put(ids: bigint[][]), end()). */
  streamer?: { put(ids: bigint[][]): void; end(): void } | null;
  signal?: AbortSignal;
  capture?: 'none' | 'prompt-last' | 'all';
}

export interface GenerateResult {
  text: string;
  tokenIds: number[];
  finishReason: 'eos' | 'length' | 'abort';
  /** Unsteered residual of the last prompt token, [L+1, H] (capture 'prompt-last' or 'all'). */
  promptResiduals?: Float32Array;
  /** [T, L+1, H]: row t = residual at the position whose logits produced token t (row 0 = last prompt token, steered). */
  tokenResiduals?: Float32Array;
}

export type { PatchReport };

/** Base and steered replies of one prompt from one batch-2 generation (generate.ts compareSteered). */
export interface CompareOptions {
  /** Token ids of the formatted prompt. */
  inputIds: number[];
  maxNewTokens?: number;
  /** Row 1's patch: called before each pass with the unsteered residual of the last prompt token; null = none. */
  steering: StepSteering;
  /** Row 1's projection rows, as GenerateOptions.projection (row 0 never gets any). */
  projection?: GenerateOptions['projection'];
  steerPromptPositions?: GenerateOptions['steerPromptPositions'];
  /** Absent = greedy. With sampling each row draws from its own stream, seeded alike. */
  sampling?: SamplingOptions | null;
  /** Called once per generated token of a running row (row 0 = base, 1 = steered). */
  onToken?: (row: number, tokenId: number, textDelta: string) => void;
  /** Keep the steered row's residual at every new token (tokenResiduals). */
  captureSteered?: boolean;
  /**
   * The steered row's residual [L+1, H] at the position whose logits produce token `index`, as each pass runs (the
   * token itself follows a moment later); not called once the steered row has finished.
   */
  onSteeredResidual?: (index: number, residual: Float32Array) => void;
  signal?: AbortSignal;
}

export interface CompareResult {
  /** Row 0: no patch. */
  base: GenerateResult;
  /** Row 1: the policy's matrix. */
  steered: GenerateResult;
  /** Unsteered residual of the last prompt token, [L+1, H]. */
  promptResidual: Float32Array | null;
  /** [T, L+1, H] of the steered row (captureSteered): row t = residual at the position whose logits produced token t. */
  tokenResiduals?: Float32Array;
}
