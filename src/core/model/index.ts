/** The steerable model: public surface of src/core/model. Node-only helpers live in node-io.ts (never imported here). */
export { loadSteerableModel, ModelLoadError, STEERABLE_SUFFIX } from './load.js';
export { SteerableModel } from './steerable.js';
export { checkIdentity, unpatchedLogits } from './identity.js';
export { SelfCheckError, runSelfCheck, probeIds, RELATIVE_TOLERANCE } from './self-check.js';
export { formatChat, type ChatPrompt, type ChatOptions } from './prompt.js';
export { ModelFileNotFoundError } from './fetch-file.js';
export type * from './types.js';
export { modelIdentity, fetchFileReader, memoryFileReader, type ModelFileReader, type ModelSource } from './model-content-id.js';
export { checkSameModel, describeModel, type ModelIdentity, type ModelVariant, type RecordedModel } from './model-id.js';
export { decoderLayer, residualIndex, outputOf, layerBefore, type DecoderLayer, type ResidualIndex } from './layer-index.js';
