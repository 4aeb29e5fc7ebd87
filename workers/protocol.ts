/**
 * The one contract between the UI and the workers. The UI talks to a worker only through these types, with
 * Comlink: `const llm = Comlink.wrap<LlmWorkerApi>(new Worker(new URL('./llm.worker.ts', import.meta.url),
 * { type: 'module' }))`. Callbacks cross the boundary wrapped in `Comlink.proxy(fn)`; large arrays come back
 * transferred, so a Float32Array the UI receives is its own.
 *
 * The LLM worker offers the method's operations, each a thin call into the same core function the CLI uses
 * (compare -> compareFlow, computeDirection -> the core direction builders, collectControllerActivations ->
 * controllerActivations, evaluate -> the core eval runner, sweep -> the core sweep runner); the UI sends settings and
 * prompts and draws what comes back. It never builds a controller input, a steering matrix or a direction itself.
 *
 * Everything here is structured-clone friendly (plain objects, numbers, strings, typed arrays): no classes,
 * no tensors, no functions except the event callbacks. Types imported from src/core are type-only (erased).
 */
import type { ControllerMetadata, EpochMetrics, TrainControllerOptions } from '../src/core/controller/index.js';
import type { PromptRecord } from '../src/core/data/types.js';
import type { EvalRecord } from '../src/core/eval/records.js';
import type { SweepGrid, SweepReport, SweepRole } from '../src/core/eval/sweep-run.js';
import type { FitMode, FitResult } from '../src/core/method/fit.js';
import type { ConditionName } from '../src/core/method/conditions.js';
import type { PolicySettings } from '../src/core/method/settings.js';
import type { ModelIdentity } from '../src/core/model/model-id.js';
import type { LoadProgress, PatchReport, SelfCheckResult } from '../src/core/model/types.js';
import type { CastCondition } from '../src/core/steering/cast.js';
import type { LayerSeparation } from '../src/core/steering/diff-in-means.js';
import type { DirectionMetadata } from '../src/core/steering/direction-file.js';
import type { PolicyKind } from '../src/core/steering/policies.js';
import type { SteeringMode, SteeringSettings, SteerPositions } from '../src/core/steering/modes.js';

// ---------------------------------------------------------------------------------------------------------------
// LLM worker: hosts one steerable model (src/core/model/loadSteerableModel) at a time, with its active direction
// and controller, and runs the method on it.
// ---------------------------------------------------------------------------------------------------------------

/** Where onnxruntime-web runs the model. 'webgpu' only when navigator.gpu hands out an adapter. */
export type LlmDevice = 'webgpu' | 'wasm';
/**
 * What the UI may ask for. 'auto' = WebGPU when an adapter is offered and can run the requested dtype (fp16 and
 * q4f16 need shader-f16), else WASM. An explicit 'webgpu' that cannot be honoured fails instead.
 */
export type LlmDeviceRequest = 'auto' | LlmDevice;
export type LlmDtype = 'fp32' | 'fp16' | 'q8' | 'q4' | 'q4f16';

export interface LoadRequest {
  /** Hub id ("HuggingFaceTB/SmolLM2-135M-Instruct") or a folder name under `localModelPath`. */
  model: string;
  device?: LlmDeviceRequest;
  dtype?: LlmDtype;
  /** transformers.js model_file_name, e.g. 'model' or 'decoder_model_merged'. */
  modelFileName?: string;
  /** URL path (same origin) that holds local model folders, e.g. '/models/'. Default: transformers.js' '/models/'. */
  localModelPath?: string;
  /** false = never contact the hub (offline machines, tests). Default true. */
  allowRemoteModels?: boolean;
  /** Run the patched-vs-unpatched self-check after loading. Default true. */
  selfCheck?: boolean;
}

/** One progress event while loading (the core's LoadProgress; download events are thinned to ~1% steps per file). */
export type LoadProgressEvent = LoadProgress;

/** Where the residual stream was found and how the graph was patched (the patcher's PatchReport, plain data). */
export type ModelPatchSummary = PatchReport;

/** The load-time check that an injected vector lands exactly where it should (the core's SelfCheckResult). */
export type SelfCheckSummary = SelfCheckResult;

