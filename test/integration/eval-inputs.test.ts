/**
 * lab eval with user files (issue: two files with the same name in different folders were refused as "given
 * twice"; a newline in a file name broke summary.md).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runEvalCommand } from '../../src/cli/commands/eval.js';
import { datasetNamesFor } from '../../src/core/method/datasets.js';
import { buildTestModel, type BuiltModel } from '../../src/core/onnx/testmodel/build.js';
import { SHAPE_PRESETS } from '../../src/core/onnx/testmodel/config.js';

const root = mkdtempSync(join(tmpdir(), 'steerlab-eval-inputs-'));
let built: BuiltModel;
const rows = (...texts: string[]) => texts.map((t) => JSON.stringify({ prompt: t })).join('\n') + '\n';
const base = { textColumn: 'prompt', label: 'harmful', seed: '0', conditions: 'base', maxNewTokens: '2', judge: 'was-keywords' };

beforeAll(async () => {
  built = await buildTestModel(join(root, 'model'), { shape: SHAPE_PRESETS.tiny!, topology: 'plain', seed: 3 });
  for (const d of ['a', 'b', join('c', 'a')]) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'a', 'prompts.jsonl'), rows('one', 'two'));
  writeFileSync(join(root, 'b', 'prompts.jsonl'), rows('three'));
  writeFileSync(join(root, 'c', 'a', 'prompts.jsonl'), rows('four'));
}, 60_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('dataset files', () => {
  it('two files of the same name in different folders are two datasets, named by the end of their paths', async () => {
    const a = join(root, 'a', 'prompts.jsonl');
    const b = join(root, 'b', 'prompts.jsonl');
    const r = await runEvalCommand({ ...base, model: built.dir, dataset: [a, b], out: join(root, 'run-ab') }, false);
    expect(r.summary.rows.map((x) => [x.dataset, x.n])).toEqual([['a/prompts.jsonl', 2], ['b/prompts.jsonl', 1]]);
    expect(datasetNamesFor([a, join(root, 'c', 'a', 'prompts.jsonl'), 'harmful-val'])).toEqual([`${basename(root)}/a/prompts.jsonl`, 'c/a/prompts.jsonl', 'harmful-val']);
    expect(datasetNamesFor([a])).toEqual(['prompts.jsonl']);
  }, 60_000);

  it('the same file twice (however spelled) is still an error', () => {
    const a = join(root, 'a', 'prompts.jsonl');
    expect(() => datasetNamesFor([a, join(root, 'b', '..', 'a', 'prompts.jsonl')])).toThrow(/is given twice/);
    expect(() => datasetNamesFor(['harmful-val', 'harmful-val'])).toThrow(/dataset 'harmful-val' is given twice/);
  });

  it('a file name holding a newline or a pipe keeps summary.md one row per line', async () => {
    const odd = join(root, 'bad\nname|x.jsonl');
    writeFileSync(odd, rows('five'));
    const r = await runEvalCommand({ ...base, model: built.dir, dataset: [odd], out: join(root, 'run-odd') }, false);
    const lines = readFileSync(r.files.markdown, 'utf8').trimEnd().split('\n');
    // the table runs up to the first blank line (the coherent-refusal rule follows it): header, separator, one row
    const md = lines.slice(0, lines.indexOf(''));
    expect(md).toHaveLength(3);
    expect(md[2]).toMatch(/^\| bad name\\\|x\.jsonl \| base \| refusal \| was-keywords \| 1 \| [01] \| /);
  }, 60_000);
});
