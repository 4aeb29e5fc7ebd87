import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Papa from 'papaparse';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { MemoryRecordStore, recordKey, remaining, summarize, type EvalRecord, type RecordStore } from '../../src/core/eval/records.js';
import { describeOpenReport, openRunStore } from '../../src/core/eval/records-node.js';
import { processStartTime } from '../../src/core/eval/run-lock-node.js';
import { parseRecordsJsonl, recordsJsonl, runFiles, runSummaryCsv, runSummaryJson, runSummaryMarkdown, summarizeRun } from '../../src/core/eval/summary.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');
const made: string[] = [];
const tmp = () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'steerlab-records-'));
  made.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});
const rec = (id: string, condition = 'base', extra: Record<string, unknown> = {}): EvalRecord => ({ dataset: 'advbench', id, condition, refused: true, judge: 'arditi-keywords', ...extra });
const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
const lockFiles = (dir: string) => readdirSync(dir).filter((f) => f.includes('.lock')).sort();
/** A lock file's content as another process on this host would write it. */
const lockOwner = (pid: number) => ({
  pid, start: processStartTime(pid), host: os.hostname(), boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
  token: '00000000000000aa', since: '2026-01-01T00:00:00.000Z', command: 'lab eval (test)',
});

const open: RecordStore[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});
async function openTracked(dir: string) {
  const s = await openRunStore(dir);
  open.push(s);
  return s;
}

