/**
 * The WAS controller (Hegazy et al., "Guiding Giants"): a small MLP that reads the last-prompt-token residuals of the
 * upper third of the layers and predicts a global steering scale s and per-layer weights w. Browser-safe: Node file
 * helpers are in ./node-io.ts and must be imported from there.
 */
export {
  controllerInputLayers,
  firstControllerInputLayer,
  residualIndexOfLayerOutput,
  validateInputLayers,
  concatControllerInput,
} from './layers.js';
export {
  initControllerParams,
  validateParams,
  fitStandardization,
  standardizeRows,
  cloneParams,
  outputSize,
  CONTROLLER_INITS,
  type ControllerShape,
  type ControllerParams,
  type ControllerInit,
  type InputStandardization,
} from './params.js';
export { ControllerNetwork, type ControllerBatchOutput } from './network.js';
export { ControllerForward, layerWeight, type ControllerOutput, type ControllerPredictor } from './forward.js';
export {
  trainController,
  splitControllerDataset,
  evaluateScales,
  classWeights,
  scaleThreshold,
  validateDataset,
  validateLayerTargets,
  layerTargetMse,
  PAPER_DEFAULTS,
  type ControllerDataset,
  type LayerWeightsRecipe,
  type TrainControllerOptions,
  type BatchProgress,
} from './train.js';
export {
  CONTROLLER_FORMAT,
  CONTROLLER_FORMAT_VERSION,
  ControllerFormatError,
  validateMetadata,
  checkExpectation,
  shapeFromMetadata,
  type Controller,
  type ControllerMetadata,
  type ControllerExpectation,
  type ControllerLoss,
  type EpochMetrics,
  type ControllerMetrics,
  type LayerTargetInfo,
  type LayerWeightsRecord,
} from './metadata.js';
export { encodeController, decodeController, type DecodeControllerOptions } from './format.js';
export {
  selectBackend,
  activeBackend,
  lastBackendReport,
  defaultBackendOrder,
  isNodeRuntime,
  type BackendReport,
  type SelectBackendOptions,
} from './backend.js';
export { syntheticActivations, type SyntheticOptions } from './synthetic.js';
export { SeededRandom } from './prng.js';
export { AdamW, clipFactor, type AdamWConfig } from './optimizer.js';
