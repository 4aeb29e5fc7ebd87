/**
 * The one identity of a model, the same in every CLI command and in the lab, recorded in directions, controllers,
 * eval runs (run.json and every record) and activation caches, and checked whenever one of them is loaded:
 *
 *   hub model      id = the hub id ("HuggingFaceTB/SmolLM2-135M-Instruct"), name = the hub id
 *   local folder   id = "sha256:" + 16 hex digits of the folder's CONTENT (never its path or folder name; the rule
 *                  is in model-content-id.ts), name = the folder's name (display only)
 *   both           variant = { dtype, graph }: the graph file actually loaded (e.g. q4f16, onnx/model_q4f16.onnx)
 *
 * Another id is another model: loading an artefact made for one is an error unless explicitly allowed
 * (--allow-other-model). Another variant of the same id (a quantised graph of the same weights) is a warning.
 * This module is pure (types and checks, no imports), so the controller code and the UI can use it cheaply.
 */
import type { Dtype } from './types.js';

/** Which graph file of the model was loaded. */
export interface ModelVariant {
  dtype: Dtype;
  /** Path inside the model folder, e.g. 'onnx/model_q4f16.onnx'. */
  graph: string;
}

export interface ModelIdentity {
  /** Hub id, or 'sha256:<16 hex>' for a local folder. What artefacts record and loads compare. */
  id: string;
  /** For people: the hub id, or the folder's name. Never compared. */
  name: string;
  variant: ModelVariant;
}

/** What an artefact or a run says about the model it was made with (its JSON fields). */
export interface RecordedModel {
  model_id: string;
  model_name?: string;
  model_variant?: ModelVariant;
}

export class ModelIdentityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelIdentityError';
  }
}

/** "fp32 onnx/model.onnx" */
export function describeVariant(v: ModelVariant | undefined): string {
  return v ? `${v.dtype} ${v.graph}` : 'an unrecorded variant';
}

/** "organism (sha256:0123456789abcdef)"; a hub model is just its id. */
export function describeModel(m: { id: string; name?: string | undefined }): string {
  return m.name && m.name !== m.id ? `${m.name} (${m.id})` : m.id;
}

/** The fields an artefact or run records about the model it was made with. */
export function recordedModel(m: ModelIdentity): Required<RecordedModel> {
  return { model_id: m.id, model_name: m.name, model_variant: { ...m.variant } };
}

export interface ModelMatch {
  /** Non-blocking differences (another variant of the same model; another model when allowed). */
  warnings: string[];
}

/**
 * Checks that an artefact (`what`, e.g. 'direction models/organism/direction.safetensors') was made with the loaded
 * model: another model id is an error unless `allowOtherModel` (then a warning); another variant of the same model
 * (a quantised graph) is a warning.
 */
export function checkSameModel(recorded: RecordedModel, loaded: ModelIdentity, what: string, opts: { allowOtherModel?: boolean } = {}): ModelMatch {
  const warnings: string[] = [];
  const made = describeModel({ id: recorded.model_id, name: recorded.model_name });
  if (recorded.model_id !== loaded.id) {
    const msg = `${what} was made for model ${made}, but the loaded model is ${describeModel(loaded)}`;
    if (!opts.allowOtherModel) {
      throw new ModelIdentityError(`${msg}; load the model it was made for, or accept it explicitly (--allow-other-model; allowOtherModel in the API)`);
    }
    warnings.push(`${msg} (accepted: allow other model)`);
    return { warnings };
  }
  const v = recorded.model_variant;
  if (v && (v.dtype !== loaded.variant.dtype || v.graph !== loaded.variant.graph)) {
    warnings.push(`${what} was made with ${describeVariant(v)} of ${made}; the loaded variant is ${describeVariant(loaded.variant)} (same model, other graph: results may differ slightly)`);
  }
  return { warnings };
}

/**
 * Checks the optional model_name / model_variant fields an artefact's metadata may carry (files made before the
 * identity rule have neither); returns a problem in words, or null.
 */
export function recordedModelProblem(m: Record<string, unknown>): string | null {
  if (m.model_name !== undefined && typeof m.model_name !== 'string') return `model_name must be a string, got ${JSON.stringify(m.model_name)}`;
  const v = m.model_variant;
  if (v === undefined) return null;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return `model_variant must be an object {dtype, graph}, got ${JSON.stringify(v)}`;
  const o = v as Record<string, unknown>;
  if (typeof o.dtype !== 'string' || o.dtype === '' || typeof o.graph !== 'string' || o.graph === '') {
    return `model_variant must be {dtype: string, graph: string}, got ${JSON.stringify(v)}`;
  }
  return null;
}

/** The identity as the builders of artefacts take it (direction files, controllers): id, name, variant. */
export function modelFields(m: ModelIdentity): { modelId: string; modelName: string; modelVariant: ModelVariant } {
  return { modelId: m.id, modelName: m.name, modelVariant: { ...m.variant } };
}
