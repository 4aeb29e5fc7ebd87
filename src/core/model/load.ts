/**
 * loadSteerableModel: hub id or folder -> a steerable, self-checked model inside transformers.js.
 *
 *   config.json (transformers.js)  -> expected layer count and hidden size
 *   onnx/{name}{dtype suffix}.onnx + external data (fetch-file.ts: transformers.js's cache -> local -> hub order)
 *   -> patchDecoder (steering input, residual_stream output; external data: in Node read by onnxruntime from its
 *      folder on disk when it lies there, else fetched and renamed to the new file name)
 *   -> served to transformers.js from memory under model_file_name '{name}_steerable' (patched-cache.ts), so
 *      from_pretrained builds its session, KV-cache handling and generation machinery on the patched graph
 *   -> instance patch (steering-patch.ts) -> self-check (self-check.ts).
 */
import { AutoModelForCausalLM } from '@huggingface/transformers';
import { patchDecoder, type PatchReport } from '../onnx/patcher.js';
import { validateGraph } from '../onnx/validate.js';
import { IS_NODE, loadNodeIo } from './base-cache.js';
import { externalDataLocations } from './external-data.js';
import { fetchModelFile, locateModelFile, ModelFileNotFoundError } from './fetch-file.js';
import { buildResourcePaths, DTYPE_SUFFIX, externalDataChunkNames } from './hub-paths.js';
import { modelIdentity } from './model-content-id.js';
import type { ModelIdentity } from './model-id.js';
import { modelSourceOf } from './model-source.js';
import { loadCheckedTokenizer, loadModelConfig, ModelLoadError } from './model-files.js';
import { installSteerlabCache } from './patched-cache.js';
import type { TjsTokenizer } from './prompt.js';
import { describeFailure, probeIds, runSelfCheck, SelfCheckError } from './self-check.js';
import { intraOpThreadsFor } from './session-threads.js';
import { SteerableModel } from './steerable.js';
import type { TjsModel } from './steering-patch.js';
import type { OrtSessionLike } from './decode.js';
import type { Device, Dtype, LoadOptions, LoadProgress } from './types.js';

const DEVICES: readonly Device[] = ['cpu', 'wasm', 'webgpu'];
const DTYPES: readonly Dtype[] = ['fp32', 'fp16', 'q8', 'q4', 'q4f16'];
/** Graph names transformers.js decoders ship under, tried in this order when none is given. */
const MODEL_FILE_NAMES = ['model', 'decoder_model_merged'];
const SUBFOLDER = 'onnx';
/**
 * Probe length of the load-time self-check: enough positions to see the row land at the first, a middle and the last
 * one; each more costs a position of the vocabulary projection in both runs (about 60 ms on a Qwen2.5-0.5B shape).
 */
const SELF_CHECK_POSITIONS = 3;
/** Suffix of the patched graph's model_file_name: never the name of a real file. */
export const STEERABLE_SUFFIX = '_steerable';

export { ModelLoadError };

type TjsProgressEvent = { status: string; file?: string; loaded?: number; total?: number };

/** transformers.js progress events (config, tokenizer, generation config) in Steerlab's shape. */
function tjsProgress(progress: LoadOptions['progress']) {
  if (!progress) return undefined;
  const last = new Map<string, { loaded: number; total: number | null }>();
  return (e: TjsProgressEvent) => {
    if (!e.file || e.file.includes(STEERABLE_SUFFIX)) return; // patched bytes come from memory
    if (e.status === 'progress') {
      const p = { loaded: e.loaded ?? 0, total: e.total ?? null };
      last.set(e.file, p);
      progress({ stage: 'download', file: e.file, ...p, done: false, fromCache: false });
    } else if (e.status === 'done') {
      const p = last.get(e.file) ?? { loaded: 0, total: null };
      progress({ stage: 'download', file: e.file, ...p, done: true, fromCache: false });
    }
  };
}

function byteProgress(progress: LoadOptions['progress'], file: string) {
  if (!progress) return undefined;
  return (loaded: number, total: number | null, fromCache: boolean) =>
    progress({ stage: 'download', file, loaded, total, done: total !== null && loaded >= total, fromCache });
}

function configDtype(cfg: Record<string, unknown>, fileName: string): Dtype | undefined {
  const d = (cfg['transformers.js_config'] as { dtype?: unknown } | undefined)?.dtype;
  const v = typeof d === 'string' ? d : d && typeof d === 'object' ? (d as Record<string, unknown>)[fileName] : undefined;
  return typeof v === 'string' && (DTYPES as readonly string[]).includes(v) ? (v as Dtype) : undefined;
}

