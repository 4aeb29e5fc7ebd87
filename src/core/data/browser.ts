/**
 * Browser side of the loader: fetches the files under public/data (served as static files) and parses them with
 * the same code Node uses. Also accepts a user's File/Blob.
 */
import { parseDataset, parseUserFile, resolveDataset, type UserFileOptions } from './load.js';
import { DatasetError, type LoadResult } from './types.js';

export interface FetchOptions {
  /** URL of the data folder, ending in '/'. In the Vite app: `${import.meta.env.BASE_URL}data/`. Default '/data/'. */
  baseUrl?: string;
  /** Injected for tests; defaults to the global fetch. */
  fetch?: (url: string) => Promise<Response>;
}

export function datasetUrl(name: string, options: FetchOptions = {}): string {
  const base = options.baseUrl ?? '/data/';
  return `${base.endsWith('/') ? base : `${base}/`}${resolveDataset(name).entry.file}`;
}

export async function fetchDataset(name: string, options: FetchOptions = {}): Promise<LoadResult> {
  const url = datasetUrl(name, options);
  const doFetch = options.fetch ?? ((u: string) => globalThis.fetch(u));
  let response: Response;
  try {
    response = await doFetch(url);
  } catch (err) {
    throw new DatasetError(`${name}: cannot fetch ${url} (${(err as Error).message})`);
  }
  if (!response.ok) throw new DatasetError(`${name}: fetching ${url} gave HTTP ${response.status}`);
  // A dev server answers missing files with its index.html: catch that before it is parsed as data.
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('text/html')) throw new DatasetError(`${name}: ${url} returned an HTML page, not the dataset file (is public/data deployed?)`);
  return parseDataset(name, await response.text());
}

/** A user's file picked in the UI (a File is a Blob with a name). */
export async function readUserFile(file: Blob & { name: string }, options: UserFileOptions): Promise<LoadResult> {
  return parseUserFile(await file.text(), file.name, options);
}