export interface LoadedModelInfo {
  /** What was asked for (hub id or folder name). */
  model: string;
  /**
   * The model's id, as directions, controllers and eval records record it (identity.id: the hub id, or for a local
   * folder a hash of its content). What the lab keys its saved artefacts and runs by.
   */
  modelId: string;
  /** The whole identity (SteerableModel.identity): id, display name (hub id or folder name), variant loaded. */
  identity: ModelIdentity;
  numLayers: number;
  hiddenSize: number;
  device: LlmDevice;
  /** Why this device: "navigator.gpu adapter: google / swiftshader", or why WebGPU was not used. */
  deviceReason: string;
  /** The dtype actually loaded (the core picks one when the request names none). */
  dtype: LlmDtype;
  patch: ModelPatchSummary;
  /** null when the load was asked to skip the self-check. */
  selfCheck: SelfCheckSummary | null;
  loadMs: number;
}

// --- artefacts ------------------------------------------------------------------------------------------------

/** A direction made active: checked against the loaded model (hidden size, layers, model identity; another variant warns). */
export interface DirectionInfo {
  metadata: DirectionMetadata;
  /** Content id (method + hash of the unit vector): what a controller trained with it records. */
  id: string;
  /** The file's bytes, as given or as computed (safetensors, the CLI's direction file format). */
  bytes: Uint8Array;
  cast: CastCondition | null;
  warnings: string[];
}

export interface UseDirectionRequest {
  /** A direction file (safetensors with Steerlab metadata). */
  bytes: Uint8Array;
  /** The CAST condition that goes with it (fitted when the direction was computed from datasets). */
  cast?: CastCondition | null;
  /** For error messages: the file or artefact name. */
  source?: string;
  /** Accept a direction made for another model of the same shape (the CLI's --allow-other-model); it then warns. */
  allowOtherModel?: boolean;
}

/** Another vector (JSON array, .npy, foreign safetensors) turned into a direction file for the loaded model. */
export interface ImportDirectionRequest {
  bytes: Uint8Array;
  fileName: string;
  /** A Steerlab direction file made for another model: warn instead of refusing (the CLI's --allow-other-model). */
  allowOtherModel?: boolean;
}

/** A controller made active: checked against the loaded model (layers, hidden size, model identity). */
export interface ControllerSummary {
  metadata: ControllerMetadata;
  /** Content id (controllerId): what eval records carry. */
  id: string;
  /**
   * In words: the controller drives another direction than the active one (its direction_id differs), was trained
   * on another variant of the model, or for another model (when allowed).
   */
  warnings: string[];
}

export interface UseControllerRequest {
  bytes: Uint8Array;
  source?: string;
  /** Accept a controller trained for another model of the same shape (the CLI's --allow-other-model); it then warns. */
  allowOtherModel?: boolean;
}

export interface ControlVectorFile {
  bytes: Uint8Array;
  /** The decoder layers with a non-zero row (llama.cpp cannot steer layer 0). */
  layers: number[];
  warnings: string[];
}

// --- steering settings (the CLI's --mode, --layer-range, positions, --alpha-scale, --norm-set, --norm-n) --------

/**
 * How the policy's rows reach the residual stream, as the lab's forms hold it: the same options as the CLI's flags,
 * under the same names. The worker turns it into the core's SteeringSettings (src/core/steering/modes.ts); for
 * relative alpha it measures the residual norms on the calibration prompts first (core residualNorms, seed-0 pick
 * of normN prompts, as the CLI does) and keeps them for the loaded model.
 */
export interface SteeringRequest {
  /** --mode: add (the paper) | clamp | ablate. */
  mode: SteeringMode;
  /** --layer-range: inclusive decoder layers (0-based); null = all. */
  layerRange: { first: number; last: number } | null;
  /** 'last' = last prompt token + new tokens (default), 'all' = every prompt position too, 'new' = new tokens only. */
  positions: SteerPositions;
  /** --alpha-scale. */
  alphaScale: 'absolute' | 'relative';
  /** relative: the calibration set (--norm-set, the CLI's default harmless-train) and --norm-n (default 32). */
  normSet?: PromptSetData;
  normN?: number;
}

/** Whether special-token strings in user text stay text (default) or become tokens, and which the prompt held. */
export interface SpecialTokensInfo {
  mode: 'text' | 'allowed';
  found: string[];
}

