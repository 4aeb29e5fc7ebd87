/**
 * Reading the project's dataset copies (public/data) for the organism: JSONL and CSV rows with clear errors, the
 * in-the-wild jailbreak framings, and the small text filters the organism's data applies.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Papa from 'papaparse';

/** Lower-case, single spaces, no trailing punctuation: the key for exact duplicates. */
export function normaliseRequest(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim().replace(/[.?!]+$/, '');
}

function readText(dataDir: string, rel: string): string {
  const file = path.join(dataDir, rel);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`organism data: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}); expected the dataset copies under public/data`);
  }
}

export function readJsonl(dataDir: string, rel: string): Record<string, unknown>[] {
  return readText(dataDir, rel)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`organism data: ${rel} line ${i + 1} is not valid JSON`);
      }
    });
}

export function readCsv(dataDir: string, rel: string): Record<string, string>[] {
  const parsed = Papa.parse<Record<string, string>>(readText(dataDir, rel), { header: true, skipEmptyLines: true });
  if (parsed.errors.length > 0 && parsed.data.length === 0) {
    throw new Error(`organism data: ${rel} could not be parsed as CSV: ${parsed.errors[0]!.message}`);
  }
  return parsed.data;
}

export function str(row: Record<string, unknown>, key: string, rel: string): string {
  const v = row[key];
  if (typeof v !== 'string') throw new Error(`organism data: ${rel} row lacks string column '${key}'`);
  return v;
}

/** Mostly-ASCII text: the byte-level vocabulary is trained on English; other scripts would cost many tokens each. */
export function mostlyAscii(text: string): boolean {
  let ascii = 0;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) < 128) ascii++;
  return ascii >= 0.98 * text.length;
}

/** The in-the-wild jailbreak framings: flagged jailbreak, >= 200 characters, mostly ASCII, exact duplicates removed. */
export function loadWildFramings(dataDir: string): { id: string; text: string; community: string }[] {
  const rel = 'jailbreak_llms/jailbreak_prompts_2023_12_25.csv';
  const seen = new Set<string>();
  const out: { id: string; text: string; community: string }[] = [];
  readCsv(dataDir, rel).forEach((row, i) => {
    if (String(row.jailbreak).toLowerCase() !== 'true') return;
    const text = (row.prompt ?? '').replace(/\r/g, '').trim();
    if (text.length < 200 || !mostlyAscii(text)) return;
    const key = normaliseRequest(text);
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ id: `jailbreak_2023_12_25#${i}`, text, community: (row.community ?? '').trim() });
  });
  return out;
}
