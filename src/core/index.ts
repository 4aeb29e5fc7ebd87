/**
 * Steerlab's core as a library: the names a user of the method needs, browser-safe (no node:* anywhere below this
 * file; a test bundles it for the browser). In Node, import src/core/index-node.ts ('steerlab/core'), which adds
 * the file helpers. Everything else under src/core is internal: its names may change.
 *
 *   model        loadSteerableModel -> SteerableModel (identity, forward, generate, formatChat)
 *   identity     modelIdentity, fetchFileReader (a model folder over HTTP), ModelIdentity
 *   layers       residualIndex (0..L), decoderLayer (0..L-1): distinct types, one apart
 *   direction    embeddingDirectionOfModel (paper Eq. 7), diffInMeansOfModel (Arditi et al.), direction files
 *   controller   controllerActivations, trainController, encodeController; artefacts from bytes, checked for a model
 *   method       runFlow: prompt -> observe -> controller -> policy -> steering matrix -> steered generation
 *   evaluation   runEval (the one runner of CLI and lab) on a RecordStore, runSettings (run.json), runFiles (the run
 *                folder's files), summarizeRun, judges, conditions
 *   datasets     datasetNames, fetchDataset, parseUserFile, pick
 */
export { loadSteerableModel, ModelLoadError } from './model/load.js';
export type { SteerableModel } from './model/steerable.js';
export type { Device, Dtype, GenerateOptions, GenerateResult, LoadOptions } from './model/types.js';
export { fetchFileReader, modelIdentity } from './model/model-content-id.js';
export type { ModelIdentity } from './model/model-id.js';
export { decoderLayer, residualIndex, type DecoderLayer, type ResidualIndex } from './model/layer-index.js';

export { diffInMeansOfModel, embeddingDirectionOfModel } from './method/directions.js';
export { decodeDirectionFile, encodeDirectionFile, type DirectionFile } from './steering/direction-file.js';

export { controllerActivations } from './method/activations.js';
export { selectBackend } from './controller/backend.js';
export { trainController } from './controller/train.js';
export { encodeController, type Controller } from './controller/index.js';
export { controllerFromBytes, controllerId, directionFromBytes, directionId } from './method/artifacts.js';

export {
  compareFlow, methodController, runFlow, runFlows, type CompareFlowOptions, type CompareFlowResult, type FlowItem, type FlowOptions, type FlowOutcome,
  type FlowResult, type MethodController,
} from './method/flow.js';
export type { SteeringPolicy } from './steering/policies.js';

export { promptSeed, runEval, runSettings, type EvalDataset, type RunRecord } from './eval/runner.js';
export { parseConditionList, resolveConditions, type ConditionName } from './method/conditions.js';
export { MemoryRecordStore, type RecordStore } from './eval/records.js';
export { runFiles, summarizeRun } from './eval/summary.js';
export { getJudge, JUDGE_IDS } from './eval/judges.js';

export { datasetNames, fetchDataset, parseUserFile } from './data/index.js';
export { pick } from './data/sample.js';