// --- compare (the playground) -----------------------------------------------------------------------------------

export interface SamplingRequest {
  temperature: number;
  topP: number;
  seed: number;
}

export interface CompareRequest {
  /** The user message (fitted into the context, then chat-formatted, as the CLI does). */
  prompt: string;
  maxNewTokens: number;
  /** null = greedy. */
  sampling: SamplingRequest | null;
  settings: PolicySettings;
  /** How a prompt too long for the context is shortened; default 'middle'. */
  fit?: FitMode;
  /** Mode, layer range, positions, alpha scale; absent = add, all layers, last prompt token + new tokens, absolute. */
  steering?: SteeringRequest;
  /** The CLI's --allow-special-tokens: special-token strings in the prompt become tokens (default: they stay text). */
  allowSpecialTokens?: boolean;
}

export type CompareEvent =
  /** A generated token of row 0 (base, no patch) or row 1 (steered). */
  | { type: 'token'; row: 0 | 1; index: number; id: number; text: string }
  /** Heat-strip row [L] of steered token `index` (cosine of each layer's residual with the direction). */
  | { type: 'heat'; index: number; values: Float32Array }
  /**
   * Several of the above, in order: the worker sends what a few milliseconds of decoding produced as one message, so
   * the page handles one message per batch, not three per token, and a Stop never waits behind a queue of them.
   */
  | { type: 'batch'; events: CompareEvent[] };

export type FinishReason = 'eos' | 'length' | 'abort';

export interface ReplyInfo {
  text: string;
  tokenIds: number[];
  /** 'abort' = cancel() was called. */
  finishReason: FinishReason;
}

/** The policy's read-outs for one observed prompt: what the playground's charts draw. */
export interface PolicyReadout {
  policy: PolicyKind;
  /** The controller's s and w for the prompt (also under base and manual: what WAS would do); null without one. */
  prediction: { scale: number; layerWeights: Float32Array } | null;
  /** Per-layer norm of the steering matrix's rows; null = no patch (off, or CAST whose condition did not hold). */
  rowNorms: Float32Array | null;
  cast: { similarity: number; active: boolean } | null;
}

export interface CompareReply extends PolicyReadout {
  base: ReplyInfo;
  steered: ReplyInfo;
  /** [T, L] heat strip of the steered reply (null without a direction). */
  heat: Float32Array | null;
  /** What the model saw (the message may have been shortened to fit the context). */
  fit: FitResult;
  /** The steering settings the flow ran with (relative alpha: with its calibration), as records store them. */
  steering: SteeringSettings;
  specialTokens: SpecialTokensInfo;
  ms: number;
}

/** The read-outs for other settings on the last compared prompt (the playground redraws while a control moves). */
export type PreviewReply = ({ ok: true } & PolicyReadout) | { ok: false; reason: string };

// --- jobs on datasets -------------------------------------------------------------------------------------------

/** A loaded prompt set: the UI fetches datasets (src/core/data), the worker chooses from them as the CLI does. */
export interface PromptSetData {
  name: string;
  prompts: PromptRecord[];
}

export interface DirectionJobSpec {
  method: 'embedding' | 'diff-in-means';
  /**
   * Harmful and harmless prompts: diff-in-means trains on them (n per class) and selects with Arditi's filters on
   * valN held-out prompts per class; both methods draw the separation plot and fit a CAST condition on the training
   * prompts. Omit both for the embedding direction alone.
   */
  harmful?: PromptSetData;
  harmless?: PromptSetData;
  n: number;
  valN: number;
  seed: number;
  /** Arditi's selection thresholds (core defaults when absent). */
  selection?: { klThreshold?: number; inducedRefusalThreshold?: number; pruneLayerFraction?: number };
}

export type JobProgressEvent = { stage: string; done: number; total: number };

export interface DirectionJobResult {
  /** The direction file (the same bytes `lab direction` writes); use it with useDirection. */
  bytes: Uint8Array;
  metadata: DirectionMetadata;
  id: string;
  /** Per residual index 0..L (empty without datasets). */
  separation: LayerSeparation[];
  cast: CastCondition | null;
  /** diff-in-means: the chosen candidate and Arditi's scores; embedding: which matrix's rows were averaged. */
  summary: string;
}

