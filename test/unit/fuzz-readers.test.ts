/**
 * Hardening: every reader of a user's file fed seeded, mutated inputs. Each case must end, within a bounded time
 * and without a large allocation, either in the reader's own error (naming what is wrong) or in a result that
 * makes sense; a TypeError, a RangeError from the engine, an error of another kind, a hang or a huge allocation is a
 * crash, i.e. a bug. Readers: safetensors (and the direction, controller and import formats built on it, .npy and
 * JSON imports), GGUF control vectors, config.json and tokenizer.json (through transformers.js, as the loader
 * reads them), CSV / JSONL prompt files (bytes -> UTF-8 -> rows), and eval records (records.jsonl, summaries).
 *
 * Mutations are both byte-level (bit flips, interesting integers over length fields, insertions, deletions,
 * truncation, duplication) and structural for the JSON parts (a value replaced, a key dropped or duplicated), so
 * that cases reach the validation behind the parsers. Seeded: a failure prints the case label to replay it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ControllerFormatError } from '../../src/core/controller/metadata.js';
import { decodeController } from '../../src/core/controller/format.js';
import { parseUserFile } from '../../src/core/data/load.js';
import { DatasetError } from '../../src/core/data/types.js';
import { readRecordLines } from '../../src/core/eval/records-node.js';
import { summarizeRun } from '../../src/core/eval/summary.js';
import { loadCheckedTokenizer, loadModelConfig, ModelLoadError } from '../../src/core/model/model-files.js';
import { buildTokenizerFiles } from '../../src/core/onnx/testmodel/tokenizer.js';
import { decodeDirectionFile } from '../../src/core/steering/direction-file.js';
import { importDirection } from '../../src/core/steering/direction-import.js';
import { decodeGguf, encodeControlVector, GgufError } from '../../src/core/steering/gguf.js';
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from '../../src/core/steering/safetensors.js';
import { decodeUtf8, Utf8Error } from '../../src/core/util/utf8.js';
import { mulberry32 } from '../../src/core/util/prng.js';
import { concatBytes } from '../../src/core/util/bytes.js';

/** A single call may take this long at most (normal calls take well under 50 ms, even on a loaded machine). */
const MAX_CALL_MS = 1500;
/** Growth of ArrayBuffer memory during one call (a reader that trusts a length field shows here). */
const MAX_CALL_BYTES = 64 << 20;

