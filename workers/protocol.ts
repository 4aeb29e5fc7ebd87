/**
 * The one contract between the UI and the workers. The UI talks to a worker only through these types, with
 * Comlink: `const llm = Comlink.wrap<LlmWorkerApi>(new Worker(new URL('./llm.worker.ts', import.meta.url),
 * { type: 'module' }))`. Callbacks cross the boundary wrapped in `Comlink.proxy(fn)`; large arrays come back
 * transferred, so a Float32Array the UI receives is its own.
 *
 * Everything here is structured-clone friendly (plain objects, numbers, strings, typed arrays): no classes,
 * no tensors, no functions except the event callbacks. Types imported from src/core are type-only (erased).
 */
import type { EpochMetrics, ControllerMetadata, TrainControllerOptions } from '../src/core/controller/index.js';
import type { LoadProgress, PatchReport, SelfCheckResult } from '../src/core/model/types.js';
import type { FitMode, FitResult } from '../src/core/method/fit.js';

// ---------------------------------------------------------------------------------------------------------------
// LLM worker: hosts one steerable model (src/core/model/loadSteerableModel) at a time.
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
  model: string;
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

/** Steering matrix [numLayers * hiddenSize], row l added to the residual after layer l; null = no steering. */
export type SteeringMatrix = Float32Array | null;

export interface GenerateRequest {
  /** A user message (formatted with the model's chat template, generation prompt added) or ready token ids. */
  prompt: { kind: 'chat'; user: string; system?: string } | { kind: 'ids'; ids: number[] };
  maxNewTokens: number;
  /** Omitted or null = greedy. */
  sampling?: { temperature?: number; topK?: number; topP?: number; seed?: number } | null;
  /** Per-call steering [L*H]; omitted = the matrix set by setSteering; null = none. */
  steering?: SteeringMatrix;
  /** 'last' (default): only the last prompt token and the new tokens carry the steering; 'all': every prompt token. */
  steerPromptPositions?: 'last' | 'all';
  /** Residual capture: 'prompt-last' = unsteered residual of the last prompt token; 'all' = that plus every step. */
  capture?: 'none' | 'prompt-last' | 'all';
}

/**
 * Fitting a user message into the loaded model's context (src/core/method/fit.ts, the same function the CLI uses):
 * the UI fits once, then observes and generates the fitted text, so the observation and the reply see one prompt.
 */
export interface FitRequest {
  user: string;
  system?: string;
  /** The reply's length: the fitted prompt leaves room for all of it. */
  maxNewTokens: number;
  /** 'middle' (head and tail around " [...] "), 'head', 'tail' or 'none' (untouched). */
  mode: FitMode;
}

/** The message to chat-format and the prompt's token counts before and after (plain data). */
export type FitSummary = FitResult;

export type GenerateEvent = { type: 'token'; index: number; id: number; text: string };

/**
 * The residual stream [L+1, H] (float32, as steered) at the position whose logits produced token `index`, streamed
 * while generating (generate's third callback). It arrives one step after its token (the next pass reads it), so
 * the last token's residual comes only with the result (capture 'all').
 */
export interface ResidualEvent { type: 'residual'; index: number; residual: Float32Array }

export type FinishReason = 'eos' | 'length' | 'abort';

export interface GenerateResult {
  promptIds: number[];
  tokenIds: number[];
  text: string;
  /** 'abort' = cancel() was called. */
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
  /** Per-call steering [L*H] or [B*L*H]; omitted = the matrix set by setSteering; null = none. */
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
  crossOriginIsolated: boolean;
  hardwareConcurrency: number;
}

export interface LlmWorkerApi {
  /** Reports whether WebGPU is usable here (UI shows it before loading). */
  probeDevice(): Promise<DeviceProbe>;
  /** Loads, patches and self-checks a model; replaces (disposes) any loaded one. */
  load(req: LoadRequest, onProgress?: (e: LoadProgressEvent) => void): Promise<LoadedModelInfo>;
  /** Sets the steering matrix used by later generate/forward calls that bring none; null clears it. */
  setSteering(matrix: SteeringMatrix): Promise<void>;
  /**
   * Streams tokens through onEvent; resolves when generation stops (eos, max tokens, or cancel()), and only after
   * every token event has reached onEvent. Same for load() and its progress events.
   */
  generate(req: GenerateRequest, onEvent?: (e: GenerateEvent) => void, onResidual?: (e: ResidualEvent) => void): Promise<GenerateResult>;
  /**
   * Shortens a user message so that its chat-formatted prompt plus maxNewTokens fits the model's context; an
   * unknown context or mode 'none' returns it untouched. Rejects when the context cannot hold even the template.
   */
  fit(req: FitRequest): Promise<FitSummary>;
  /** Stops the running generate() after its current step; no-op when idle. */
  cancel(): Promise<void>;
  /** One forward pass without cache: logits and the residual stream of every layer. */
  forward(req: ForwardRequest): Promise<ForwardResult>;
  tokenize(text: string): Promise<number[]>;
  /** Releases the model (GPU buffers, WASM memory). */
  dispose(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------------
// Controller worker (workers/controller.worker.ts): trains and runs the WAS controller (src/core/controller, tfjs),
// which maps the residuals at the last prompt token to (scale s, layer weights w).
// ---------------------------------------------------------------------------------------------------------------

/** Which tfjs backend the controller runs on, and why the ones tried before it were refused. */
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

/** A trained or loaded controller: its metadata and its file bytes (src/core/controller/format.ts). */
export interface ControllerInfo {
  metadata: ControllerMetadata;
  bytes: Uint8Array;
}

export interface ControllerPredictionBatch {
  /** float32 [rows]: global steering scale s per prompt. */
  scales: Float32Array;
  /** float32 [rows * numLayers], row-major: layer weights w per prompt. */
  layerWeights: Float32Array;
}

export interface ControllerWorkerApi {
  /** Picks the tfjs backend (WASM, else CPU) and reports it. */
  init(): Promise<ControllerBackendInfo>;
  /** Trains a controller and makes it the active one; onEvent streams batch losses and epoch metrics. */
  train(job: ControllerTrainJob, onEvent?: (e: ControllerTrainEvent) => void): Promise<ControllerInfo>;
  /** Stops a running train(), which then rejects with an AbortError. */
  cancel(): Promise<void>;
  /** Loads a controller file; `expect` refuses one made for another model shape. */
  load(bytes: Uint8Array, expect?: { numLayers: number; hiddenSize: number }): Promise<ControllerInfo>;
  predict(features: Float32Array, rows: number): Promise<ControllerPredictionBatch>;
  unload(): Promise<void>;
}