export interface ControllerActivationSpec {
  harmful: PromptSetData;
  benign: PromptSetData;
  /** Prompts per class. */
  n: number;
  /** Held-out share of each class. */
  valFraction: number;
  seed: number;
}

/** Controller inputs (input-layer residuals at the last prompt token) and labels, split as the CLI splits them. */
export interface ControllerTrainingSet {
  train: { features: Float32Array; labels: Uint8Array };
  validation: { features: Float32Array; labels: Uint8Array };
  inputLayers: number[];
  counts: { harmful: number; benign: number };
  /** The loaded model's identity, recorded in the trained controller. */
  model: ModelIdentity;
  /** The active direction's id, recorded in the trained controller (null when none is active). */
  directionId: string | null;
}

export interface EvalPlan {
  /** The IndexedDB run (src/core/eval/records-idb.ts) the records go to; a rerun skips what it holds (resume). */
  runId: string;
  /** Prompts per dataset, already chosen (src/core/method/prompt-sets.ts pick). */
  datasets: PromptSetData[];
  conditions: ConditionName[];
  /** Alpha, manual s and w, ActAdd coefficient and CAST strength of the steered conditions. */
  settings: PolicySettings;
  maxNewTokens: number;
  /** 'paper': temperature 0.7, top-p 0.9, per-prompt seeds from `seed`. */
  sampling: 'greedy' | 'paper';
  seed: number;
  fit: FitMode;
  /** A judge id of src/core/eval/judges.ts. */
  judge: string;
  /** Records decoded together (the lab picks it for the device: evalBatchForDevice); default DEFAULT_EVAL_BATCH. */
  batch?: number;
  /** The CLI's --allow-special-tokens (each record says which: special_tokens 'text' | 'allowed'). */
  allowSpecialTokens?: boolean;
  /** Mode, layer range, positions, alpha scale of the steered conditions (records carry them as `steering`). */
  steering?: SteeringRequest;
}

export type EvalProgressEvent = { done: number; total: number; skipped: number; record: EvalRecord | null };

/**
 * A steering sweep as `lab sweep` runs it (core runSweep): the base row, then every grid row (per policy: alpha x mode
 * x layer range x positions) on dev prompts, each through the core eval runner, then the Pareto frontier and the
 * operating point. Each row's records go to the IndexedDB run `sweep/<sweepId>/<row id>`: a rerun with the same
 * sweepId and settings resumes record by record (the base row's stored replies rebuild the reply_nll calibration).
 */
export interface SweepRequest {
  sweepId: string;
  /** Dev prompts, already chosen (prompt-sets.ts pick), each set with its role; every role needs one set. */
  datasets: (PromptSetData & { role: SweepRole })[];
  /** Which policies to sweep alpha for ('was', 'uniform', 'manual'). */
  policies: ConditionName[];
  /** The manual policy's s, w and switches (alpha is the grid's). */
  settings: PolicySettings;
  grid: SweepGrid;
  maxNewTokens: number;
  seed: number;
  fit: FitMode;
  /** A judge id of src/core/eval/judges.ts. */
  judge: string;
  /** Sample replies kept per row (default 3). */
  samples?: number;
  /** Records decoded together (as EvalPlan.batch). */
  batch?: number;
}

export type SweepProgressEvent = { row: string; rowIndex: number; rows: number; done: number; total: number };

/** The report `lab sweep` writes as sweep.json (null when cancelled: what was done stays stored for a resume). */
export interface SweepOutcome {
  report: SweepReport | null;
  cancelled: boolean;
}

export interface EvalOutcome {
  total: number;
  written: number;
  skipped: number;
  /** Records written with `error` (prompts the model could not take: unjudged). */
  failed: number;
  cancelled: boolean;
  /**
   * The run's run.json (core runSettings: content ids of model, datasets, direction, controller, CAST settings), as
   * `lab eval --out DIR` writes it: a run exported with it can be resumed by the CLI.
   */
  runJson: Record<string, unknown>;
}

// --- low level (tests, benchmarks, the debug page) --------------------------------------------------------------

/** Steering matrix [numLayers * hiddenSize], row l added to the residual after layer l; null = no steering. */
export type SteeringMatrix = Float32Array | null;

