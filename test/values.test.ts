// TorchScript values <-> JS values, both ways, against outputs computed by PyTorch.
import { describe, expect, it } from 'vitest';
import { load, ScriptModule, Tensor } from '../lib';
import { expectMatches, inputsOf, model } from './helpers/fixtures';

let m: ScriptModule;

async function ivalues(): Promise<ScriptModule> {
  m ??= await load(model('ivalues').path);
  return m;
}

describe('value mapping', () => {
  it('every ivalues case returns what PyTorch returned', async () => {
    const mod = await ivalues();
    const f = model('ivalues');
    for (const [i, c] of f.cases.entries()) {
      const out = await mod.run(c.method, ...inputsOf(c));
      expectMatches(out, c.output, c.atol ?? 1e-6, `case ${i} ${c.method}`);
    }
  });

  it('maps the JS types it promises', async () => {
    const mod = await ivalues();
    const t = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const out = (await mod.forward(t, 2, 7, true, 'héllo', null, [t, t], [3, 0.25], { a: t })) as unknown[];
    expect(out[1]).toBe(8); // int -> number
    expect(out[2]).toBe(false); // bool
    expect(out[3]).toBe('héllo!'); // str, UTF-8 both ways
    expect(out[4]).toBe(true); // None in -> `o is None`
    expect(out[5]).toBe(2);
    expect(Array.isArray(out[10])).toBe(true); // List[int]
    expect(Object.getPrototypeOf(out[9])).toBe(Object.prototype); // Dict[str, Tensor] -> plain object
    expect(Array.from((out[0] as Tensor).toTypedArray() as Float32Array)).toEqual([2, 4, 6, 8]);
  });

  it('a dict key named __proto__ stays a key, both ways', async () => {
    const mod = await ivalues();
    const t = Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const d = Object.fromEntries([['__proto__', t], ['b', t]]);
    const out = (await mod.forward(t, 2, 7, true, 's', null, [t], [3, 0.25], d)) as unknown[];
    const doubled = out[9] as Record<string, Tensor>;
    expect(Object.keys(doubled).sort()).toEqual(['__proto__', 'b']);
    expect(Object.getPrototypeOf(doubled)).toBe(Object.prototype);
    expect(Array.from(doubled['__proto__'].toTypedArray() as Float32Array)).toEqual([2, 4, 6, 8]);
  });

  it('Dict[int, str] comes back as a Map, big ints as BigInt, None as null', async () => {
    const mod = await ivalues();
    const d = (await mod.run('int_keys', 3)) as Map<number, string>;
    expect(d).toBeInstanceOf(Map);
    expect([...d.entries()]).toEqual([[0, '0'], [1, '1'], [2, '2']]);
    expect(await mod.run('big')).toBe(1n << 60n);
    expect(await mod.run('nothing', Tensor.from(new Float32Array(1)))).toBeNull();
  });

  it('numbers follow the schema: whole JS numbers become floats for float args, bigints become ints', async () => {
    const mod = await ivalues();
    expect(await mod.run('floats', [1, 2])).toBe(3);
    expect(await mod.run('ints', [1n, 2, 3n])).toBe(6);
  });

  it('a value of the wrong type rejects with ERR_INVALID_ARG naming the argument', async () => {
    const mod = await ivalues();
    await expect(mod.run('ints', [1.5])).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG', message: expect.stringMatching(/Expected int for ints\(\) argument 'xs'\[0\] but received number/),
    });
    await expect(mod.run('int_keys', 'three')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(mod.run('int_keys')).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG', message: expect.stringMatching(/argument 'n'/),
    });
    await expect(mod.run('int_keys', 1, 2)).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG', message: expect.stringMatching(/at most 1 inputs/),
    });
  });

  it('JS values with no TorchScript counterpart throw TypeError synchronously', async () => {
    const mod = await ivalues();
    expect(() => mod.run('ints', [() => 1])).toThrow(TypeError);
    expect(() => mod.run('nothing', new Float32Array(2))).toThrow(/Tensor\.from/);
    expect(() => mod.run('nothing', new Date())).toThrow(TypeError);
    const cyclic: unknown[] = [];
    cyclic.push(cyclic);
    expect(() => mod.run('ints', cyclic)).toThrow(/acyclic/);
    expect(() => mod.run(42 as never)).toThrow(TypeError);
  });
});
