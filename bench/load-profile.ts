/**
 * Where a model load spends its time: loadSteerableModel (stage by stage) against a plain transformers.js
 * AutoModelForCausalLM load of the same folder. Every load runs in a fresh process, so the peak RSS (VmHWM) is that
 * load's own and no file is served from a warm in-process state (the OS page cache stays warm; the first repeat of
 * each variant is run and counted like the others, interleaved).
 *
 *   npx tsx bench/load-profile.ts [--repeats 3] [--no-self-check] DIR [DIR...]
 *   e.g. npx tsx bench/load-profile.ts bench/out/smollm2-135m-plain bench/out/qwen2.5-0.5b-plain
 *
 * Prints one JSON line per load and a table of medians (total, per stage, ORT InferenceSession.create, peak RSS).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type Variant = 'steerable' | 'plain';
export interface LoadSample {
  dir: string;
  variant: Variant;
  total_s: number;
  /** Seconds from the load's start to the first event of each stage (steerable only). */
  stages: Record<string, number>;
  /** Seconds spent inside onnxruntime's InferenceSession.create (summed over sessions). */
  ort_create_s: number;
  peak_rss_mb: number;
  rss_before_mb: number;
}

function procStatusMb(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

async function child(dir: string, variant: Variant, selfCheck: boolean): Promise<void> {
  const ort = (await import('onnxruntime-node')) as unknown as { InferenceSession: { create: (...a: unknown[]) => Promise<unknown> } };
  const { env, AutoModelForCausalLM } = await import('@huggingface/transformers');
  const { loadSteerableModel } = await import('../src/core/model/index.js');
  env.allowRemoteModels = false;
  env.useFSCache = false;
  let ortCreate = 0;
  const create = ort.InferenceSession.create.bind(ort.InferenceSession);
  ort.InferenceSession.create = async (...a: unknown[]) => {
    const t = performance.now();
    try {
      return await create(...a);
    } finally {
      ortCreate += performance.now() - t;
    }
  };
  const rssBefore = procStatusMb('VmRSS');
  const stages: Record<string, number> = {};
  const t0 = performance.now();
  const at = () => +((performance.now() - t0) / 1000).toFixed(3);
  let model: { dispose(): Promise<unknown> };
  if (variant === 'steerable') {
    model = await loadSteerableModel(dir, {
      device: 'cpu',
      dtype: 'fp32',
      selfCheck,
      progress: (p) => {
        const key = p.stage === 'download' ? `download ${p.file}` : p.stage;
        if (!(key in stages)) stages[key] = at();
        if (p.stage === 'download' && p.done) stages[`${key} done`] = at();
      },
    });
  } else {
    model = (await AutoModelForCausalLM.from_pretrained(dir, { dtype: 'fp32', device: 'cpu' } as never)) as unknown as typeof model;
  }
  const total = at();
  const sample: LoadSample = {
    dir,
    variant,
    total_s: total,
    stages,
    ort_create_s: +(ortCreate / 1000).toFixed(3),
    peak_rss_mb: procStatusMb('VmHWM'),
    rss_before_mb: rssBefore,
  };
  await model.dispose();
  process.stdout.write(`SAMPLE ${JSON.stringify(sample)}\n`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** Loads each folder `repeats` times per variant, each in a fresh process, interleaved; returns every sample. */
export function measureLoads(dirs: string[], repeats: number, selfCheck: boolean, log: (s: string) => void = () => {}): LoadSample[] {
  const self = fileURLToPath(import.meta.url);
  const samples: LoadSample[] = [];
  for (const dir of dirs) {
    for (let r = 0; r < repeats; r++) {
      const order: Variant[] = r % 2 ? ['plain', 'steerable'] : ['steerable', 'plain'];
      for (const variant of order) {
        const args = ['--import', 'tsx', self, '--child', dir, variant, selfCheck ? 'self-check' : 'no-self-check'];
        const res = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
        const line = res.stdout.split('\n').find((l) => l.startsWith('SAMPLE '));
        if (res.status !== 0 || !line) {
          throw new Error(`load of ${dir} (${variant}) failed with exit ${res.status}:\n${res.stderr.slice(-4000)}`);
        }
        const s = JSON.parse(line.slice(7)) as LoadSample;
        samples.push(s);
        log(JSON.stringify(s));
      }
    }
  }
  return samples;
}

function parent(dirs: string[], repeats: number, selfCheck: boolean): void {
  const samples = measureLoads(dirs, repeats, selfCheck, console.log);
  console.log(`\n| model folder | load | total s (median; all) | ORT create s | peak RSS MB | stage starts (median s) |`);
  console.log(`|---|---|---|---:|---:|---|`);
  for (const dir of dirs) {
    for (const variant of ['plain', 'steerable'] as Variant[]) {
      const ss = samples.filter((s) => s.dir === dir && s.variant === variant);
      const keys = [...new Set(ss.flatMap((s) => Object.keys(s.stages)))];
      const stages = keys.map((k) => `${k} ${median(ss.map((s) => s.stages[k] ?? NaN)).toFixed(2)}`).join('; ');
      console.log(
        `| ${dir} | ${variant} | ${median(ss.map((s) => s.total_s)).toFixed(2)} (${ss.map((s) => s.total_s.toFixed(2)).join(', ')}) | ` +
          `${median(ss.map((s) => s.ort_create_s)).toFixed(2)} | ${median(ss.map((s) => s.peak_rss_mb))} | ${stages || '–'} |`,
      );
    }
  }
}

const argv = process.argv.slice(2);
const direct = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (!direct) {
  // imported by bench/run.ts for measureLoads
} else if (argv[0] === '--child') {
  await child(argv[1]!, argv[2] as Variant, argv[3] === 'self-check');
} else {
  let repeats = 3;
  let selfCheck = true;
  const dirs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--repeats') repeats = Number(argv[++i]);
    else if (argv[i] === '--no-self-check') selfCheck = false;
    else dirs.push(argv[i]!);
  }
  if (!dirs.length || !Number.isInteger(repeats) || repeats < 1) {
    console.error('usage: tsx bench/load-profile.ts [--repeats N] [--no-self-check] MODEL_DIR [MODEL_DIR...]');
    process.exit(2);
  }
  parent(dirs, repeats, selfCheck);
}
