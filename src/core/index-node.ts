/**
 * The core library in Node ('steerlab/core'): everything src/core/index.ts exports, plus reading and writing the
 * method's files (direction and controller files checked for a model, the JSONL record store, prompt sets by name
 * or file).
 */
export * from './index.js';
export { loadControllerFor, loadDirectionFor } from './method/artifacts-node.js';
export { writeDirectionFile } from './steering/direction-file-node.js';
export { saveControllerFile } from './controller/node-io.js';
export { openRunStore } from './eval/records-node.js';
export { loadPromptSet } from './method/datasets.js';
