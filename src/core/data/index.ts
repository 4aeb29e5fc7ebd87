/**
 * Browser-safe public API of the data layer. Node code adds loadDataset/loadUserFile from './node.js'.
 */
export * from './types.js';
export { DATASETS, VIEWS, datasetNames, findDataset, findView } from './catalog.js';
export type { DatasetEntry, DatasetView } from './catalog.js';
export { parseDataset, parseUserFile, resolveDataset } from './load.js';
export type { ResolvedDataset, UserFileOptions } from './load.js';
export { DEFAULT_LABEL_MAP } from './prompt-builder.js';
export type { LabelRule, PromptSpec } from './prompt-builder.js';
export { parseCsvTable, parseJsonlTable, parseTable, formatFromFileName } from './tabular.js';
export type { Table, TableRow, TableFormat } from './tabular.js';
export { sample, split, hash53 } from './sample.js';
export type { Seed, SplitOptions } from './sample.js';
export { fetchDataset, readUserFile, datasetUrl } from './browser.js';
export type { FetchOptions } from './browser.js';
