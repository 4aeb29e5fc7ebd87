/// <reference types="vite/client" />
/**
 * Which models the lab offers: the embedded default and a short list of hub chat models with ONNX weights for
 * transformers.js. Pure data, no DOM.
 */
import type { LlmDtype } from '../../../workers/protocol.js';

export interface ModelChoice {
  /** Hub id, or a folder name under `localModelPath`. */
  id: string;
  label: string;
  /** Same-origin URL folder holding local models; absent = a hub model. */
  localModelPath?: string;
  /** Dtypes the repo ships (file suffixes under onnx/). */
  dtypes: LlmDtype[];
  defaultDtype: LlmDtype;
  /** Optional artefacts next to the model (paths inside its folder), fetched when present. */
  artefacts?: { direction?: string; controller?: string };
  /**
   * Arditi's direction-selection thresholds this model needs, where they differ from the paper's (KL 0.1, induced
   * refusal 0); the Direction tab starts from them when the model is loaded.
   */
  directionSelection?: { klThreshold: number; inducedRefusalThreshold: number };
  note?: string;
}

/**
 * The folder of the models this lab serves (models/ in dev, dist/models/ in the build), as a path on this origin.
 * The LLM worker resolves it against its own script URL, not the page's, so it must not be relative: the page turns
 * Vite's base (relative, './', in the build, so the app works from any sub-path) into an absolute path here. In Node
 * (tests) there is no page and the base is '/'.
 */
export const LOCAL_MODELS_PATH: string = ((): string => {
  const folder = `${import.meta.env.BASE_URL}models/`;
  const page = (globalThis as { location?: { href: string } }).location?.href;
  return page ? new URL(folder, page).pathname : folder;
})();

/**
 * The embedded default model: ONE constant, so switching to the trained organism is one line
 * (`export const DEFAULT_MODEL = ORGANISM_MODEL;`) once models/organism/ holds its files.
 */
export const TINY_TEST_MODEL: ModelChoice = {
  id: 'tiny-test',
  label: 'Tiny test model (random weights, 4 layers)',
  localModelPath: LOCAL_MODELS_PATH,
  dtypes: ['fp32'],
  defaultDtype: 'fp32',
  note: 'Built by `npm run lab -- build-test-model --out models/tiny-test --preset tiny --seed 7`; its text is noise.',
};

export const ORGANISM_MODEL: ModelChoice = {
  id: 'organism',
  label: 'Steerlab organism (tiny trained chat model)',
  localModelPath: LOCAL_MODELS_PATH,
  // The shipped organism also has onnx/model_q4f16.onnx (fused GroupQueryAttention, head size 32); the lab still
  // offers only the exact fp32 graph until the q4f16 path is checked in the browser (WASM, WebGPU with shader-f16).
  dtypes: ['fp32'],
  defaultDtype: 'fp32',
  artefacts: { direction: 'direction.safetensors', controller: 'controller.safetensors' },
  // Its refusal is one template: adding a diff-in-means direction to a harmless prompt raises the refusal score but
  // never above Arditi's 0, and ablating it moves harmless replies by a KL of about 0.77 with the Direction tab's
  // 16 + 8 prompts per class; with the paper's thresholds no candidate passes.
  directionSelection: { klThreshold: 1, inducedRefusalThreshold: -2 },
};

export const DEFAULT_MODEL: ModelChoice = ORGANISM_MODEL;

/**
 * Hub chat models. The dtype lists follow the onnx-community export layout (onnx/model.onnx, model_fp16,
 * model_quantized (q8), model_q4, model_q4f16) that these repos use; ASSUMPTION: not verified file by file against
 * each repo (the search tool had no listing for them). A dtype a repo lacks fails at load with the file name tried.
 */
export const HUB_MODELS: readonly ModelChoice[] = [
  { id: 'HuggingFaceTB/SmolLM2-135M-Instruct', label: 'SmolLM2 135M Instruct', dtypes: ['fp32', 'fp16', 'q8', 'q4', 'q4f16'], defaultDtype: 'q4f16' },
  { id: 'HuggingFaceTB/SmolLM2-360M-Instruct', label: 'SmolLM2 360M Instruct', dtypes: ['fp32', 'fp16', 'q8', 'q4', 'q4f16'], defaultDtype: 'q4f16' },
  { id: 'onnx-community/Qwen2.5-0.5B-Instruct', label: 'Qwen2.5 0.5B Instruct', dtypes: ['fp32', 'fp16', 'q8', 'q4', 'q4f16'], defaultDtype: 'q4f16' },
  { id: 'onnx-community/Llama-3.2-1B-Instruct', label: 'Llama 3.2 1B Instruct', dtypes: ['fp32', 'fp16', 'q8', 'q4', 'q4f16'], defaultDtype: 'q4f16', note: 'fp32 ships as external data (about 5 GB)' },
  { id: 'onnx-community/Qwen3-0.6B-ONNX', label: 'Qwen3 0.6B', dtypes: ['fp32', 'fp16', 'q8', 'q4', 'q4f16'], defaultDtype: 'q4f16' },
];

/** What the model picker offers: the default first, then the hub list. */
export const MODEL_CHOICES: readonly ModelChoice[] = [DEFAULT_MODEL, ...HUB_MODELS];

/** A hub id typed by the user: "owner/name", letters, digits, '-', '_', '.'. */
export function checkHubId(id: string): string | null {
  const t = id.trim();
  if (t === '') return 'enter a model id such as HuggingFaceTB/SmolLM2-135M-Instruct';
  if (!/^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(t)) return `"${t}" is not a hub id of the form owner/name`;
  if (t.includes('..')) return `"${t}" must not contain ".."`;
  return null;
}

/**
 * The dtype to ask for on a device: fp16 graphs need shader-f16 on WebGPU and q8 (DynamicQuantizeLinear +
 * MatMulInteger) has no WebGPU kernels, so on WebGPU prefer q4f16/q4/fp32 among what the model offers.
 */
export function preferredDtype(choice: ModelChoice, device: 'webgpu' | 'wasm'): LlmDtype {
  // Shipped models are small: their own default (fp32) is exact and fast enough everywhere.
  if (choice.localModelPath) return choice.defaultDtype;
  const order: LlmDtype[] = device === 'webgpu' ? ['q4f16', 'q4', 'fp32', 'fp16', 'q8'] : ['q8', 'q4', 'fp32', 'q4f16', 'fp16'];
  if (choice.dtypes.length === 1) return choice.dtypes[0]!;
  return order.find((d) => choice.dtypes.includes(d)) ?? choice.defaultDtype;
}