/** Node, onnxruntime-node: model files on local disk can be read by onnxruntime itself (from a folder). */
const ORT_READS_FILES = () => IS_NODE && !(Symbol.for('onnxruntime') in globalThis);
const NODE_GRAPH = './node-graph.js';

interface OriginalGraph {
  name: string;
  file: string;
  bytes: Uint8Array;
  /**
   * Node, graph on local disk: its path. Then `bytes` is only its skeleton (onnx/skeleton.ts: no weight payloads)
   * and the patch references the weights in place, for onnxruntime to read from the file as a plain load does.
   */
  path: string | null;
}

async function fetchOriginalGraph(id: string, names: string[], suffix: string, progress: LoadOptions['progress']): Promise<OriginalGraph> {
  const tried: string[] = [];
  for (const name of names) {
    const file = `${SUBFOLDER}/${name}${suffix}.onnx`;
    try {
      const path = ORT_READS_FILES() ? await locateModelFile(id, file) : null;
      if (path !== null) {
        const { readGraphSkeleton } = (await import(/* @vite-ignore */ NODE_GRAPH)) as typeof import('./node-graph.js');
        const { bytes, size } = readGraphSkeleton(path);
        // locateModelFile looks in the cache first, then in a local model folder
        const fromCache = path !== buildResourcePaths(id, file).localPath;
        progress?.({ stage: 'download', file, loaded: size, total: size, done: true, fromCache });
        return { name, file, bytes, path };
      }
      return { name, file, bytes: await fetchModelFile(id, file, { progress: byteProgress(progress, file) }), path: null };
    } catch (e) {
      if (!(e instanceof ModelFileNotFoundError)) throw e;
      tried.push(`${file} (${e.message})`);
    }
  }
  throw new ModelLoadError('MODEL_FILE_NOT_FOUND', `"${id}" has no ONNX decoder for this dtype; tried: ${tried.join('; ')}`);
}

/**
 * Node only: the folder holding every external-data file of the graph on local disk (where fetchModelFile would
 * read them), or null when any of them is not on disk, they are spread over folders, or in a browser.
 */
async function externalDataFolder(id: string, locations: string[], progress: LoadOptions['progress']): Promise<string | null> {
  // transformers.js runs onnxruntime-node in Node unless the runtime supplies its own ORT (globalThis[ORT symbol]);
  // only onnxruntime-node reads external data from a folder.
  if (!ORT_READS_FILES() || locations.length === 0) return null;
  const found: { file: string; path: string }[] = [];
  let folder: string | null = null;
  for (const loc of locations) {
    // ORT joins the folder and the location; anything but a plain relative name is left to the in-memory path.
    if (loc.startsWith('/') || loc.includes('\\') || loc.split('/').includes('..')) return null;
    const file = `${SUBFOLDER}/${loc}`;
    const p = await locateModelFile(id, file);
    if (p === null || !p.endsWith(loc)) return null;
    const dir = p.slice(0, p.length - loc.length);
    if (folder !== null && dir !== folder) return null;
    folder = dir;
    found.push({ file, path: p });
  }
  if (progress) {
    const { localFileSize } = await loadNodeIo();
    for (const { file, path } of found) {
      const size = localFileSize(path) ?? 0;
      progress({ stage: 'download', file, loaded: size, total: size, done: true, fromCache: false });
    }
  }
  return folder === '' ? '.' : folder;
}

/**
 * Node, graph on local disk: makes the lean session on demand (decode.ts: passes that read no residual): the same
 * graph patched without residual_stream, weights by reference, created with the options transformers.js used
 * (onnxruntime-node, cpu, the main session's thread count) through the session's own class. It holds a second copy
 * of the weights in memory.
 */
function leanSessionFactory(model: TjsModel, graphPath: string, byReference: string, folder: string, threads: number | null): () => Promise<OrtSessionLike> {
  return async () => {
    const { readGraphSkeleton } = (await import(/* @vite-ignore */ NODE_GRAPH)) as typeof import('./node-graph.js');
    // Read again from disk: the same checks as at load (graph structure, external data inside the model folder).
    const skeleton = readGraphSkeleton(graphPath).bytes;
    validateGraph(skeleton, graphPath);
    externalDataLocations(skeleton, graphPath);
    const { bytes } = patchDecoder(skeleton, { weightsByReference: byReference, captureResiduals: false, logitsFrom: true });
    const session = model.sessions['model'] as unknown as { constructor: { create(b: Uint8Array, o: object): Promise<OrtSessionLike> } };
    return session.constructor.create(bytes, {
      executionProviders: ['cpu'],
      ...(threads !== null ? { intraOpNumThreads: threads } : {}),
      logSeverityLevel: 3,
      extra: { session: { model_external_initializers_file_folder_path: folder } },
    });
  };
}

