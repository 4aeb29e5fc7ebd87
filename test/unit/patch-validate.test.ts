/**
 * `lab patch` never writes over its input and never writes a graph onnxruntime would refuse (issue: `lab patch X X`
 * replaced the only unpatched graph with exit 0; graphs with a cycle or duplicate value names were written as
 * "patched" with exit 0). Each bad case must fail before anything is written. Positive control: onnxruntime itself
 * refuses each mutated graph, and loads the valid one.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, NodeProtoSchema, type ModelProto } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patchDecoderFile } from '../../src/core/onnx/patcher-node.js';
import { graphProblems } from '../../src/core/onnx/validate.js';
import { buildTestModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';
import { testDir } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let valid: Uint8Array;
const onAll: (() => void)[] = [];
afterAll(() => onAll.forEach((f) => f()));

function lab(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
}

function mutate(edit: (m: ModelProto) => void): Uint8Array {
  const m = fromBinary(ModelProtoSchema, valid);
  edit(m);
  return toBinary(ModelProtoSchema, m);
}

const BAD: Record<string, () => Uint8Array> = {
  // X -> B -> A -> X: a node whose input is computed from its own output.
  cycle: () =>
    mutate((m) => {
      const nodes = m.graph!.node;
      const x = nodes.find((n) => n.opType === 'Mul')!;
      nodes.push(create(NodeProtoSchema, { opType: 'Identity', name: 'loop_b', input: [x.output[0]!], output: ['loop_b_out'] }));
      nodes.push(create(NodeProtoSchema, { opType: 'Add', name: 'loop_a', input: [x.input[0]!, 'loop_b_out'], output: ['loop_a_out'] }));
      x.input[0] = 'loop_a_out';
    }),
  duplicate: () =>
    mutate((m) => {
      const nodes = m.graph!.node;
      const victim = nodes.find((n) => n.opType === 'Mul')!.output[0]!;
      nodes.push(create(NodeProtoSchema, { opType: 'Identity', name: 'dup', input: ['input_ids'], output: [victim] }));
    }),
  dangling: () =>
    mutate((m) => {
      m.graph!.node.push(create(NodeProtoSchema, { opType: 'Identity', name: 'ghost_reader', input: ['no_such_value'], output: ['ghost_out'] }));
    }),
};

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'steerlab-validate-model-'));
  onAll.push(() => rmSync(dir, { recursive: true, force: true }));
  const b = await buildTestModel(join(dir, 'm'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 1 });
  valid = readFileSync(join(b.dir, b.onnxFile));
}, 60_000);

describe('graph validation', () => {
  it('a valid graph has no problems, and onnxruntime loads it', async () => {
    expect(graphProblems(valid)).toEqual([]);
    const s = await ort.InferenceSession.create(valid);
    await s.release();
  });

  for (const [name, make] of Object.entries(BAD)) {
    it(`${name}: onnxruntime refuses it; lab patch fails naming the problem and writes nothing`, async () => {
      const bytes = make();
      await expect(ort.InferenceSession.create(bytes)).rejects.toThrow();
      const dir = testDir('steerlab-validate-');
      const input = join(dir, 'in.onnx');
      const out = join(dir, 'out.onnx');
      writeFileSync(input, bytes);
      await expect(patchDecoderFile(input, out)).rejects.toThrow(/is not a valid ONNX graph, onnxruntime would refuse it/);
      expect(existsSync(out)).toBe(false);
      const problem = { cycle: /form a cycle/, duplicate: /is produced twice/, dangling: /reads "no_such_value", which no node, graph input or initializer defines/ }[name]!;
      expect(graphProblems(bytes).join('; ')).toMatch(problem);
    });
  }
});

describe('lab patch X X', () => {
  it('refuses to write over its input, however the path is spelled, and leaves it as it was', async () => {
    const dir = testDir('steerlab-validate-');
    mkdirSync(join(dir, 'sub'));
    const input = join(dir, 'model.onnx');
    writeFileSync(input, valid);
    symlinkSync(input, join(dir, 'link.onnx'));
    for (const out of [input, join(dir, 'sub', '..', 'model.onnx'), join(dir, 'link.onnx')]) {
      await expect(patchDecoderFile(input, out)).rejects.toThrow(/is the same file as input .*model\.onnx: the command would overwrite its own input; write to another path/);
      expect(readFileSync(input).equals(Buffer.from(valid))).toBe(true);
    }
    // The command itself: exit 1, one line on stderr, the input untouched; a copy elsewhere is fine.
    const r = lab('patch', input, input);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^lab: patch .*: BAD_OPTIONS: output .* is the same file as input/);
    expect(readFileSync(input).equals(Buffer.from(valid))).toBe(true);
    copyFileSync(input, join(dir, 'copy.onnx'));
    await patchDecoderFile(join(dir, 'copy.onnx'), join(dir, 'patched.onnx'));
    expect(graphProblems(readFileSync(join(dir, 'patched.onnx')))).toEqual([]);
  }, 120_000);
});
