/** Fixture trees of a sub-folder (fuse/, transform/, tune/) name files relative to it. */
import * as fs from 'fs';
import * as path from 'path';
import { FIXTURES } from './fixtures';

type Tree = null | boolean | number | string | Tree[] | { [key: string]: Tree };

export function within(dir: string, tree: unknown): Tree {
  const t = tree as Tree;
  if (t === null || typeof t !== 'object') return t;
  if (Array.isArray(t)) return t.map((x) => within(dir, x));
  if ('__tensor__' in t) {
    const ref = t.__tensor__ as { file: string };
    return { __tensor__: { ...ref, file: path.join(dir, ref.file) } } as unknown as Tree;
  }
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, within(dir, v)]));
}

export function manifestOf<T>(dir: string): T {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, dir, 'manifest.json'), 'utf8')) as T;
}
