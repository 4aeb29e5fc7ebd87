import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatasetError, parseCsvTable, parseDataset, parseJsonlTable, parseUserFile, readUserFile } from '../../src/core/data/index.js';
import { loadUserFile } from '../../src/core/data/node.js';
import { testDir } from '../helpers/tmp.js';

describe('CSV parsing', () => {
  it('keeps quoted multi-line fields and reports the line where each row starts', () => {
    const csv = 'text,label\n"first\nspans ""three""\nlines",harmful\nsecond,benign\n\n"fourth, with comma",benign\n';
    const t = parseCsvTable(csv);
    expect(t.problems).toEqual([]);
    expect(t.rows.map((r) => [r.line, r.values.text])).toEqual([
      [2, 'first\nspans "three"\nlines'],
      [5, 'second'],
      [7, 'fourth, with comma'],
    ]);
    expect(t.rows.map((r) => r.index)).toEqual([0, 1, 2]);
  });

  it('handles CRLF files and a byte-order mark', () => {
    const t = parseCsvTable('\uFEFFtext,label\r\n"a\r\nb",harmful\r\nc,benign\r\n');
    expect(t.columns).toEqual(['text', 'label']);
    expect(t.rows.map((r) => [r.line, r.values.text])).toEqual([[2, 'a\nb'], [4, 'c']]);
  });

  it('counts rows with the wrong number of fields and an unterminated quote, with line numbers', () => {
    const csv = 'text,label\nok,harmful\ntoo,many,fields\nshort\nfine,benign\n"never closed,benign\nlost,benign\n';
    const t = parseCsvTable(csv);
    expect(t.rows.map((r) => r.values.text)).toEqual(['ok', 'fine']);
    expect(t.problems.map((p) => p.line)).toEqual([3, 4, 6]);
    expect(t.problems[0]!.message).toMatch(/3 fields, expected 2/);
    expect(t.problems[2]!.message).toMatch(/MissingQuotes/);
    expect(t.rowsRead).toBe(5);
  });

  it('an empty file is a clear error', () => {
    expect(() => parseCsvTable('')).toThrow(DatasetError);
    expect(() => parseCsvTable('')).toThrow(/CSV file is empty/);
  });
});

describe('JSONL parsing', () => {
  it('reports unparseable lines and non-object lines with their line numbers', () => {
    const t = parseJsonlTable('{"a":1}\n{broken\n\n[1,2]\n"str"\n{"a":2}\n');
    expect(t.rows.map((r) => [r.line, r.values.a])).toEqual([[1, 1], [6, 2]]);
    expect(t.problems.map((p) => p.line)).toEqual([2, 4, 5]);
    expect(t.problems[0]!.message).toMatch(/unparseable JSON line/);
    expect(t.problems[1]!.message).toMatch(/an array, expected an object/);
    expect(t.rowsRead).toBe(5);
  });
});

