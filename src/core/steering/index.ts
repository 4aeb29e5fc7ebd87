/**
 * Steering maths (pure; browser and Node): directions (how a vector is made) and policies (how a prediction and a
 * direction become the steering matrix). Node-only file helpers live in direction-file-node.ts, not re-exported here
 * so the browser bundle never pulls in node:fs.
 */
export * from './safetensors.js';
export * from './vector.js';
export * from './direction.js';
export * from './diff-in-means.js';
export * from './selection.js';
export * from './ablation.js';
export * from './direction-file.js';
export * from './direction-import.js';
export * from './matrix.js';
export * from './cast.js';
export * from './policies.js';
export * from './modes.js';