export interface GenerateRequest {
  /** A user message (formatted with the model's chat template, generation prompt added) or ready token ids. */
  prompt: { kind: 'chat'; user: string; system?: string } | { kind: 'ids'; ids: number[] };
  maxNewTokens: number;
  /** Omitted or null = greedy. */
  sampling?: { temperature?: number; topK?: number; topP?: number; seed?: number } | null;
  /** A fixed steering matrix [L*H] for every pass; omitted or null = none. */
  steering?: SteeringMatrix;
  /** 'last' (default): only the last prompt token and the new tokens carry the steering; 'all': every prompt token. */
  steerPromptPositions?: 'last' | 'all';
  /** Residual capture: 'prompt-last' = unsteered residual of the last prompt token; 'all' = that plus every step. */
  capture?: 'none' | 'prompt-last' | 'all';
}

export type GenerateEvent = { type: 'token'; index: number; id: number; text: string };

export interface GenerateResult {
  promptIds: number[];
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
  ms: number;
  /** Unsteered residual of the last prompt token, float32 [L+1, H] (capture 'prompt-last' or 'all'). */
  promptResiduals?: Float32Array;
  /** float32 [T, L+1, H]: row t = residual at the position whose logits produced token t (capture 'all'). */
  tokenResiduals?: Float32Array;
}

export interface ForwardRequest {
  /** One or more equal-length token id rows. */
  inputIds: number[][];
  /** Steering [L*H] or [B*L*H]; omitted or null = none. */
  steering?: SteeringMatrix;
}

export interface ForwardResult {
  /** float32 [batch, seq, vocab]. */
  logits: Float32Array;
  logitsDims: number[];
  /** float32 [batch, numLayers+1, seq, hidden]; index 0 = embedding output, l+1 = after layer l. */
  residuals: Float32Array;
  residualDims: number[];
}

/** What the worker's environment offers, before any model is loaded. */
export interface DeviceProbe {
  webgpu: boolean;
  /** The adapter runs f16 shaders (needed for fp16 / q4f16 graphs on WebGPU); absent = unknown. */
  shaderF16?: boolean;
  /** The adapter ("navigator.gpu adapter: google / swiftshader ...") or why there is none. */
  reason: string;
  /**
   * Why the adapter is a software (CPU) one, e.g. SwiftShader; null for a GPU or no adapter. 'auto' never picks a
   * software adapter (WASM is much faster), so the UI labels Auto by `webgpu && !software`.
   */
  software: string | null;
  crossOriginIsolated: boolean;
  hardwareConcurrency: number;
  /** Threads onnxruntime-web's WASM build runs with in the LLM worker (device.ts wasmThreads). */
  wasmThreads: number;
}

/**
 * Every call that takes an event callback resolves only after every event has reached it. One job runs at a time
 * (compare, computeDirection, collectControllerActivations, evaluate, sweep, generate); a second is refused with the
 * name of the running one. cancel() stops the running job after its current forward pass.
 */
export interface LlmWorkerApi {
  /** Reports whether WebGPU is usable here (UI shows it before loading). */
  probeDevice(): Promise<DeviceProbe>;
  /** Loads, patches and self-checks a model; replaces (disposes) any loaded one, with its direction and controller. */
  load(req: LoadRequest, onProgress?: (e: LoadProgressEvent) => void): Promise<LoadedModelInfo>;

  /** Makes a direction file active for the loaded model (refused when its shape does not fit). */
  useDirection(req: UseDirectionRequest): Promise<DirectionInfo>;
  /** Turns a user's vector (JSON array, .npy, safetensors) into a direction file for the loaded model, made active. */
  importDirection(req: ImportDirectionRequest): Promise<DirectionInfo>;
  /** Makes a controller file active for the loaded model (refused when made for another model or shape). */
  useController(req: UseControllerRequest): Promise<ControllerSummary>;
  /** Drops the active controller. */
  clearController(): Promise<void>;
  /**
   * The active direction as a llama.cpp control vector (GGUF): the manual policy's matrix s * w_l * alpha * d from
   * these settings, baked in per layer (llama.cpp has no controller), under the steering options' layer range and
   * alpha scale (relative alpha: norms already measured by a run). Refused for modes other than add; llama.cpp steers
   * every prompt position whatever `positions` says.
   */
  exportControlVector(settings: PolicySettings, steering?: SteeringRequest): Promise<ControlVectorFile>;

