/**
 * The benchmark's models: random-weight decoders with the real shapes of SmolLM2-135M and Qwen2.5-0.5B, built once
 * under bench/out/ (git-ignored) and reused while their build options match (steerlab_build.json).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SHAPE_PRESETS } from '../src/core/onnx/testmodel/config.js';
import { buildTestModel } from '../src/core/onnx/testmodel/build.js';

export const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));
export const OUT_DIR = join(BENCH_DIR, 'out');
export const SEED = 1234;

export interface BenchModel {
  /** 'smollm2-135m' | 'qwen2.5-0.5b' */
  preset: string;
  topology: BenchTopology;
  dir: string;
  onnxPath: string;
  /** .onnx plus .onnx_data when present */
  fileBytes: number;
  external: boolean;
}

/**
 * fused-q4f16: the fused graph with 4-bit MatMulNBits projections and fp16 activations (the browser/WebGPU form);
 * fused-q4: the same 4-bit codes with fp32 activations and int8 compute (accuracy_level 4), the CPU form. Both are the
 * peer's q4 comparisons.
 */
export type BenchTopology = 'plain' | 'fused' | 'fused-q4' | 'fused-q4f16';

export function modelDir(preset: string, topology: string): string {
  return join(OUT_DIR, `${preset}-${topology}`);
}

function describe(preset: string, topology: BenchTopology): BenchModel | null {
  const dir = modelDir(preset, topology);
  const info = join(dir, 'steerlab_build.json');
  if (!existsSync(info)) return null;
  const b = JSON.parse(readFileSync(info, 'utf8')) as { seed: number; topology: string; onnxFile: string; shape: unknown };
  if (b.seed !== SEED || b.topology !== topology || JSON.stringify(b.shape) !== JSON.stringify(SHAPE_PRESETS[preset])) return null;
  const onnxPath = join(dir, b.onnxFile);
  if (!existsSync(onnxPath)) return null;
  const dataPath = `${onnxPath}_data`;
  const external = existsSync(dataPath);
  const fileBytes = statSync(onnxPath).size + (external ? statSync(dataPath).size : 0);
  return { preset, topology, dir, onnxPath, fileBytes, external };
}

/** The model folder, built first if missing or stale (minutes for the 2 GB one). */
export async function ensureModel(preset: string, topology: BenchTopology, log: (s: string) => void = () => {}): Promise<BenchModel> {
  const have = describe(preset, topology);
  if (have) return have;
  const shape = SHAPE_PRESETS[preset];
  if (!shape) throw new Error(`unknown shape preset ${preset}; expected one of ${Object.keys(SHAPE_PRESETS).join(', ')}`);
  log(`building ${preset} ${topology} under ${modelDir(preset, topology)} ...`);
  const t0 = performance.now();
  await buildTestModel(modelDir(preset, topology), { shape, topology, seed: SEED });
  log(`  built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return describe(preset, topology)!;
}

// `tsx bench/models.ts` builds every benchmark model ahead of a run.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const preset of ['smollm2-135m', 'qwen2.5-0.5b']) {
    for (const topology of ['plain', 'fused'] as const) {
      const m = await ensureModel(preset, topology, console.log);
      console.log(`${preset} ${topology}: ${(m.fileBytes / 1e6).toFixed(0)} MB${m.external ? ' (external data)' : ''}`);
    }
  }
}