describe('record store (Node, JSONL)', () => {
  it('appends whole lines, reads them back on reopen, and refuses duplicates', async () => {
    const dir = tmp();
    const s = await openRunStore(dir);
    expect(s.report).toMatchObject({ records: 0, torn: null, duplicates: [], duplicatesMovedTo: null, staleLocks: [] });
    expect(describeOpenReport(s.report)).toEqual([]);
    await s.append(rec('row-0', 'base', { output: 'multi\nline "quoted" ✓', s: 0.25, w: [0.1, 0.9] }));
    await s.append(rec('row-0', 'was'));
    expect(s.has({ dataset: 'advbench', id: 'row-0', condition: 'was' })).toBe(true);
    expect(s.has({ dataset: 'advbench', id: 'row-1', condition: 'was' })).toBe(false);
    await expect(s.append(rec('row-0'))).rejects.toThrow(/already stored/);
    await expect(s.append({ dataset: 'advbench', id: '', condition: 'x' })).rejects.toThrow(/'id' must be a non-empty string/);
    await s.close();
    expect(lockFiles(dir)).toEqual([]);

    const file = path.join(dir, 'records.jsonl');
    expect(lines(file).length).toBe(2);
    const again = await openTracked(dir);
    expect(again.size).toBe(2);
    expect(again.get({ dataset: 'advbench', id: 'row-0', condition: 'base' })).toMatchObject({ output: 'multi\nline "quoted" ✓', w: [0.1, 0.9] });
    expect(again.records().map((r) => r.condition)).toEqual(['base', 'was']);
  });

  it('a torn last line (killed mid-write) is moved to .torn and cut; resume neither loses nor duplicates', async () => {
    const dir = tmp();
    const s = await openRunStore(dir);
    for (const id of ['a', 'b', 'c']) await s.append(rec(id));
    await s.close();
    const file = path.join(dir, 'records.jsonl');
    const partial = '{"dataset":"advbench","id":"d","condition":"base","refu';
    appendFileSync(file, partial);

    const r = await openTracked(dir);
    expect(r.report.torn).toEqual({ line: 4, bytes: Buffer.byteLength(partial), movedTo: `${file}.torn` });
    expect(readFileSync(`${file}.torn`, 'utf8')).toBe(`${partial}\n`);
    expect(readFileSync(file, 'utf8').endsWith('"judge":"arditi-keywords"}\n')).toBe(true);
    expect(r.records().map((x) => x.id)).toEqual(['a', 'b', 'c']);

    const todo = remaining(r, 'advbench', 'base', ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id })));
    expect(todo.map((x) => x.id)).toEqual(['d', 'e']);
    for (const t of todo) await r.append(rec(t.id));
    const ids = lines(file).map((l) => JSON.parse(l).id);
    expect(ids).toEqual(['a', 'b', 'c', 'd', 'e']);
  });

  it('an invalid final line (even newline-terminated) is treated as torn; a bad line before the end stops the open', async () => {
    const dir = tmp();
    const file = path.join(dir, 'records.jsonl');
    writeFileSync(file, `${JSON.stringify(rec('a'))}\n\u0000\u0000garbage\n`);
    const r = await openTracked(dir);
    expect(r.report.torn?.line).toBe(2);
    expect(r.size).toBe(1);
    await r.close();

    const dir2 = tmp();
    writeFileSync(path.join(dir2, 'records.jsonl'), `${JSON.stringify(rec('a'))}\nnot json\n${JSON.stringify(rec('b'))}\n`);
    await expect(openRunStore(dir2)).rejects.toThrow(/records\.jsonl line 2 is not a valid eval record/);
    expect(lockFiles(dir2)).toEqual([]);

    const dir3 = tmp();
    writeFileSync(path.join(dir3, 'records.jsonl'), `{"dataset":"x","id":"1"}\n${JSON.stringify(rec('b'))}\n`);
    await expect(openRunStore(dir3)).rejects.toThrow(/line 1 .*'condition' must be a non-empty string/);
  });

  it('drops duplicate keys written by something else from the file, keeps them aside, and says how many', async () => {
    const dir = tmp();
    const file = path.join(dir, 'records.jsonl');
    const [a1, b, a2, b2] = [rec('a', 'base', { refused: true }), rec('b'), rec('a', 'base', { refused: false }), rec('b', 'base', { note: 'again' })].map((r) => JSON.stringify(r));
    writeFileSync(file, `${a1}\n${b}\n${a2}\n${b2}\n`);
    const r = await openTracked(dir);
    expect(r.report.duplicates).toEqual([
      { line: 3, key: { dataset: 'advbench', id: 'a', condition: 'base' } },
      { line: 4, key: { dataset: 'advbench', id: 'b', condition: 'base' } },
    ]);
    expect(r.get({ dataset: 'advbench', id: 'a', condition: 'base' })?.refused).toBe(true);
    // The records file holds each key once; nothing is lost: the dropped lines are in records.jsonl.duplicates.
    expect(readFileSync(file, 'utf8')).toBe(`${a1}\n${b}\n`);
    expect(readFileSync(`${file}.duplicates`, 'utf8')).toBe(`${a2}\n${b2}\n`);
    const words = describeOpenReport(r.report);
    expect(words).toHaveLength(1);
    expect(words[0]).toContain(`${file}: dropped 2 duplicate record lines (lines 3, 4)`);
    expect(words[0]).toContain(`${file}.duplicates`);
    await r.append(rec('c'));
    expect(lines(file).map((l) => JSON.parse(l).id)).toEqual(['a', 'b', 'c']);
  });

  it('a torn line is reported in words, with the file it was moved to', async () => {
    const dir = tmp();
    const file = path.join(dir, 'records.jsonl');
    writeFileSync(file, `${JSON.stringify(rec('a'))}\n{"dataset":"adv`);
    const r = await openTracked(dir);
    expect(describeOpenReport(r.report)).toEqual([
      `${file}: the last line (line 2, 15 bytes) was cut off by a killed run; it was moved to ${file}.torn and that record will be redone`,
    ]);
  });

  it('one writer per run directory: a second open fails while the first holds it', async () => {
    const dir = tmp();
    await openTracked(dir);
    await expect(openRunStore(dir)).rejects.toThrow(/already open in this process/);
    // A lock held by another live process (our parent stands in for a concurrent run).
    const other = tmp();
    const lockFile = path.join(other, 'records.jsonl.lock-00000000000000aa');
    writeFileSync(lockFile, JSON.stringify({ ...lockOwner(process.ppid), state: 'held' }));
    const err = await openRunStore(other).then(() => null, (e: Error) => e);
    expect(err?.message).toContain(`run folder ${other} is in use by process ${process.ppid} on ${os.hostname()}`);
    expect(err?.message).toContain(`kill ${process.ppid}`);
    expect(err?.message).toContain(`if that process is not a Steerlab run, delete ${lockFile}`);
    expect(existsSync(lockFile)).toBe(true);
    expect(lockFiles(other)).toEqual(['records.jsonl.lock-00000000000000aa']);
  });

  it('the lock file of an older Steerlab left by a killed run is removed and reported', async () => {
    const dir = tmp();
    const { spawnSync } = await import('node:child_process');
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
    writeFileSync(path.join(dir, 'records.jsonl.lock'), `${dead}\n`);
    const s = await openTracked(dir);
    expect(s.report.staleLocks.map((l) => l.pid)).toEqual([dead]);
    expect(existsSync(path.join(dir, 'records.jsonl.lock'))).toBe(false);
  });

  it('concurrent appends are serialised; a key in flight counts as present', async () => {
    const dir = tmp();
    const s = await openTracked(dir);
    const first = s.append(rec('x'));
    expect(s.has({ dataset: 'advbench', id: 'x', condition: 'base' })).toBe(true);
    await expect(s.append(rec('x'))).rejects.toThrow(/already stored/);
    await Promise.all([first, ...Array.from({ length: 20 }, (_, i) => s.append(rec(`p${i}`)))]);
    expect(lines(path.join(dir, 'records.jsonl')).length).toBe(21);
    expect(s.size).toBe(21);
  });

  it('survives a real SIGKILL mid-run: every acknowledged record is kept, the stale lock is cleared, resume completes', async () => {
    const dir = tmp();
    const script = path.join(tmp(), 'writer.mts');
    const recordsUrl = pathToFileURL(path.join(repoRoot, 'src/core/eval/records-node.ts')).href;
    writeFileSync(
      script,
      `import { openRunStore } from ${JSON.stringify(recordsUrl)};
const store = await openRunStore(process.argv[2]);
for (let i = 0; i < 100000; i++) {
  await store.append({ dataset: 'd', id: 'p' + i, condition: 'c', refused: i % 3 === 0, judge: 'was-keywords', output: 'x'.repeat(500) });
  process.stdout.write(i + '\\n');
}
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script, dir], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let acked = -1;
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        const nums = d.toString().trim().split('\n').map(Number);
        acked = Math.max(acked, ...nums);
        if (acked >= 30) {
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.on('exit', () => reject(new Error(`writer exited early: ${stderr}`)));
    });
    expect(await exited).toBe('SIGKILL');
    expect(lockFiles(dir)).toHaveLength(1);

    const s = await openTracked(dir);
    expect(s.report.staleLocks.map((l) => l.pid)).toEqual([child.pid]);
    expect(describeOpenReport(s.report)[0]).toMatch(new RegExp(`^took over the run folder from process ${child.pid} on .*, which no longer runs$`));
    for (let i = 0; i <= acked; i++) expect(s.has({ dataset: 'd', id: `p${i}`, condition: 'c' })).toBe(true);
    // The writer may get well past the acknowledged count before the kill lands: the run is "the first `before`
    // records plus 30 more", and the store must hold exactly p0..p(before-1) after the kill.
    const before = s.size;
    expect(before).toBeGreaterThan(acked);
    for (let i = 0; i < before; i++) expect(s.has({ dataset: 'd', id: `p${i}`, condition: 'c' })).toBe(true);
    const total = before + 30;
    const todo = remaining(s, 'd', 'c', Array.from({ length: total }, (_, i) => ({ id: `p${i}` })));
    expect(todo.length).toBe(30);
    for (const t of todo) await s.append({ dataset: 'd', id: t.id, condition: 'c', refused: false, judge: 'was-keywords' });
    const ids = lines(path.join(dir, 'records.jsonl')).map((l) => JSON.parse(l).id as string);
    expect(ids.length).toBe(total);
    expect(new Set(ids).size).toBe(total);
  }, 30_000);
});

describe('memory store', () => {
  it('implements the same contract', async () => {
    const m = new MemoryRecordStore([rec('a')]);
    expect(m.has({ dataset: 'advbench', id: 'a', condition: 'base' })).toBe(true);
    await m.append(rec('b', 'base', { score: NaN }));
    expect(m.get({ dataset: 'advbench', id: 'b', condition: 'base' })?.score).toBeNull(); // as a JSON file would store it
    await expect(m.append(rec('a'))).rejects.toThrow(/already stored/);
    await expect(m.append({ dataset: 'x', id: '1', condition: 'c', big: 1n } as EvalRecord)).rejects.toThrow(/not JSON-serialisable/);
    await m.close();
    await expect(m.append(rec('c'))).rejects.toThrow(/closed/);
    expect(recordKey({ dataset: 'a|b', id: 'c', condition: 'd' })).not.toBe(recordKey({ dataset: 'a', id: 'b|c', condition: 'd' }));
  });
});

describe('summaries', () => {
  const records: EvalRecord[] = [
    ...Array.from({ length: 263 }, (_, i) => rec(`r${i}`, 'was', { refused: i < 81, judge: 'was-keywords' })),
    ...Array.from({ length: 10 }, (_, i) => rec(`r${i}`, 'base', { refused: false, judge: 'was-keywords' })),
    rec('r10', 'base', { refused: undefined, error: 'generation failed' }),
    { dataset: 'xstest-safe', id: '1', condition: 'base', refused: true, judge: 'was-keywords' },
  ];

  it('groups by (dataset, condition) with n, refusals, rate and Wilson bounds; unjudged records are counted apart', () => {
    const rows = summarize(records);
    expect(rows.map((r) => [r.dataset, r.condition])).toEqual([['advbench', 'base'], ['advbench', 'was'], ['xstest-safe', 'base']]);
    expect(rows[0]).toMatchObject({ n: 10, refusals: 0, refusal_rate: 0, ci_low: 0, unjudged: 1, judge: 'was-keywords' });
    expect(rows[0]!.ci_high).toBeCloseTo(0.2775328, 6);
    expect(rows[1]).toMatchObject({ n: 263, refusals: 81 });
    expect(rows[1]!.ci_low).toBeCloseTo(0.2552885, 6);
    expect(rows[1]!.ci_high).toBeCloseTo(0.3662096, 6);
    expect(rows[2]).toMatchObject({ n: 1, refusals: 1, refusal_rate: 1, ci_high: 1 });
  });

  it('refuses to mix judges within a group', () => {
    expect(() => summarize([rec('a', 'c', { judge: 'was-keywords' }), rec('b', 'c', { judge: 'arditi-keywords' })])).toThrow(/mixes judges \(was-keywords, arditi-keywords\)/);
  });

  it('formats JSON (NaN -> null), CSV (papaparse, formula-safe) and Markdown', () => {
    const summary = summarizeRun([...records, rec('z', '=cmd|evil', { refused: undefined })]);
    const json = JSON.parse(runSummaryJson(summary));
    expect(json.interval).toBe('wilson');
    expect(json.rows.find((r: { condition: string }) => r.condition === '=cmd|evil')).toMatchObject({ n: 0, refusal_rate: null, ci_low: null });

    const csv = Papa.parse<Record<string, string>>(runSummaryCsv(summary), { header: true, skipEmptyLines: true }).data;
    expect(Object.keys(csv[0]!)).toEqual([
      'dataset', 'condition', 'label', 'judge', 'n', 'refusals', 'refusal_rate', 'ci_low', 'ci_high', 'unjudged',
      'coherent_n', 'coherent_refusals', 'coherent_rate', 'coherent_ci_low', 'coherent_ci_high', 'mean_reply_nll', 'changed_n', 'changed_from_base', 'mean_first_token_kl', 'steering',
    ]);
    const was = csv.find((r) => r.condition === 'was')!;
    expect([was.n, was.refusals, Number(was.ci_low).toFixed(4)]).toEqual(['263', '81', '0.2553']);
    expect(csv.find((r) => r.unjudged === '1' && r.n === '0')!.condition).toBe("'=cmd|evil");

    const md = runSummaryMarkdown(summary).split('\n');
    expect(md[0]).toMatch(/^\| dataset \| condition \| measures \| judge \| n \| refusals \| rate \(%\) \| Wilson 95 % CI \(%\) \| unjudged \| coherent rate \(%\) \(Wilson 95 % CI\) \| mean reply_nll \|/);
    // records without coherence fields (older runs) leave the coherent columns blank, never 0
    expect(md).toContain('| advbench | was | refusal (mixed labels) | was-keywords | 263 | 81 | 30.8 | 25.5 – 36.6 | 0 | – | – | – | – |  |');
    expect(md).toContain('| advbench | =cmd\\|evil | refusal (mixed labels) |  | 0 | 0 | – | – | 1 | – | – | – | – |  |');
  });

  it('the files of a run folder: records.jsonl round-trips, summaries come from the records alone', () => {
    const files = runFiles({ format: 'steerlab-eval-run', seed: 1 }, records);
    expect(Object.keys(files).sort()).toEqual(['records.jsonl', 'run.json', 'summary.csv', 'summary.json', 'summary.md']);
    expect(parseRecordsJsonl(files['records.jsonl'])).toEqual(records.map((r) => JSON.parse(JSON.stringify(r))));
    expect(recordsJsonl(parseRecordsJsonl(files['records.jsonl']))).toBe(files['records.jsonl']);
    expect(JSON.parse(files['summary.json']).rows).toHaveLength(3);
    expect(JSON.parse(files['run.json'])).toEqual({ format: 'steerlab-eval-run', seed: 1 });
    expect(() => parseRecordsJsonl('{"dataset":"d","id":"a","condition":"base"}\nnot json\n', 'x.jsonl')).toThrow(/x\.jsonl line 2 is not an eval record/);
  });
});