  /** Base and steered replies of one prompt from one batch-2 generation (core compareFlow), streamed together. */
  compare(req: CompareRequest, onEvent?: (e: CompareEvent) => void): Promise<CompareReply>;
  /**
   * The read-outs of other settings on the last compared prompt (no generation); with `steering`, the row norms are
   * those after its layer range and alpha scale (relative alpha: once its norms were measured by a compare).
   */
  preview(settings: PolicySettings, steering?: SteeringRequest): Promise<PreviewReply>;
  /** A direction: the paper's embedding direction or diff-in-means with Arditi's selection, with plot and CAST. */
  computeDirection(spec: DirectionJobSpec, onProgress?: (e: JobProgressEvent) => void): Promise<DirectionJobResult>;
  /** Controller training rows for the controller worker (the same activations `lab train-controller` caches). */
  collectControllerActivations(spec: ControllerActivationSpec, onProgress?: (e: JobProgressEvent) => void): Promise<ControllerTrainingSet>;
  /** Runs (or resumes) an evaluation with the core runner; records go to IndexedDB as they finish. */
  evaluate(plan: EvalPlan, onProgress?: (e: EvalProgressEvent) => void): Promise<EvalOutcome>;
  /** Runs (or resumes) a steering sweep with the core sweep runner; each row's records go to IndexedDB. */
  sweep(req: SweepRequest, onProgress?: (e: SweepProgressEvent) => void): Promise<SweepOutcome>;
  /** Stops the running job after its current step; no-op when idle. */
  cancel(): Promise<void>;

  /** Low level: one generation with a fixed matrix (tests, benchmarks, the debug page; the lab uses compare). */
  generate(req: GenerateRequest, onEvent?: (e: GenerateEvent) => void): Promise<GenerateResult>;
  /** Low level: one forward pass without cache: logits and the residual stream of every layer. */
  forward(req: ForwardRequest): Promise<ForwardResult>;
  /** Releases the model (GPU buffers, WASM memory). */
  dispose(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Controller worker (workers/controller.worker.ts): trains the WAS controller (src/core/controller, TensorFlow.js).
// Inference runs in the LLM worker, where the flow runs (src/core/controller/forward.ts).
// ---------------------------------------------------------------------------------------------------------------

/** Which tfjs backend the controller trains on, and why the ones tried before it were refused. */
export interface ControllerBackendInfo {
  backend: string;
  attempts: { name: string; ok: boolean; reason: string | null }[];
}

/** The training options of src/core/controller that are plain data (callbacks and the signal stay in the worker). */
export type ControllerTrainOptions = Omit<TrainControllerOptions, 'validation' | 'signal' | 'onBatch' | 'onEpoch' | 'now'>;

export interface ControllerTrainJob {
  /** float32 [rows * inputSize]: controller input features (concatenated input-layer residuals) per prompt. */
  features: Float32Array;
  /** uint8 [rows]: 1 = harmful (steer), 0 = benign. */
  labels: Uint8Array;
  validation?: { features: Float32Array; labels: Uint8Array };
  options: ControllerTrainOptions;
}

export type ControllerTrainEvent =
  | { type: 'batch'; epoch: number; batch: number; batches: number; loss: number }
  | { type: 'epoch'; metrics: EpochMetrics };

/** A trained controller: its metadata and its file bytes (src/core/controller/format.ts). */
export interface ControllerInfo {
  metadata: ControllerMetadata;
  bytes: Uint8Array;
}

export interface ControllerWorkerApi {
  /** Picks the tfjs backend (WASM, else CPU) and reports it. */
  init(): Promise<ControllerBackendInfo>;
  /** Trains a controller; onEvent streams batch losses and epoch metrics. Hand the bytes to the LLM worker to use it. */
  train(job: ControllerTrainJob, onEvent?: (e: ControllerTrainEvent) => void): Promise<ControllerInfo>;
  /** Stops a running train(), which then rejects with an AbortError. */
  cancel(): Promise<void>;
}