const root = mkdtempSync(join(tmpdir(), 'steerlab-fuzz-readers-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Rng = () => number;
const pick = <T,>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rng, n: number) => Math.floor(r() * n);

const INTERESTING = [0, 1, 7, 8, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0xffffffff, 2 ** 32, 2 ** 40, 2 ** 53 - 1];

const concat = (...parts: Uint8Array[]): Uint8Array => concatBytes(parts);

/** One byte-level mutation. */
function mutateBytes(r: Rng, b: Uint8Array, hot = b.length): Uint8Array {
  const at = (n = b.length) => int(r, Math.max(1, Math.min(n, b.length)));
  const out = Uint8Array.from(b);
  switch (int(r, 8)) {
    case 0: // flip bits
      for (let k = 1 + int(r, 8); k > 0 && out.length; k--) out[at(hot)]! ^= 1 << int(r, 8);
      return out;
    case 1: {
      // an interesting integer over 1, 4 or 8 bytes (length and count fields)
      const v = BigInt(pick(r, INTERESTING));
      const width = pick(r, [1, 4, 8]);
      const p = at(hot);
      for (let i = 0; i < width && p + i < out.length; i++) out[p + i] = Number((v >> BigInt(8 * i)) & 0xffn);
      return out;
    }
    case 2: {
      const p = at();
      return concat(out.subarray(0, p), Uint8Array.from({ length: 1 + int(r, 16) }, () => int(r, 256)), out.subarray(p));
    }
    case 3: {
      const p = at();
      return concat(out.subarray(0, p), out.subarray(Math.min(out.length, p + 1 + int(r, 64))));
    }
    case 4:
      return out.subarray(0, at());
    case 5: {
      const p = at();
      const q = Math.min(out.length, p + 1 + int(r, 128));
      return concat(out.subarray(0, q), out.subarray(p, q), out.subarray(q));
    }
    case 6:
      if (out.length) out[at(hot)] = pick(r, [0x00, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x0a, 0x0d, 0xc3, 0xff]);
      return out;
    default:
      return r() < 0.05 ? new Uint8Array(0) : mutateBytes(r, out, hot);
  }
}

const PALETTE: unknown[] = [null, true, false, 0, -1, 1, 0.5, 1e308, -1e308, 2 ** 53 + 1, 4294967296, '', 'x', 'F32', 'F16', 'I64', '\u0000', '../x', [], {}, [1, 2], [0, 1e9], [-1], { a: 1 }, 'é'.repeat(50), 'a'.repeat(10_000)];

/** One structural mutation of a JSON value: a value replaced, a key dropped or copied, an array entry changed. */
function mutateJson(r: Rng, v: unknown, depth = 0): unknown {
  const swap = () => (r() < 0.8 ? structuredClone(pick(r, PALETTE)) : [structuredClone(v)]);
  if (v === null || typeof v !== 'object' || depth > 12 || r() < 0.15) return swap();
  if (Array.isArray(v)) {
    if (v.length === 0 || r() < 0.2) return r() < 0.5 ? [...v, structuredClone(pick(r, PALETTE))] : v.slice(1);
    const i = int(r, v.length);
    const copy = [...v];
    copy[i] = mutateJson(r, copy[i], depth + 1);
    return copy;
  }
  const obj = { ...(v as Record<string, unknown>) };
  const keys = Object.keys(obj);
  if (keys.length === 0) return { [pick(r, ['a', 'dtype', 'shape', 'data_offsets', '__metadata__'])]: pick(r, PALETTE) };
  const k = pick(r, keys);
  const roll = r();
  if (roll < 0.15) delete obj[k];
  else if (roll < 0.25) obj[`${k}_copy`] = obj[k];
  else obj[k] = mutateJson(r, obj[k], depth + 1);
  return obj;
}

/** safetensors with its header JSON mutated structurally (header length recomputed). */
function mutateSafetensorsHeader(r: Rng, bytes: Uint8Array): Uint8Array {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as unknown;
  let m = header;
  for (let k = 1 + int(r, 3); k > 0; k--) m = mutateJson(r, m);
  const text = new TextEncoder().encode(JSON.stringify(m));
  const out = new Uint8Array(8 + text.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(bytes.subarray(8 + n), 8 + text.length);
  return out;
}

function mutateJsonText(r: Rng, text: string): string {
  let v = JSON.parse(text) as unknown;
  for (let k = 1 + int(r, 3); k > 0; k--) v = mutateJson(r, v);
  return JSON.stringify(v);
}

interface Outcome {
  cases: number;
  ms: number;
  worstMs: number;
  worstBytes: number;
  errors: number;
  crashes: string[];
}

/**
 * Runs `count` mutated cases of one reader. `clean(e)` says whether an error is the reader's own; `sane(result)`
 * checks a result that came back.
 */
async function fuzz(
  name: string,
  count: number,
  seed: number,
  make: (r: Rng, i: number) => Uint8Array | string,
  read: (input: Uint8Array | string) => unknown,
  clean: (e: unknown) => boolean,
  sane: (result: unknown) => string | null = () => null,
): Promise<Outcome> {
  const r = mulberry32(seed);
  const o: Outcome = { cases: 0, ms: 0, worstMs: 0, worstBytes: 0, errors: 0, crashes: [] };
  for (let i = 0; i < count; i++) {
    const input = make(r, i);
    const label = `${name} case ${i} (seed ${seed})`;
    const bytes0 = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    let result: unknown;
    let error: unknown = null;
    try {
      result = await read(input);
    } catch (e) {
      error = e;
    }
    const ms = performance.now() - t0;
    const grew = process.memoryUsage().arrayBuffers - bytes0;
    o.cases++;
    o.ms += ms;
    o.worstMs = Math.max(o.worstMs, ms);
    o.worstBytes = Math.max(o.worstBytes, grew);
    if (ms > MAX_CALL_MS) o.crashes.push(`${label}: took ${ms.toFixed(0)} ms`);
    if (grew > MAX_CALL_BYTES) o.crashes.push(`${label}: ArrayBuffer memory grew by ${(grew / 2 ** 20).toFixed(0)} MiB`);
    if (error !== null) {
      o.errors++;
      const msg = error instanceof Error ? error.message : String(error);
      if (!clean(error) || msg.trim().length < 8) o.crashes.push(`${label}: ${error instanceof Error ? error.name : typeof error}: ${msg.slice(0, 200)}`);
    } else {
      const bad = sane(result);
      if (bad) o.crashes.push(`${label}: returned ${bad}`);
    }
  }
  return o;
}

function report(name: string, o: Outcome): void {
  console.log(
    `fuzz ${name}: ${o.cases} cases in ${(o.ms / 1000).toFixed(2)} s (worst ${o.worstMs.toFixed(0)} ms, worst ArrayBuffer growth ${(o.worstBytes / 2 ** 20).toFixed(1)} MiB), ` +
      `${o.errors} refused, ${o.cases - o.errors} read`,
  );
  expect(o.crashes.slice(0, 10), `${o.crashes.length} crashes of ${name}`).toEqual([]);
}

const bytesOf = (x: Uint8Array | string) => (typeof x === 'string' ? new TextEncoder().encode(x) : x);
const textOf = (x: Uint8Array | string) => (typeof x === 'string' ? x : new TextDecoder().decode(x));
const startsWithSource = (source: string) => (e: unknown) => e instanceof RangeError && e.message.startsWith(`${source}: `);

describe('fuzzing the readers of user files', () => {
  it('safetensors, direction files, controller files', async () => {
    const plain = encodeSafetensors(
      { a: { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }, b: { dtype: 'F32', shape: [4], data: new Float32Array(4) } },
      { note: 'seed', format: 'x' },
    );
    const direction = new Uint8Array(readFileSync('models/organism/direction.safetensors'));
    const controller = new Uint8Array(readFileSync('models/organism/controller.safetensors'));
    const make = (seedBytes: Uint8Array) => (r: Rng) => (r() < 0.5 ? mutateSafetensorsHeader(r, seedBytes) : mutateBytes(r, seedBytes, 512));
    report(
      'safetensors',
      await fuzz('safetensors', 1200, 11, make(plain), (x) => decodeSafetensors(bytesOf(x), { source: 'f.safetensors' }), (e) => e instanceof SafetensorsError, (res) => {
        for (const [k, t] of Object.entries((res as ReturnType<typeof decodeSafetensors>).tensors)) {
          if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) return `tensor ${k} with ${t.data.length} values for shape [${t.shape}]`;
        }
        return null;
      }),
    );
    report(
      'direction file',
      await fuzz('direction file', 600, 12, make(direction), (x) => decodeDirectionFile(bytesOf(x), undefined, 'd.safetensors'), (e) => e instanceof SafetensorsError || startsWithSource('d.safetensors')(e)),
    );
    report(
      'controller file',
      await fuzz('controller file', 500, 13, make(controller), (x) => decodeController(bytesOf(x), { source: 'c.safetensors' }), (e) => e instanceof ControllerFormatError),
    );
  }, 120_000);

  it('GGUF control vectors and direction imports (JSON, .npy, safetensors)', async () => {
    const L = 4;
    const H = 8;
    const matrix = Float32Array.from({ length: L * H }, (_, i) => (i >= H ? Math.sin(i) : 0));
    const gguf = encodeControlVector(matrix, { numLayers: L, hiddenSize: H, modelHint: 'llama' }).bytes;
    report(
      'gguf',
      await fuzz('gguf', 1200, 21, (r) => mutateBytes(r, gguf, 256), (x) => decodeGguf(bytesOf(x)), (e) => e instanceof GgufError),
    );
    const json = JSON.stringify(Array.from({ length: H }, (_, i) => i / 10));
    const header = "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }";
    const pad = 64 - ((10 + header.length + 1) % 64);
    const npyHead = new TextEncoder().encode(`${header}${' '.repeat(pad)}\n`);
    const npy = Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, npyHead.length & 0xff, npyHead.length >> 8, ...npyHead, ...new Uint8Array(Float32Array.from({ length: H }, (_, i) => i + 1).buffer)]);
    const st = encodeSafetensors({ direction: { dtype: 'F32', shape: [L, H], data: Float32Array.from({ length: L * H }, (_, i) => i + 1) } });
    const seeds: [string, Uint8Array][] = [['v.json', new TextEncoder().encode(json)], ['v.npy', npy], ['v.safetensors', st]];
    report(
      'direction import',
      await fuzz(
        'direction import',
        900,
        22,
        (r, i) => {
          const [, b] = seeds[i % 3]!;
          return i % 3 === 0 && r() < 0.5 ? mutateJsonText(r, textOf(b)) : i % 3 === 2 && r() < 0.5 ? mutateSafetensorsHeader(r, b) : mutateBytes(r, b, 128);
        },
        (x) => importDirection(bytesOf(x), 'v.bin', { hiddenSize: H, numLayers: L, modelId: 'm', layer: 1, createdAt: '2026-01-01T00:00:00.000Z' }),
        (e) => e instanceof SafetensorsError || startsWithSource('v.bin')(e),
      ),
    );
  }, 120_000);

  it('CSV and JSONL prompt files, and records.jsonl with its summaries', async () => {
    const csv = 'id,prompt,category\n1,"Hello, ""world""",a\n2,"multi\nline",b\n3,plain,c\n';
    const jsonl = '{"id": "1", "prompt": "Hello"}\n{"id": "2", "prompt": "multi\\nline", "extra": [1, 2]}\n\n{"id": "3", "prompt": "x"}\n';
    report(
      'prompt files',
      await fuzz(
        'prompt files',
        1500,
        31,
        (r, i) => mutateBytes(r, new TextEncoder().encode(i % 2 ? jsonl : csv)),
        (x) => {
          const i = bytesOf(x);
          const isCsv = textOf(i).includes(',') && i[0] !== 0x7b && (i.length % 2 === 0 || textOf(i).startsWith('id'));
          const name = isCsv ? 'p.csv' : 'p.jsonl';
          return parseUserFile(decodeUtf8(i, name), name, { textColumn: 'prompt', label: 'harmful', idColumn: 'id' });
        },
        (e) => e instanceof DatasetError || e instanceof Utf8Error,
        (res) => {
          const p = (res as ReturnType<typeof parseUserFile>).prompts;
          if (new Set(p.map((x) => x.id)).size !== p.length) return 'duplicate ids';
          if (p.some((x) => typeof x.text !== 'string' || x.text.length === 0 || typeof x.id !== 'string')) return 'an empty or non-string prompt';
          return null;
        },
      ),
    );
    const recs = [
      { dataset: 'd', id: '1', condition: 'base', label: 'harmful', refused: true, judge: 'was-keywords', output: 'no' },
      { dataset: 'd', id: '2', condition: 'base', label: 'benign', refused: false, judge: 'was-keywords', s: 0.5, w: [0.1, 0.2] },
      { dataset: 'e', id: '1', condition: 'was', label: 'harmful', refused: null, judge: 'was-keywords' },
      { dataset: 'e', id: '2', condition: 'was', label: 'harmful', refused: true, judge: 'was-keywords', timings: { total_ms: 3 } },
    ];
    const text = `${recs.map((x) => JSON.stringify(x)).join('\n')}\n`;
    report(
      'records',
      await fuzz(
        'records',
        1500,
        32,
        (r) => (r() < 0.5 ? mutateBytes(r, new TextEncoder().encode(text)) : text.split('\n').map((l) => (l && r() < 0.4 ? mutateJsonText(r, l) : l)).join('\n')),
        (x) => summarizeRun(readRecordLines(bytesOf(x), 'records.jsonl').records.map((l) => l.record)),
        (e) => e instanceof Error && (e.message.startsWith('records.jsonl line ') || / mixes judges /.test(e.message)),
      ),
    );
  }, 120_000);

  it('config.json and tokenizer.json, as the model loader reads them', async () => {
    const dir = join(root, 'model');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir);
    const config = readFileSync('models/organism/config.json', 'utf8');
    const cfgFile = join(dir, 'config.json');
    report(
      'config.json',
      await fuzz(
        'config.json',
        250,
        41,
        (r) => (r() < 0.7 ? mutateJsonText(r, config) : mutateBytes(r, new TextEncoder().encode(config))),
        async (x) => {
          writeFileSync(cfgFile, bytesOf(x));
          return loadModelConfig(dir);
        },
        (e) => e instanceof ModelLoadError,
        (res) => {
          const c = res as Awaited<ReturnType<typeof loadModelConfig>>;
          return [c.numLayers, c.hiddenSize, c.vocabSize].every((n) => Number.isSafeInteger(n) && n > 0) ? null : 'sizes that are not positive integers';
        },
      ),
    );
    const vocab = 300;
    const files = buildTokenizerFiles(vocab, 128);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(files['tokenizer_config.json']));
    const tokJson = JSON.stringify(files['tokenizer.json']);
    report(
      'tokenizer.json',
      await fuzz(
        'tokenizer.json',
        150,
        42,
        (r) => (r() < 0.8 ? mutateJsonText(r, tokJson) : mutateBytes(r, new TextEncoder().encode(tokJson), 4096)),
        async (x) => {
          writeFileSync(join(dir, 'tokenizer.json'), bytesOf(x));
          return loadCheckedTokenizer(dir, vocab);
        },
        // A TypeError inside transformers.js must reach the user as a wrong or missing field, not as a bare TypeError.
        (e) => e instanceof ModelLoadError && (!/is not iterable|Cannot read properties/.test(e.message) || /a field is missing or has the wrong type/.test(e.message)),
      ),
    );
  }, 120_000);
});