export async function loadSteerableModel(modelArg: string, opts: LoadOptions = {}): Promise<SteerableModel> {
  if (typeof modelArg !== 'string' || modelArg.trim() === '') throw new ModelLoadError('BAD_OPTIONS', 'loadSteerableModel: expected a hub id ("org/name") or a model folder path');
  // Node: an existing folder, relative or not, is read from disk (transformers.js would take "a/b" for a hub id).
  const idOrPath = IS_NODE ? ((await loadNodeIo()).absoluteFolder(modelArg) ?? modelArg) : modelArg;
  const device: Device = opts.device ?? (IS_NODE ? 'cpu' : 'wasm');
  if (!DEVICES.includes(device)) throw new ModelLoadError('BAD_OPTIONS', `device must be one of ${DEVICES.join(', ')}, got ${String(opts.device)}`);
  if (IS_NODE && device === 'wasm') throw new ModelLoadError('BAD_OPTIONS', "device 'wasm' is onnxruntime-web's, for browsers; in Node use 'cpu'");
  if (opts.dtype !== undefined && !DTYPES.includes(opts.dtype)) throw new ModelLoadError('BAD_OPTIONS', `dtype must be one of ${DTYPES.join(', ')}, got ${String(opts.dtype)}`);
  if (opts.modelFileName !== undefined && !/^[\w.-]+$/.test(opts.modelFileName)) {
    throw new ModelLoadError('BAD_OPTIONS', `modelFileName must be a bare file name without folder or .onnx (e.g. 'model'), got ${JSON.stringify(opts.modelFileName)}`);
  }
  const progress = opts.progress;
  installSteerlabCache();
  const progress_callback = tjsProgress(progress);

  // config.json and the tokenizer are read and checked by model-files.ts.
  const { config, numLayers, hiddenSize, vocabSize } = await loadModelConfig(idOrPath, progress_callback);

  const names = opts.modelFileName ? [opts.modelFileName] : MODEL_FILE_NAMES;
  const dtype: Dtype = opts.dtype ?? configDtype(config, names[0]!) ?? (device === 'wasm' ? 'q8' : 'fp32');
  const suffix = DTYPE_SUFFIX[dtype]!;
  let original: OriginalGraph | null = await fetchOriginalGraph(idOrPath, names, suffix, progress);
  const originalName = original.name;

  const steerName = `${original.name}${STEERABLE_SUFFIX}`;
  const steerFile = `${steerName}${suffix}.onnx`;
  let locations: string[];
  try {
    locations = externalDataLocations(original.bytes, original.file);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'PATCH_FAILED';
    throw new ModelLoadError(code, `cannot make ${original.file} of "${idOrPath}" steerable: ${(e as Error).message}`);
  }
  // External data, Node: when every data file lies on local disk in one folder, onnxruntime reads it there itself
  // (session option model_external_initializers_file_folder_path), as a plain transformers.js load would: no copy
  // of GBs of weights in JS memory, and the locations in the graph stay as they are.
  let dataFolder = await externalDataFolder(idOrPath, locations, progress);
  // By reference (graph on local disk): onnxruntime reads the weights from the graph file itself, so its folder is
  // the data folder, and any external data must lie there too; otherwise the graph is read whole after all.
  const graphBase = original.path === null ? null : original.path.split(/[\\/]/).pop()!;
  const graphDir = original.path === null || graphBase === null ? null : original.path.slice(0, original.path.length - graphBase.length);
  const byReference = graphDir !== null && (locations.length === 0 || dataFolder === graphDir) ? graphBase : null;
  if (byReference !== null) dataFolder = graphDir === '' ? '.' : graphDir;
  else if (original.path !== null) original = { ...original, bytes: await fetchModelFile(idOrPath, original.file), path: null };
  // Otherwise (browser, or Node with data only in a cache's memory or on the hub): fetch each file; the patched graph
  // names them after its own file, which is what transformers.js asks for and hands onnxruntime as externalData.
  const chunkNames = dataFolder === null ? externalDataChunkNames(steerFile, locations.length) : [];
  const renameExternalData = Object.fromEntries(chunkNames.map((name, i) => [locations[i]!, name]));
  const dataFiles: Uint8Array[] = [];
  if (dataFolder === null) {
    for (const loc of locations) {
      const file = `${SUBFOLDER}/${loc}`;
      dataFiles.push(await fetchModelFile(idOrPath, file, { progress: byteProgress(progress, file) }));
    }
  }

  progress?.({ stage: 'patch', file: original.file });
  let patchedBytes: Uint8Array | null;
  let report: PatchReport;
  try {
    validateGraph(original.bytes, original.file);
    ({ bytes: patchedBytes, report } = patchDecoder(original.bytes, {
      expectedNumLayers: numLayers,
      expectedHiddenSize: hiddenSize,
      renameExternalData,
      // prefills whose logits nobody reads skip the head (decode.ts feeds logits_from; other passes get 0)
      logitsFrom: true,
      ...(byReference !== null ? { weightsByReference: byReference } : {}),
    }));
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'PATCH_FAILED';
    throw new ModelLoadError(code, `cannot make ${original.file} of "${idOrPath}" steerable: ${(e as Error).message}`);
  }
  // The original graph (as large as the model when its weights are inline) is not needed past this point.
  const originalFile = original.file;
  const originalPath = original.path;
  original = null;

  progress?.({ stage: 'session', file: `${SUBFOLDER}/${steerFile}` });
  // Node's CPU sessions of a tiny model run one intra-op thread (session-threads.ts); the lean session likewise.
  const threads = IS_NODE && device === 'cpu' ? intraOpThreadsFor({ numLayers, hiddenSize, vocabSize, intermediateSize: config.intermediate_size as number | undefined }) : null;
  const sessionOptions =
    dataFolder !== null || threads !== null
      ? {
          ...(threads !== null ? { intraOpNumThreads: threads } : {}),
          ...(dataFolder !== null ? { extra: { session: { model_external_initializers_file_folder_path: dataFolder } } } : {}),
        }
      : null;
  const cache = installSteerlabCache();
  const release = [
    cache.register(idOrPath, `${SUBFOLDER}/${steerFile}`, patchedBytes),
    ...dataFiles.map((bytes, i) => cache.register(idOrPath, `${SUBFOLDER}/${chunkNames[i]}`, bytes)),
  ];
  dataFiles.length = 0;
  let model: TjsModel;
  try {
    model = (await AutoModelForCausalLM.from_pretrained(idOrPath, {
      config,
      dtype,
      device,
      model_file_name: steerName,
      use_external_data_format: chunkNames.length,
      ...(sessionOptions ? { session_options: sessionOptions } : {}),
    } as never)) as unknown as TjsModel;
  } catch (e) {
    throw new ModelLoadError('SESSION_FAILED', `cannot create an inference session for the patched ${originalFile} of "${idOrPath}" (${device}, ${dtype}): ${(e as Error).message}`);
  } finally {
    for (const r of release) r();
    patchedBytes = null; // the session holds its own copy
  }

  let tokenizer: TjsTokenizer;
  try {
    tokenizer = await loadCheckedTokenizer(idOrPath, vocabSize, progress_callback);
  } catch (e) {
    await model.dispose();
    throw e;
  }

  const leanSession = byReference !== null && originalPath !== null ? leanSessionFactory(model, originalPath, byReference, dataFolder!, threads) : undefined;
  let identity: ModelIdentity;
  try {
    // The one model identity (model-id.ts): hub id, or a local folder's content hash; recorded in every artefact.
    identity = await modelIdentity(await modelSourceOf(idOrPath), { dtype, modelFileName: originalName });
  } catch (e) {
    await model.dispose();
    throw new ModelLoadError('IDENTITY_FAILED', `cannot name the model "${idOrPath}": ${(e as Error).message}`);
  }
  const sm = new SteerableModel({ identity, source: idOrPath, model, tokenizer, report, numLayers, hiddenSize, vocabSize, device, dtype, modelFileName: originalName, intraOpThreads: threads, ...(leanSession ? { leanSession } : {}) });
  if (opts.selfCheck !== false) {
    progress?.({ stage: 'self-check' });
    const result = await runSelfCheck({ numLayers, hiddenSize, streamDtype: report.stream_dtype, forward: (ids, o) => sm.forward(ids, o) }, probeIds(vocabSize, SELF_CHECK_POSITIONS));
    if (!result.ok) {
      await sm.dispose();
      throw new SelfCheckError(`"${idOrPath}" (${originalFile}): ${describeFailure(result)}`, result);
    }
    sm.selfCheck = result;
  }
  progress?.({ stage: 'ready' } as LoadProgress);
  return sm;
}