describe('named dataset parsing of damaged copies', () => {
  it('toxicchat: bad label values, missing/empty text and broken lines become problems, the rest loads', () => {
    const lines = [
      '{"conv_id": "a", "user_input": "hello", "toxicity": 0, "jailbreaking": 0}',
      '{"conv_id": "b", "user_input": "", "toxicity": 1, "jailbreaking": 0}',
      '{"conv_id": "c", "toxicity": 1, "jailbreaking": 0}',
      '{"conv_id": "d", "user_input": "x", "toxicity": 2, "jailbreaking": 0}',
      '{"conv_id": "e", "user_input": "y", "toxicity": 1, "jailbreaking": 1',
      '{"conv_id": "a", "user_input": "dup", "toxicity": 1, "jailbreaking": 0}',
      '{"conv_id": "f", "user_input": "bad flag", "toxicity": 1, "jailbreaking": 7}',
      '{"conv_id": "g", "user_input": "kill it", "toxicity": 1, "jailbreaking": 1}',
    ];
    const r = parseDataset('toxicchat-test', `${lines.join('\n')}\n`);
    expect(r.prompts.map((p) => [p.id, p.label, p.meta.jailbreaking])).toEqual([
      ['a', 'benign', false],
      ['g', 'harmful', true],
    ]);
    expect(r.problems.map((p) => p.line)).toEqual([2, 3, 4, 5, 6, 7]);
    expect(r.problems[0]!.message).toMatch(/text column 'user_input' is empty/);
    expect(r.problems[1]!.message).toMatch(/text column 'user_input' is missing/);
    expect(r.problems[2]!.message).toMatch(/label column 'toxicity' is 2: expected one of '0', '1'/);
    expect(r.problems[3]!.message).toMatch(/unparseable JSON/);
    expect(r.problems[4]!.message).toMatch(/duplicate id 'a' \(first seen on line 1\)/);
    expect(r.problems[5]!.message).toMatch(/expected 0 or 1/);
    expect(r.rowsRead).toBe(8);
  });

  it('a CSV whose header lacks the text column (e.g. a wrong file) is a clear error', () => {
    expect(() => parseDataset('advbench', 'foo,bar\n1,2\n')).toThrow(/column 'goal' not found; the file has columns: 'foo', 'bar'/);
  });

  it('a file with no usable rows is an error naming the first problems', () => {
    expect(() => parseDataset('harmful-val', '{"instruction": ""}\nnot json\n')).toThrow(/harmful-val: no usable rows \(2 rows read, 2 problems; line 1/);
  });

  it('a view whose filter keeps nothing is an error', () => {
    expect(() => parseDataset('xstest-unsafe', 'id,prompt,type,label,focus,note\n1,hi,homonyms,safe,,\n')).toThrow(/kept no rows/);
  });
});

describe('user files', () => {
  it('CSV with a chosen text column and one label for all rows; other columns become meta', () => {
    const r = parseUserFile('question,topic\nHow do I bake bread?,food\n"Multi\nline",misc\n', 'mine.csv', { textColumn: 'question', label: 'benign' });
    expect(r.name).toBe('mine.csv');
    expect(r.problems).toEqual([]);
    expect(r.prompts).toEqual([
      { id: 'row-0', text: 'How do I bake bread?', label: 'benign', meta: { topic: 'food' } },
      { id: 'row-1', text: 'Multi\nline', label: 'benign', meta: { topic: 'misc' } },
    ]);
  });

  it('CSV with a label column (default map accepts harmful/benign, safe/unsafe, 1/0, any case) and an id column', () => {
    const csv = 'id,text,lab\nq1,a,Harmful\nq2,b,benign\nq3,c,1\nq4,d,maybe\nq5,e,\n,f,harmful\nq1,g,harmful\n';
    const r = parseUserFile(csv, 'x.csv', { textColumn: 'text', label: { column: 'lab' }, idColumn: 'id' });
    expect(r.prompts.map((p) => [p.id, p.label])).toEqual([['q1', 'harmful'], ['q2', 'benign'], ['q3', 'harmful']]);
    expect(r.problems.map((p) => p.line)).toEqual([5, 6, 7, 8]);
    expect(r.problems[0]!.message).toMatch(/label column 'lab' is 'maybe'/);
    expect(r.problems[2]!.message).toMatch(/id column 'id' is ''/);
    expect(r.problems[3]!.message).toMatch(/duplicate id 'q1'/);
  });

  it('a custom label map replaces the default one', () => {
    const r = parseUserFile('t,k\na,toxic\nb,clean\nc,harmful\n', 'x.csv', { textColumn: 't', label: { column: 'k', map: { TOXIC: 'harmful', clean: 'benign' } } });
    expect(r.prompts.map((p) => p.label)).toEqual(['harmful', 'benign']);
    expect(r.problems).toEqual([{ line: 4, message: expect.stringMatching(/'harmful'.*expected one of 'toxic', 'clean'/) }]);
  });

  it('JSONL with a text key and a label key; nested values kept as JSON text, nulls dropped', () => {
    const jsonl = '{"prompt":"p1","y":"harmful","n":3,"flag":true,"extra":{"a":1},"z":null}\n{"prompt":"p2","y":"benign"}\n{"y":"benign"}\n';
    const r = parseUserFile(jsonl, 'data.jsonl', { textColumn: 'prompt', label: { column: 'y' }, name: 'my-set' });
    expect(r.name).toBe('my-set');
    expect(r.prompts[0]).toEqual({ id: 'row-0', text: 'p1', label: 'harmful', meta: { n: 3, flag: true, extra: '{"a":1}' } });
    expect(r.prompts[1]!.label).toBe('benign');
    expect(r.problems).toEqual([{ line: 3, message: expect.stringMatching(/text column 'prompt' is missing/) }]);
  });

  it('bad options and unusable files fail clearly', () => {
    expect(() => parseUserFile('a\nb\n', 'x.txt', { textColumn: 'a', label: 'benign' })).toThrow(/expected a \.csv or \.jsonl/);
    expect(() => parseUserFile('a\nb\n', 'x.csv', { textColumn: 'a', label: 'evil' as never })).toThrow(/label 'evil' is not valid/);
    expect(() => parseUserFile('a\nb\n', 'x.csv', { textColumn: 'text', label: 'benign' })).toThrow(/column 'text' not found/);
    expect(() => parseUserFile('text,text\na,b\n', 'x.csv', { textColumn: 'text', label: 'benign' })).toThrow(/'text' appears more than once/);
    expect(() => parseUserFile('{"a":"x"}\n', 'x.jsonl', { textColumn: 'text', label: 'benign' })).toThrow(/no line has the key 'text'/);
    expect(() => parseUserFile('{bad\n', 'x.jsonl', { textColumn: 'text', label: 'benign' })).toThrow(/no usable rows/);
    expect(() => parseUserFile('a,b\n1,2\n', 'x.csv', { textColumn: 'a', label: { column: 'b', map: { '1': 'bad' as never } } })).toThrow(/sends '1' to 'bad'/);
  });

  it('Node helper reads a file from disk; the browser helper reads a File-like Blob', async () => {
    const dir = testDir('steerlab-data-');
    const file = path.join(dir, 'prompts.tsv.csv');
    writeFileSync(file, 'text\tlabel\nhello\tbenign\n');
    const r = await loadUserFile(file, { textColumn: 'text', label: { column: 'label' }, delimiter: '\t' });
    expect(r.prompts).toEqual([{ id: 'row-0', text: 'hello', label: 'benign', meta: {} }]);
    await expect(loadUserFile(path.join(dir, 'missing.csv'), { textColumn: 'text', label: 'benign' })).rejects.toThrow(/cannot read .*missing\.csv \(ENOENT\)/);
    const blob = Object.assign(new Blob(['{"q":"hi"}\n']), { name: 'b.jsonl' });
    expect((await readUserFile(blob, { textColumn: 'q', label: 'harmful' })).prompts[0]!.label).toBe('harmful');
  });
});
